"""Latency of compression rows whose bundles are not on this machine (built on a lent GPU host), by stand-ins.

Latency depends on the shapes, not on the weights (the build's latency check relies on this too). For each
row of a compression JSON, the pre-trained model is cut to the row's recorded shapes (kept layers, the heads
each layer kept, its FFN width) with the row's embedding rank, exported and int8-quantized with the target's
preset as a minimal bundle (``probscale_edge.latency.spec_bundle``). All stand-ins, plus the uncut model as
the reference, are then timed in the same run, interleaved in blocks (``latency.time_bundles``): batch 1,
sequence 128, 1 thread. Rows get ``p50_ms`` and ``latency.stand_in = true``; the table shows each row's
speed-up over the uncut int8 model.

    python benchmarks/compression/stand_in_latency.py benchmarks/compression/results/mpnet-8xne.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def spec_of(row: dict):
    from probscale_edge.prune import SubnetworkSpec

    keep = [int(i) for i in row["kept_layers"]]
    heads, ffn = {}, {}
    for src, shape in zip(keep, row["layer_shapes"]):
        heads[str(src)] = shape.get("head_ids") or list(range(shape["heads"]))
        ffn[str(src)] = list(range(shape["ffn"]))  # which neurons does not matter for time, how many does
    return SubnetworkSpec(keep, heads, ffn)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", help="a compression JSON (rows with kept_layers, layer_shapes, embedding_rank)")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--target", default="x86_64")
    ap.add_argument("--seq", type=int, default=128)
    a = ap.parse_args(argv)
    from probscale_edge.data import load_task
    from probscale_edge.latency import cpu_name, spec_bundle, time_bundles
    from probscale_edge.modeling import EncoderClassifier, load_encoder, resolve_model
    from probscale_edge.prune import SubnetworkSpec

    path = Path(a.json)
    rep = json.loads(path.read_text())
    enc, tok, _ = load_encoder(str(resolve_model(rep["model"])))
    n_layers = len(EncoderClassifier(enc, 2).adapter.layers(enc))
    with tempfile.TemporaryDirectory() as tmp:
        bundles, labels = [], {}
        full = spec_bundle(EncoderClassifier(enc, 2), SubnetworkSpec(list(range(n_layers))), tok, Path(tmp) / "full",
                           a.seq, "int8", a.target)
        for i, r in enumerate(rep["rows"]):
            if r["task"] not in labels:  # the task head's width (a rounding error next to the layers, but exact)
                labels[r["task"]] = load_task(r["task"]).num_labels
            _log(f"stand-in for {r['task']} {r['method']} ({len(r['kept_layers'])} layers)")
            bundles.append(spec_bundle(EncoderClassifier(enc, labels[r["task"]]), spec_of(r), tok, Path(tmp) / f"r{i}",
                                       a.seq, "int8", a.target, embedding_rank=r.get("embedding_rank")))
        _log(f"timing {len(bundles) + 1} bundles, {a.runs} runs each, interleaved ...")
        e2e, sess = time_bundles([full] + bundles, a.seq, 1, a.runs)
    ref = e2e[0]
    out = [f"### {rep['model']}: int8 latency by stand-ins (batch 1, sequence {a.seq}, 1 thread, {a.runs} runs)", "",
           "| task | method | layers | p50 ms | faster than the uncut int8 model |", "|---|---|---|---|---|",
           f"| (uncut model) | int8 | {n_layers} | {ref:.2f} | 1.0x |"]
    for r, p50, s_ms in zip(rep["rows"], e2e[1:], sess[1:]):
        r["p50_ms"] = float(p50)
        r["latency"] = {"runs": a.runs, "threads": 1, "seq": a.seq, "stand_in": True, "session_p50_ms": float(s_ms),
                        "uncut_int8_p50_ms": float(ref), "cpu": cpu_name()}
        out.append(f"| {r['task']} | {r['method']} | {len(r['kept_layers'])} | {p50:.2f} | {ref / p50:.1f}x |")
    tmp_json = path.with_suffix(".json.part")
    tmp_json.write_text(json.dumps(rep, indent=1, default=str))
    tmp_json.replace(path)
    md = "\n".join(out) + "\n"
    path.with_name(path.stem + "-latency.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
