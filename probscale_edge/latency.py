"""Latency model: per-unit latencies measured on the target, for selection under ``--max-latency-ms``.

A pruned encoder's batch-1 latency at a fixed sequence length is close to linear in what it keeps:

    ms = base + layer_ms * layers + head_ms * (heads kept, all layers) + neuron_ms * (FFN neurons kept)

``base`` is the embedding, the task head and the runtime's own work (tokenizing, post-processing);
``layer_ms`` what a layer costs whatever its width (norms, residuals, kernel launches). The
coefficients are fitted (non-negative least squares) to the int8 bundles of a handful of uniformly
pruned copies of the model, each timed with the runtime's own benchmark, on this machine or on a
device over SSH (``probscale-edge latency-table --ssh``). The table keeps every measured point with
its prediction, so the fit's error is visible. Emulated (qemu) timings are refused: they are not
ARM latencies.
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from probscale_edge.errors import ProbscaleError
from probscale_edge.specs import LatencyTable

__all__ = ["LatencyTable", "measure_table", "check_table", "spec_bundle", "time_bundles"]

TABLE_FORMAT = LatencyTable.VERSION
NOISY_FIT = 0.15  # a fit this far from a measured point means a noisy measurement


def design_points(layers: int, heads: int, ffn: int) -> list[tuple[int, int, int]]:
    """Uniform shapes (layers, heads per layer, neurons per layer) that separate the four coefficients."""
    pts = [(layers, heads, ffn), (layers, max(1, heads // 2), ffn), (layers, heads, max(16, ffn // 4)),
           (layers, 1, 16), (max(1, layers // 2), heads, ffn), (1, heads, ffn),
           (max(1, layers // 2), max(1, heads // 4), max(16, ffn // 2)), (1, 1, 16),
           (max(1, layers // 3), max(1, heads // 6), max(16, ffn // 8))]  # the narrow end, where small budgets land
    out = []
    for p in pts:
        if p not in out:
            out.append(p)
    return out


def fit(points) -> dict:
    """Non-negative least squares of ms on [1, layers, total heads, total neurons], in relative terms (each
    point weighted by 1/ms), so a 2 ms shape is fitted as closely as a 30 ms one."""
    from scipy.optimize import nnls

    X = np.array([[1.0, p["layers"], p["layers"] * p["heads"], p["layers"] * p["ffn"]] for p in points])
    y = np.array([p["p50_ms"] for p in points])
    scale = X.max(0)
    scale[scale == 0] = 1
    w = 1.0 / np.maximum(y, 1e-9)
    coef, _ = nnls((X / scale) * w[:, None], y * w)
    coef = coef / scale
    pred = X @ coef
    return {"base_ms": float(coef[0]), "layer_ms": float(coef[1]), "head_ms": float(coef[2]),
            "neuron_ms": float(coef[3]), "predicted": [float(v) for v in pred],
            "max_relative_error": float(np.max(np.abs(pred - y) / np.maximum(y, 1e-9)))}


def _point_bundle(folder: Path, onnx_path: Path, tokenizer, names, seq: int, precision: str, target: str) -> Path:
    """A minimal bundle (model, tokenizer, manifest with checksums) that the runtime's benchmark runs."""
    from probscale_edge.runtime.bundle import write_manifest

    folder.mkdir(parents=True)
    shutil.copyfile(onnx_path, folder / "model.onnx")
    tok_dir = folder.parent / f".{folder.name}-tok"
    tokenizer.save_pretrained(str(tok_dir))
    shutil.copyfile(tok_dir / "tokenizer.json", folder / "tokenizer.json")
    shutil.rmtree(tok_dir, ignore_errors=True)
    (folder / "labels.json").write_text(json.dumps(["0", "1"]))
    write_manifest(folder, {"created_by": "probscale-edge latency-table", "target": target, "labels": ["0", "1"],
                            "model": {"file": "model.onnx", "format": "onnx", "precision": precision,
                                      "inputs": list(names), "outputs": ["logits"]},
                            "tokenizer": {"file": "tokenizer.json", "max_length": seq,
                                          "pad_id": int(tokenizer.pad_token_id or 0)}})
    return folder


