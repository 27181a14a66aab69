"""PyTorch classifier -> TFLite (LiteRT), optional int8 through ai-edge-quantizer, parity against PyTorch.

Conversion uses ``litert-torch`` (no TensorFlow); int8 uses ``ai-edge-quantizer``. Both pull jax and
pin ``typing-extensions<4.13`` (through xdsl), so they live in their own virtual environment
(``scripts/install-tflite.sh`` -> ``.venv-tflite``); the runtime side only needs ``ai-edge-litert``.

The graph is exported at **batch 1 and a fixed sequence length** (``seq_len``, default 128): that is
what the runtime's LiteRT backend feeds (``runtime/predictor.py`` pads to the bundle's
``fixed_sequence_length`` and runs one row at a time). A dynamic sequence axis does not convert with
litert-torch 0.10.0 (lowering fails with ``TypeError: '<=' not supported between 'int' and 'Node'``).

Inputs are named ``input_ids``, ``attention_mask`` (and ``token_type_ids`` where the family uses them),
int32, shape ``[1, seq_len]``; the one output is ``logits`` (float32, ``[1, num_labels]``).

CLI::

    python -m probscale_edge.converters.tflite MODEL_FOLDER OUT.tflite \\
        --quantize dynamic_wi8_afp32 --calibration-texts FILE --json report.json
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from probscale_edge.errors import ProbscaleError

RECIPES = ("dynamic_wi8_afp32", "static_wi8_ai8")
SIGNATURE = "serving_default"
PARITY_TOLERANCE = 1e-4  # fp32 max |delta logit| vs PyTorch
INT8_MIN_AGREEMENT = 0.98  # int8 argmax agreement with PyTorch below this is reported as poor
DEFAULT_SAMPLES = [
    "probscale edge export sample",
    "a second, longer sample sentence used to check the converted graph against pytorch",
    "short",
    "the film was neither as good as its trailer nor as bad as its reviews suggested",
]
INSTALL_HINT = "run scripts/install-tflite.sh and use .venv-tflite/bin/python"


def _versions() -> dict:
    from importlib import metadata

    out = {}
    for p in ("litert-torch", "ai-edge-quantizer", "ai-edge-litert", "litert-converter", "torch", "transformers"):
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


# ----------------------------------------------------------------------------- encoding + inference

def encode_fixed(tokenizer, texts, seq_len: int, names) -> list[dict]:
    """One ``{name: int32 [1, seq_len]}`` feed per text (padded / truncated to ``seq_len``)."""
    enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=seq_len, return_tensors="np")
    feeds = []
    for i in range(len(texts)):
        feeds.append({n: (enc[n][i:i + 1] if n in enc else np.zeros((1, seq_len), np.int64)).astype(np.int32)
                      for n in names})
    return feeds


class TFLiteRunner:
    """Raw LiteRT interpreter over a batch-1, fixed-length classifier graph."""

    def __init__(self, path, threads: int | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as e:
            raise ProbscaleError("ai-edge-litert is not installed", INSTALL_HINT) from e
        self.interp = Interpreter(model_path=str(path), num_threads=threads)
        self.interp.allocate_tensors()
        self.inputs = {}
        for d in self.interp.get_input_details():
            name = d["name"].split(":")[0]
            if name.startswith(SIGNATURE + "_"):
                name = name[len(SIGNATURE) + 1:]
            self.inputs[name] = d
        self.out = self.interp.get_output_details()[0]
        self.output_dtype = np.dtype(self.out["dtype"]).name
        shapes = {tuple(d["shape"]) for d in self.inputs.values()}
        self.seq_len = int(next(iter(shapes))[1]) if len(shapes) == 1 else None

    def run_one(self, feed: dict) -> np.ndarray:
        for name, d in self.inputs.items():
            self.interp.set_tensor(d["index"], np.asarray(feed[name]).astype(d["dtype"]))
        self.interp.invoke()
        out = self.interp.get_tensor(self.out["index"])
        scale, zero = self.out["quantization"]
        if scale:  # full-integer graphs (static_wi8_ai8) return int8 logits: dequantize
            return (out.astype(np.float32) - zero) * np.float32(scale)
        return out.astype(np.float32)

    def logits(self, tokenizer, texts) -> np.ndarray:
        feeds = encode_fixed(tokenizer, texts, self.seq_len, list(self.inputs))
        rows = [self.run_one(f)[0] for f in feeds]
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0), np.float32)

    def latency_ms(self, tokenizer, text: str, runs: int = 200, warmup: int = 20) -> dict:
        feed = encode_fixed(tokenizer, [text], self.seq_len, list(self.inputs))[0]
        for _ in range(warmup):
            self.run_one(feed)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            self.run_one(feed)
            times.append((time.perf_counter() - t0) * 1e3)
        t = np.asarray(times)
        return {"p50_ms": round(float(np.percentile(t, 50)), 3), "p90_ms": round(float(np.percentile(t, 90)), 3),
                "mean_ms": round(float(t.mean()), 3), "runs": runs}


def torch_logits(model, tokenizer, texts, seq_len: int) -> np.ndarray:
    """PyTorch reference: batches padded to their longest text (as predict_logits does)."""
    from probscale_edge.modeling import predict_logits

    return predict_logits(model, tokenizer, list(texts), None, 32, seq_len)


def compare(ref: np.ndarray, got: np.ndarray) -> dict:
    d = np.abs(ref - got)

    def softmax(x):
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    dp = np.abs(softmax(ref) - softmax(got)) if d.size else d
    return {"max_abs": float(d.max()) if d.size else 0.0, "mean_abs": float(d.mean()) if d.size else 0.0,
            "argmax_agreement": float((ref.argmax(-1) == got.argmax(-1)).mean()) if len(ref) else float("nan"),
            "max_abs_prob": float(dp.max()) if dp.size else 0.0, "examples": int(len(ref))}


# ----------------------------------------------------------------------------- conversion

def _convert_fp32(model, tokenizer, out_path: Path, seq_len: int) -> tuple[list, float]:
    import torch

    try:
        import litert_torch
    except ImportError as e:
        raise ProbscaleError("litert-torch is not installed in this environment", INSTALL_HINT) from e

    from probscale_edge.converters.onnx_export import eager_attention, positional

    names = list(model.adapter.input_names())
    sample = tokenizer([DEFAULT_SAMPLES[1]], padding="max_length", truncation=True, max_length=seq_len,
                       return_tensors="pt")
    kwargs = {n: sample[n] if n in sample else torch.zeros_like(sample["input_ids"]) for n in names}
    t0 = time.time()
    tmp = out_path.with_name(out_path.name + ".part")
    try:
        with torch.no_grad(), eager_attention(model):
            edge = litert_torch.convert(positional(model, as_dict=True), sample_kwargs=kwargs)
        edge.export(str(tmp))
        os.replace(tmp, out_path)
    except ProbscaleError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ProbscaleError(f"TFLite conversion failed ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})",
                             "report the model family; the ONNX export is the supported path") from e
    finally:
        if tmp.exists():
            tmp.unlink()
    return names, time.time() - t0


def quantize_tflite(float_path, out_path, recipe_name: str, calibration_feeds=None) -> dict:
    """ai-edge-quantizer recipe ``recipe_name`` over a float .tflite; static recipes need calibration feeds."""
    if recipe_name not in RECIPES:
        raise ProbscaleError(f"unknown quantization recipe {recipe_name!r}", f"use one of {', '.join(RECIPES)}")
    try:
        from ai_edge_quantizer import quantizer, recipe
    except ImportError as e:
        raise ProbscaleError("ai-edge-quantizer is not installed in this environment", INSTALL_HINT) from e
    t0 = time.time()
    qt = quantizer.Quantizer(str(float_path))
    qt.load_quantization_recipe(getattr(recipe, recipe_name)())
    calib = None
    info = {"recipe": recipe_name, "calibration_examples": 0}
    if qt.need_calibration:
        if not calibration_feeds:
            raise ProbscaleError(f"recipe {recipe_name} needs calibration texts", "pass --calibration-texts FILE")
        calib = qt.calibrate({SIGNATURE: list(calibration_feeds)}, num_threads=1)
        info["calibration_examples"] = len(calibration_feeds)
    res = qt.quantize(calib, enable_progress_report=False)
    out_path = Path(out_path)
    if out_path.exists():
        out_path.unlink()
    res.export_model(str(out_path))
    os.chmod(out_path, 0o644)  # the quantizer writes through mmap with mode 0o755
    info["quantize_seconds"] = round(time.time() - t0, 2)
    return info


def _check_recipe(quantize: str | None, calibration_texts) -> None:
    if quantize is not None and quantize not in RECIPES:
        raise ProbscaleError(f"unknown quantization recipe {quantize!r}", f"use one of {', '.join(RECIPES)}")
    if quantize == "static_wi8_ai8" and not calibration_texts:
        raise ProbscaleError("static_wi8_ai8 (full-integer) quantization needs calibration texts",
                             "pass --calibration-texts FILE (one text per line), or use dynamic_wi8_afp32")


def _float_path(out_path: Path, quantize: str | None, fp32_path) -> tuple[Path, str | None]:
    """Where the float model goes: ``out_path`` (fp32 only), ``fp32_path``, or a temporary folder (returned
    second, for the caller to remove)."""
    if quantize is None:
        return out_path, None
    if fp32_path:
        float_path = Path(fp32_path)
        float_path.parent.mkdir(parents=True, exist_ok=True)
        return float_path, None
    tmpdir = tempfile.mkdtemp(prefix="probscale-tflite-")
    return Path(tmpdir) / "model_fp32.tflite", tmpdir


@dataclass
class _Float:
    """The float model's conversion: its report so far, its runner, and the parity texts' logits."""

    report: dict
    runner: TFLiteRunner
    texts: list
    torch: np.ndarray
    fp32: np.ndarray


def _export_float(model, tokenizer, out_path: Path, float_path: Path, seq_len: int, quantize: str | None, texts,
                  parity_tolerance: float, threads, log, logits_out) -> _Float:
    """Convert to ``float_path`` and check it against PyTorch on ``texts`` (the report's ``fp32`` entry)."""
    names, secs = _convert_fp32(model, tokenizer, float_path, seq_len)
    runner = TFLiteRunner(float_path, threads)
    report = {
        "path": out_path.name, "format": "tflite", "converter": "litert-torch",
        "precision": "fp32" if quantize is None else "int8", "recipe": quantize,
        "inputs": names, "input_dtype": "int32", "outputs": ["logits"], "batch": 1,
        "fixed_sequence_length": seq_len, "dynamic_sequence_length": False,
        "export_seconds": round(secs, 2), "tool_versions": _versions(),
    }
    ref = torch_logits(model, tokenizer, texts, seq_len)
    fp_lg = runner.logits(tokenizer, texts)
    if logits_out is not None:
        logits_out.update(torch=ref, fp32=fp_lg)
    fp = compare(ref, fp_lg)
    fp32 = {"bytes": float_path.stat().st_size, "parity_max_abs": fp["max_abs"], "parity_mean_abs": fp["mean_abs"],
            "argmax_agreement": fp["argmax_agreement"], "parity_examples": fp["examples"],
            "parity_tolerance": parity_tolerance, "parity_pass": bool(fp["max_abs"] <= parity_tolerance)}
    report["fp32"] = fp32
    log(f"[{'PASS' if fp32['parity_pass'] else 'FAIL'}] TFLite fp32 vs PyTorch: max |Δlogit| = {fp['max_abs']:.2e} "
        f"(tolerance {parity_tolerance:.0e}, {fp['examples']} examples, seq {seq_len})")
    return _Float(report, runner, texts, ref, fp_lg)


def _int8_entry(q: dict, out_path: Path, fp32: dict, q8: dict, vs_fp32: dict, qrun: TFLiteRunner,
                quantize: str) -> dict:
    """The report's ``int8`` entry: the quantizer's info, size, error against PyTorch and the float model, quality."""
    int8 = dict(q, bytes=out_path.stat().st_size, size_ratio_vs_fp32=round(fp32["bytes"] / out_path.stat().st_size, 2),
                max_abs_vs_torch=q8["max_abs"], mean_abs_vs_torch=q8["mean_abs"],
                argmax_agreement_vs_torch=q8["argmax_agreement"], max_abs_prob_vs_torch=q8["max_abs_prob"],
                max_abs_vs_tflite_fp32=vs_fp32["max_abs"], examples=q8["examples"],
                min_agreement=INT8_MIN_AGREEMENT, output_dtype=qrun.output_dtype,
                output_quantization=[float(x) for x in qrun.out["quantization"]])
    if qrun.output_dtype != "float32":
        int8["output_note"] = ("logits come out quantized; dequantize as (q - zero_point) * scale "
                               "(runtime/predictor.py's LiteRT backend does not yet)")
    int8["quality"] = "ok" if q8["argmax_agreement"] >= INT8_MIN_AGREEMENT else "poor"
    if int8["quality"] == "poor":
        int8["warning"] = (f"{quantize}: argmax agrees with PyTorch on only {q8['argmax_agreement']:.1%} of "
                           f"{q8['examples']} texts; do not ship it (use dynamic_wi8_afp32 or fp32)")
    return int8


def _export_int8(fl: _Float, tokenizer, float_path: Path, out_path: Path, quantize: str, calibration_texts,
                 threads, log, logits_out) -> dict:
    """Quantize the float model to ``out_path`` with ``quantize`` and check it (the report's ``int8`` entry)."""
    report, seq_len = fl.report, fl.report["fixed_sequence_length"]
    calib_feeds = None
    if calibration_texts:
        calib_feeds = encode_fixed(tokenizer, list(calibration_texts), seq_len, list(fl.runner.inputs))
    q = quantize_tflite(float_path, out_path, quantize, calib_feeds)
    qrun = TFLiteRunner(out_path, threads)
    q_lg = qrun.logits(tokenizer, fl.texts)
    if logits_out is not None:
        logits_out["int8"] = q_lg
    q8 = compare(fl.torch, q_lg)
    vs_fp32 = compare(fl.fp32, q_lg)
    int8 = _int8_entry(q, out_path, report["fp32"], q8, vs_fp32, qrun, quantize)
    report["int8"] = int8
    report["bytes"] = int8["bytes"]
    report["parity_pass"] = bool(report["fp32"]["parity_pass"] and int8["quality"] == "ok")
    log(f"[{'PASS' if int8['quality'] == 'ok' else 'FAIL'}] TFLite int8 ({quantize}) vs PyTorch: "
        f"argmax agreement {q8['argmax_agreement']:.2%}, max |Δlogit| = {q8['max_abs']:.2e} "
        f"({int8['bytes']:,} bytes, {int8['size_ratio_vs_fp32']}x smaller than fp32)")
    if int8.get("warning"):
        log(f"WARNING: {int8['warning']}")
    return report


def export_tflite(model, tokenizer, out_path, seq_len: int = 128, quantize: str | None = None,
                  calibration_texts=None, parity_texts=None, *, fp32_path=None, parity_examples: int | None = 256,
                  parity_tolerance: float = PARITY_TOLERANCE, threads: int | None = None, log=None,
                  logits_out: dict | None = None) -> dict:
    """Convert an EncoderClassifier to ``out_path`` (.tflite) and check it against PyTorch.

    ``quantize``: None (fp32), ``dynamic_wi8_afp32`` (int8 weights, float activations quantized on the
    fly) or ``static_wi8_ai8`` (full integer, calibrated on ``calibration_texts``). With a recipe the
    float model is written to ``fp32_path`` (default: a temporary file, removed) and ``out_path``
    holds the int8 model. Returns a JSON-ready report: bytes, fp32 parity (max |delta logit| vs
    PyTorch, ``parity_pass`` at ``parity_tolerance``), int8 error/argmax agreement and recipe.
    ``logits_out``: a dict to receive the parity texts' logits ({"torch", "fp32", "int8"}).
    """
    log = log or (lambda *_: None)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _check_recipe(quantize, calibration_texts)
    texts = list(parity_texts or DEFAULT_SAMPLES)
    if parity_examples:
        texts = texts[:parity_examples]
    float_path, tmpdir = _float_path(out_path, quantize, fp32_path)
    try:
        fl = _export_float(model, tokenizer, out_path, float_path, seq_len, quantize, texts, parity_tolerance,
                           threads, log, logits_out)
        report = fl.report
        if quantize is None:
            report["bytes"] = report["fp32"]["bytes"]
            report["parity_pass"] = report["fp32"]["parity_pass"]
            return report
        return _export_int8(fl, tokenizer, float_path, out_path, quantize, calibration_texts, threads, log, logits_out)
    finally:
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)


