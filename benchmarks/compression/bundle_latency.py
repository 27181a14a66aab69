"""Latency of real shipped bundles against the uncut int8 model, side by side in one run.

The uncut pre-trained model is exported and int8-quantized with the bundles' target preset
(``probscale_edge.latency.spec_bundle``, the reference every speed-up here is over); the bundles are the real ones a
build wrote (their own int8 ONNX file, tokenizer and labels, loaded as an app loads them). All are timed in the same
run, interleaved in blocks (``latency.time_bundles``): batch 1, sequence 128, 1 thread; the whole timing is repeated ``--repeats`` times, so the
table gives each speed-up's spread. Prints the table and writes JSON.

    python benchmarks/compression/bundle_latency.py --model all-mpnet-base-v2 BUNDLE [BUNDLE ...] \\
        --json benchmarks/compression/results/mpnet-ladder10-latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundles", nargs="+", help="bundle folders (manifest.json next to the model file)")
    ap.add_argument("--model", required=True, help="the pre-trained model the bundles were cut from")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--json", required=True)
    a = ap.parse_args(argv)
    from probscale_edge.latency import cpu_name, spec_bundle, time_bundles
    from probscale_edge.modeling import EncoderClassifier, load_encoder, resolve_model
    from probscale_edge.prune import SubnetworkSpec
    from probscale_edge.runtime.predictor import Predictor

    mans = [json.loads((Path(b) / "manifest.json").read_text()) for b in a.bundles]
    targets = {m["target"] for m in mans}
    if len(targets) != 1:
        raise SystemExit(f"error: the bundles are for several targets ({sorted(map(str, targets))}) -- fix: time one "
                         "target's bundles at a time")
    target = targets.pop()
    # the bundle's own int8 ONNX file, tokenizer and labels: what an app loads (the .ort file need not travel)
    preds = [Predictor.from_files(Path(b) / m["model"]["file"], Path(b) / "tokenizer.json", m["labels"],
                                  m["tokenizer"]["max_length"], m["tokenizer"]["pad_id"], threads=1)
             for b, m in zip(a.bundles, mans)]
    enc, tok, _ = load_encoder(str(resolve_model(a.model)))
    n_layers = len(EncoderClassifier(enc, 2).adapter.layers(enc))
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        _log(f"the uncut {a.model} as int8 ({target} preset) ...")
        full = spec_bundle(EncoderClassifier(enc, 2), SubnetworkSpec(list(range(n_layers))), tok, Path(tmp) / "full",
                           a.seq, "int8", target)
        for k in range(a.repeats):
            _log(f"timing {len(a.bundles) + 1} models, {a.runs} runs each, interleaved (repeat {k + 1}/{a.repeats}) ...")
            load = os.getloadavg()[0]
            e2e, _ = time_bundles([full] + preds, a.seq, 1, a.runs)
            runs.append({"p50_ms": e2e, "load_1min": load})
    names = [Path(b).name for b in a.bundles]
    out = {"model": a.model, "target": target, "seq": a.seq, "threads": 1, "runs": a.runs, "cpu": cpu_name(),
           "bundles": {}, "uncut_int8_p50_ms": [r["p50_ms"][0] for r in runs], "load_1min": [r["load_1min"] for r in runs]}
    lines = [f"### {a.model}: real int8 bundles against the uncut int8 model (batch 1, sequence {a.seq}, 1 thread, "
             f"{a.runs} runs, {a.repeats} repeats)", "",
             "| bundle | total-param ratio | layers | p50 ms (per repeat) | faster than the uncut int8 model (min-max) |",
             "|---|---|---|---|---|",
             f"| (uncut model, int8) | 1.00x | {n_layers} | {' / '.join(f'{x:.2f}' for x in out['uncut_int8_p50_ms'])} "
             "| 1.0x |"]
    for i, (name, m) in enumerate(zip(names, mans), 1):
        p50 = [r["p50_ms"][i] for r in runs]
        speed = [r["p50_ms"][0] / r["p50_ms"][i] for r in runs]
        out["bundles"][name] = {"p50_ms": p50, "speedup": speed, "ratio_total": m["parameters"]["ratio_total"],
                                "layers": len(m["subnetwork"]["spec"]["keep_layers"])}
        lines.append(f"| {name} | {m['parameters']['ratio_total']:.2f}x | {len(m['subnetwork']['spec']['keep_layers'])} | "
                     f"{' / '.join(f'{x:.2f}' for x in p50)} | {min(speed):.2f}-{max(speed):.2f}x |")
    Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    print("\n".join(lines) + f"\n\nload average (1 min) at each repeat: {', '.join(f'{x:.2f}' for x in out['load_1min'])}")


if __name__ == "__main__":
    main()