def spec_bundle(model, spec, tokenizer, folder: Path, seq: int, precision: str, target: str,
                embedding_rank: int | None = None) -> Path:
    """``model`` cut to ``spec``, exported to ONNX (int8 with the target's preset, or fp32) as a minimal bundle
    in ``folder``: what the runtime will time. The weights do not matter for latency. ``embedding_rank``:
    factorize the word embedding as the build will (its projection is an extra matmul per token; a trimmed
    vocabulary only shrinks a table lookup, so it is left out)."""
    from probscale_edge.converters.onnx_export import ExportConfig, export_onnx
    from probscale_edge.converters.quantize import PRESETS, quantize_dynamic_int8
    from probscale_edge.prune import apply_spec

    folder.mkdir(parents=True)
    m = apply_spec(model, spec).eval()
    if embedding_rank:
        from probscale_edge.embedding import factorize_embeddings

        factorize_embeddings(m, embedding_rank)
    path = folder / "fp32.onnx"
    names = export_onnx(m, tokenizer, path, ExportConfig(), max_length=seq)["inputs"]
    if precision == "int8":
        quantize_dynamic_int8(path, folder / "int8.onnx", PRESETS[target])
        path = folder / "int8.onnx"
    return _point_bundle(folder / "bundle", path, tokenizer, names, seq, precision, target)