# ----------------------------------------------------------------------------- CLI

def _read_texts(path) -> list[str]:
    p = Path(path)
    if not p.exists():
        raise ProbscaleError(f"text file {p} does not exist", "pass a UTF-8 file with one text per line")
    return [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]


def _parser():
    import argparse

    ap = argparse.ArgumentParser(prog="python -m probscale_edge.converters.tflite",
                                 description="Convert a probscale-edge model folder to TFLite (LiteRT) with parity checks.")
    ap.add_argument("model_folder", help="folder written by probscale-edge (probscale.json + model.safetensors)")
    ap.add_argument("out", help="output .tflite (the int8 model when --quantize is given)")
    ap.add_argument("--quantize", choices=RECIPES, default=None, help="ai-edge-quantizer recipe (default: fp32 only)")
    ap.add_argument("--seq-len", type=int, default=128, help="fixed sequence length of the graph (default 128)")
    ap.add_argument("--calibration-texts", help="file, one text per line (static_wi8_ai8 needs it)")
    ap.add_argument("--calibration-examples", type=int, default=200)
    ap.add_argument("--parity-texts", help="file, one text per line (default: --eval-task's eval texts, or built-in samples)")
    ap.add_argument("--parity-examples", type=int, default=256, help="0: all")
    ap.add_argument("--tolerance", type=float, default=PARITY_TOLERANCE, help="fp32 max |Δlogit| (default 1e-4)")
    ap.add_argument("--keep-fp32", metavar="PATH", help="with --quantize: also keep the float model here")
    ap.add_argument("--eval-task", help="also report accuracy on this task's eval split (e.g. rotten_tomatoes)")
    ap.add_argument("--eval-max", type=int, default=0, help="cap on eval examples (0: all)")
    ap.add_argument("--latency-runs", type=int, default=0, help="batch-1 latency runs per model (0: skip)")
    ap.add_argument("--threads", type=int, default=None, help="interpreter threads for latency (default: runtime's)")
    ap.add_argument("--json", dest="json_path", help="write the report here (default: OUT with .json)")
    return ap