def measure_table(model, tokenizer, target: str = "x86_64", seq: int = 128, threads: int = 1, runs: int = 50,
                  precision: str = "int8", ssh: str | None = None, profile_kwargs: dict | None = None,
                  model_name: str = "", log=None, progress=None, passes: int = 3) -> LatencyTable:
    """Time the int8 (or fp32) bundles of uniformly pruned copies of ``model`` and fit the latency model.

    ``ssh``: ``user@host`` to time them on that device (through :func:`probscale_edge.devices.run_profile`);
    default: this machine, with the same benchmark code."""
    from probscale_edge.converters.quantize import check_target
    from probscale_edge.prune import SubnetworkSpec

    log = log or (lambda *_: None)
    check_target(target)
    if precision not in ("int8", "fp32"):
        raise ProbscaleError(f"unknown precision {precision!r}", "use int8 or fp32")
    a = model.adapter
    shape = a.layer_shape(model.encoder, a.layers(model.encoder)[0])
    L, H, F = len(a.layers(model.encoder)), shape["heads"], shape["ffn"]
    pts = design_points(L, H, F)
    if not a.supports_head_pruning:  # heads stay whole: only layers and neurons vary
        pts = list(dict.fromkeys((nl, H, nf) for nl, _, nf in pts))
    bench_kw = {"warmup_runs": 10, "num_runs": max(1, runs // passes), "threads": threads, "sequence_length": seq,
                "batch_size": 1}
    device = {}
    with tempfile.TemporaryDirectory(prefix="probscale-latency-") as tmp:
        tmp = Path(tmp)
        bundles = []
        for i, (nl, nh, nf) in enumerate(pts):
            heads = {str(li): list(range(nh)) for li in range(nl)} if (nh < H and a.supports_head_pruning) else {}
            ffn = {str(li): list(range(nf)) for li in range(nl)} if nf < F else {}
            bundles.append(spec_bundle(model, SubnetworkSpec(list(range(nl)), heads, ffn), tokenizer, tmp / f"point{i}",
                                       seq, precision, target))
            if progress:
                progress(1)
        if ssh:  # each pass times every shape once more, so a busy moment on the device hits one pass, not one shape
            from probscale_edge.devices import run_profile

            p50 = [[] for _ in pts]
            sess = [[] for _ in pts]
            for _ in range(passes):
                for i, b in enumerate(bundles):
                    res = run_profile(b, ssh=ssh, bench_kwargs=bench_kw, log=None, **(profile_kwargs or {}))
                    if res.get("latency_is_emulated"):
                        raise ProbscaleError("the device ran the runtime under emulation: its timings are not ARM "
                                             "latencies", "measure on the real device, or on this machine without --ssh")
                    device = res.get("device", {})
                    p50[i].append(float(res["latency"]["p50_ms"]))
                    sess[i].append(float(res["session_latency"]["p50_ms"]))
            p50 = [float(np.median(v)) for v in p50]
            sess = [float(np.median(v)) for v in sess]
        else:  # in blocks, pass after pass: machine noise hits every shape alike
            p50, sess = time_bundles(bundles, seq, threads, runs, passes=max(passes, 5))
            device = {"transport": "local", "machine": platform.machine(), "processor": cpu_name()}
    measured = []
    for (nl, nh, nf), ms, ss in zip(pts, p50, sess):
        measured.append({"layers": nl, "heads": nh, "ffn": nf, "p50_ms": ms, "session_p50_ms": ss})
        log(f"  {nl} layers x {nh} heads x {nf} neurons: p50 {ms:.2f} ms")
    f = fit(measured)
    for p, pr in zip(measured, f["predicted"]):
        p["predicted_ms"] = pr
    table = LatencyTable(seq=seq, threads=threads, precision=precision, target=target, base_ms=f["base_ms"],
                        layer_ms=f["layer_ms"], head_ms=f["head_ms"], neuron_ms=f["neuron_ms"],
                        full={"layers": L, "heads": H, "ffn": F}, points=measured,
                        max_relative_error=f["max_relative_error"], device=device, model=model_name)
    if table.max_relative_error > NOISY_FIT:
        log(f"  warning: the linear fit misses a measured shape by {table.max_relative_error:.0%}; the machine was "
            "probably busy. Measure again with nothing else running (the table keeps every point).")
    return table


def time_bundles(bundles, seq: int, threads: int, runs: int, passes: int = 5, per_pass: bool = False):
    """p50 end-to-end and session ms of every bundle (a folder, or a ``Predictor``) at batch 1, timed in blocks:
    each pass runs every bundle for runs/passes consecutive predictions (its weights warm in cache, as in an app
    that runs one model), and the p50 is over all passes, so a busy moment on the machine hits one block of every bundle, not
    one bundle. ``per_pass``: also return each bundle's end-to-end p50 in every pass (the spread says how
    noisy the machine was)."""
    from probscale_edge.runtime.predictor import Predictor

    preds = []
    for b in bundles:  # a timing bundle of our own (never signed), or a predictor made by the caller
        p = b if isinstance(b, Predictor) else Predictor(b, threads=threads, public_key=False)
        p.fixed_length = seq
        preds.append(p)
    sentence = "the film is long and the cast is good"
    n = max(1, len(preds[0].tokenizer.encode(sentence).ids) - 2)
    text = " ".join([sentence] * (1 + seq // n))  # just over seq tokens, cut to seq: as `bench` builds it
    e2e = [[] for _ in bundles]
    sess = [[] for _ in bundles]
    per = max(1, runs // max(1, passes))
    for _ in range(max(1, passes)):
        for i, p in enumerate(preds):
            for _ in range(5):  # warm this model's weights back into cache
                p.predict([text])
            for _ in range(per):
                tm = {}
                t = time.perf_counter()
                p.predict([text], timings=tm)
                e2e[i].append((time.perf_counter() - t) * 1000)
                sess[i].append(tm["session_s"] * 1000)
    med = [float(np.median(v)) for v in e2e], [float(np.median(v)) for v in sess]
    if not per_pass:
        return med
    return (*med, [[float(np.median(v[k * per:(k + 1) * per])) for k in range(max(1, passes))] for v in e2e])


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def check_table(table: LatencyTable, model, max_length: int, log=None) -> None:
    """The table must describe this model's shape; a different sequence length is a warning."""
    a = model.adapter
    shape = a.layer_shape(model.encoder, a.layers(model.encoder)[0])
    full = {"layers": len(a.layers(model.encoder)), "heads": shape["heads"], "ffn": shape["ffn"]}
    if table.full != full:
        raise ProbscaleError(f"the latency table was measured for a model shaped {table.full}, not {full}",
                             "measure a table for this model: probscale-edge latency-table --model ...")
    if table.seq != max_length and log:
        log(f"  note: the latency table was measured at sequence length {table.seq}, the bundle's is {max_length}")