def _cli_inputs(a):
    """The model, its tokenizer, and the texts the CLI's flags name: (model, tokenizer, parity texts,
    calibration texts, eval texts, eval labels); the texts are None where not asked for."""
    from probscale_edge.modeling import load_classifier

    model, tok, _ = load_classifier(a.model_folder)
    task = None
    if a.eval_task:
        from probscale_edge.data import load_task

        task = load_task(a.eval_task, max_train=4000)
    parity = _read_texts(a.parity_texts) if a.parity_texts else None
    calib = _read_texts(a.calibration_texts)[: a.calibration_examples] if a.calibration_texts else None
    if calib is None and task is not None and a.quantize == "static_wi8_ai8":
        calib = list(task.train.texts[: a.calibration_examples])  # train split: never the eval texts
    eval_texts = eval_labels = None
    if task is not None:
        n = a.eval_max or len(task.eval.texts)
        eval_texts, eval_labels = list(task.eval.texts[:n]), np.asarray(task.eval.labels[:n])
        parity = parity or eval_texts
    return model, tok, parity, calib, eval_texts, eval_labels


def _cli_accuracy(a, model, tok, eval_texts, eval_labels, models: dict, cached: dict, same: bool, log) -> dict:
    """Accuracy on the eval split: PyTorch and each TFLite model (reusing the parity logits when they were the
    eval texts)."""
    ref = cached["torch"] if same else torch_logits(model, tok, eval_texts, a.seq_len)
    acc = {"task": a.eval_task, "examples": len(eval_texts),
           "torch_fp32": float((ref.argmax(-1) == eval_labels).mean())}
    for k, p in models.items():
        if p is None:
            continue
        lg = cached[k] if same else TFLiteRunner(p).logits(tok, eval_texts)
        acc[f"tflite_{k}"] = float((lg.argmax(-1) == eval_labels).mean())
        acc[f"tflite_{k}_max_abs_vs_torch"] = float(np.abs(lg - ref).max())
    log("accuracy on " + f"{a.eval_task} eval ({len(eval_texts)}): " +
        ", ".join(f"{k} {v:.4f}" for k, v in acc.items() if k in ("torch_fp32", "tflite_fp32", "tflite_int8")))
    return acc


def _cli_latency(a, tok, models: dict, log) -> dict:
    from probscale_edge.runtime.bench import DEFAULT_TEXT

    lat = {"threads": a.threads, "batch": 1, "sequence_length": a.seq_len, "text": DEFAULT_TEXT}
    for k, p in models.items():
        if p is not None:
            lat[k] = TFLiteRunner(p, a.threads).latency_ms(tok, DEFAULT_TEXT, runs=a.latency_runs)
            log(f"latency {k}: p50 {lat[k]['p50_ms']:.2f} ms ({a.latency_runs} runs, batch 1, "
                f"seq {a.seq_len}, threads {a.threads or 'default'})")
    return lat


def main(argv=None) -> int:
    a = _parser().parse_args(argv)

    def log(msg):
        print(msg, flush=True)

    try:
        model, tok, parity, calib, eval_texts, eval_labels = _cli_inputs(a)
        out = Path(a.out)
        keep = Path(a.keep_fp32) if a.keep_fp32 else None
        if a.quantize and keep is None and (eval_texts is not None or a.latency_runs):
            keep = out.with_name(out.stem + ".fp32.tflite")  # needed for the fp32 figures below
        cached = {}
        report = export_tflite(model, tok, out, seq_len=a.seq_len, quantize=a.quantize, calibration_texts=calib,
                               parity_texts=parity, fp32_path=keep, parity_examples=a.parity_examples or None,
                               parity_tolerance=a.tolerance, log=log, logits_out=cached)
        same = parity is eval_texts and (not a.parity_examples or a.parity_examples >= len(eval_texts or []))
        report["model_folder"] = str(a.model_folder)
        if a.quantize:
            report["fp32"]["path"] = str(keep) if keep else None
        models = {"fp32": keep if a.quantize else out}
        if a.quantize:
            models["int8"] = out
        if eval_texts is not None:
            report["accuracy"] = _cli_accuracy(a, model, tok, eval_texts, eval_labels, models, cached, same, log)
        if a.latency_runs:
            report["latency"] = _cli_latency(a, tok, models, log)
        jp = Path(a.json_path) if a.json_path else out.with_suffix(".json")
        jp.write_text(json.dumps(report, indent=2, default=str))
        log(f"report: {jp}")
        return 0 if report["parity_pass"] else 1
    except ProbscaleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
