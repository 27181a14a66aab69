"""Converters benchmark: every format x precision of one pruned model, side by side, in one run.

For a model folder written by probscale-edge (a pruned, recovered classifier) and its task:
ONNX fp32, ONNX fp32 with ONNX Runtime's transformer fusions, ONNX Runtime dynamic int8 (per-channel),
static QDQ int8 (calibrated on training text), and, when the TFLite toolchain is installed
(scripts/install-tflite.sh), TFLite fp32 and ai-edge-quantizer dynamic int8. For each: bytes,
parity against PyTorch (max |Δlogit| on the first eval texts, and argmax agreement), accuracy on
the eval split through the runtime's own Predictor, and batch-1 p50 latency at sequence 128
and at the task's median length, with 1 and 2 threads. Prints a markdown table, writes JSON.

    python benchmarks/converters/run.py MODEL_FOLDER --task rotten_tomatoes --json out.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def latency_ms(p, text: str, length: int | None, runs: int) -> float:
    """p50 of batch-1 backend runs of predictor ``p`` (tokenized once; padded to ``length`` when given
    and the graph's length is not fixed)."""
    fixed = p.fixed_length
    if length and not fixed:
        p.fixed_length = length
    feed = p.encode([text])  # every backend picks the inputs it has
    p.fixed_length = fixed
    for _ in range(5):
        p.backend.run(feed)
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        p.backend.run(feed)
        ts.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(ts, 50))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_folder")
    ap.add_argument("--task", required=True)
    ap.add_argument("--max-eval", type=int, default=None, help="cap on eval examples (stratified)")
    ap.add_argument("--runs", type=int, default=100, help="latency runs per cell")
    ap.add_argument("--parity-examples", type=int, default=256)
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-tflite", action="store_true")
    a = ap.parse_args()

    import onnx

    from probscale_edge.converters.onnx_export import ExportConfig, export_onnx
    from probscale_edge.converters.quantize import PRESETS, quantize_dynamic_int8, quantize_static_int8
    from probscale_edge.data import load_task, stratified_sample
    from probscale_edge.modeling import load_classifier, predict_logits
    from probscale_edge.runtime.predictor import Predictor

    model, tok, meta = load_classifier(a.model_folder)
    task = load_task(a.task, max_train=4000)
    ev = task.eval if not a.max_eval else task.eval.subset(stratified_sample(task.eval.labels, a.max_eval))
    texts, labels = ev.texts, np.asarray(ev.labels)
    n_par = min(a.parity_examples, len(texts))
    ref = predict_logits(model, tok, texts[:n_par])
    torch_acc = float((predict_logits(model, tok, texts).argmax(-1) == labels).mean())
    lengths = [len(tok(t)["input_ids"]) for t in texts]
    median_len = int(np.median(lengths))
    sample = texts[int(np.argsort(lengths)[len(lengths) // 2])]  # a text of median length
    rows = []
    with tempfile.TemporaryDirectory(prefix="probscale-conv-") as d:
        d = Path(d)
        tok.save_pretrained(str(d / "tok"))
        tj = d / "tok" / "tokenizer.json"
        pad = int(tok.pad_token_id or 0)
        fp32 = d / "model_fp32.onnx"
        t0 = time.time()
        export_onnx(model, tok, fp32, ExportConfig(), parity_texts=texts[:8])
        names = [i.name for i in onnx.load(str(fp32)).graph.input]
        arts = [("ONNX", "fp32", fp32, round(time.time() - t0, 1))]

        t0 = time.time()
        fused = d / "model_fused.onnx"
        try:
            from onnxruntime.transformers.optimizer import optimize_model

            opt = optimize_model(str(fp32), model_type="bert", num_heads=0, hidden_size=0, opt_level=1)
            opt.save_model_to_file(str(fused))
            fusions = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
            arts.append(("ONNX + ORT fusions", "fp32", fused, round(time.time() - t0, 1)))
        except Exception as e:  # noqa: BLE001 - recorded, not hidden
            fusions = {"error": str(e)[:200]}

        t0 = time.time()
        dyn = d / "model_int8_dynamic.onnx"
        quantize_dynamic_int8(fp32, dyn, PRESETS["x86_64"])
        arts.append(("ONNX Runtime dynamic", "int8", dyn, round(time.time() - t0, 1)))

        t0 = time.time()
        stat = d / "model_int8_static.onnx"
        calib = Predictor.from_files(fp32, tj, task.label_names, 128, pad)
        idx = stratified_sample(task.train.labels, 256)
        feeds = [{k: v for k, v in calib.encode([task.train.texts[i]]).items() if k in names} for i in idx]
        quantize_static_int8(fp32, stat, PRESETS["x86_64"], feeds)
        arts.append(("ONNX Runtime static QDQ", "int8", stat, round(time.time() - t0, 1)))

        venv_py = ROOT / ".venv-tflite" / "bin" / "python"
        tflite_note = None
        if not a.no_tflite and venv_py.exists():
            for label, extra, out in (("TFLite (litert-torch)", [], d / "model_fp32.tflite"),
                                      ("TFLite + ai-edge-quantizer", ["--quantize", "dynamic_wi8_afp32"],
                                       d / "model_int8.tflite")):
                t0 = time.time()
                r = subprocess.run([str(venv_py), "-m", "probscale_edge.converters.tflite", a.model_folder, str(out),
                                    "--parity-examples", "16", *extra], capture_output=True, text=True)
                if r.returncode == 0 and out.exists():
                    arts.append((label, "int8" if extra else "fp32", out, round(time.time() - t0, 1)))
                else:
                    tflite_note = f"{label} failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}"
        else:
            tflite_note = "TFLite toolchain not installed (scripts/install-tflite.sh)"

        fp32_bytes = fp32.stat().st_size
        for fmt, prec, path, secs in arts:
            p = Predictor.from_files(path, tj, task.label_names, 128, pad)
            logits = p.logits(texts)
            acc = float((logits.argmax(-1) == labels).mean())
            diff = float(np.abs(logits[:n_par] - ref).max())
            agree = float((logits[:n_par].argmax(-1) == ref.argmax(-1)).mean())
            row = {"format": fmt, "precision": prec, "bytes": path.stat().st_size,
                   "size_vs_onnx_fp32": round(fp32_bytes / path.stat().st_size, 2), "convert_seconds": secs,
                   "accuracy": acc, "accuracy_vs_torch_points": round((acc - torch_acc) * 100, 2),
                   "max_abs_logit_vs_torch": diff, "argmax_agreement": agree,
                   "fixed_sequence_length": p.fixed_length}
            for threads in (1, 2):
                pt = Predictor.from_files(path, tj, task.label_names, 128, pad, threads=threads)
                row[f"p50_ms_seq128_t{threads}"] = latency_ms(pt, sample, 128, a.runs)
                row[f"p50_ms_median_t{threads}"] = latency_ms(pt, sample, None, a.runs) if not p.fixed_length else None
            rows.append(row)
            print(f"  {fmt} {prec}: acc {acc:.4f}, max |Δlogit| {diff:.2e}", file=sys.stderr, flush=True)

    def ms(v):
        return "n/a (fixed 128)" if v is None else f"{v:.2f}"

    print(f"\nmodel {a.model_folder}  task {a.task}: {len(texts)} eval examples, PyTorch fp32 accuracy {torch_acc:.4f}, "
          f"median length {median_len} tokens\n")
    hdr = ["format", "precision", "bytes", "x smaller", "accuracy", "Δ vs torch (pts)", "max |Δlogit|", "argmax =",
           "p50 ms seq128 1t", "2t", f"p50 ms seq{median_len} 1t", "2t"]
    print("| " + " | ".join(hdr) + " |\n|" + "---|" * len(hdr))
    for r in rows:
        print(f"| {r['format']} | {r['precision']} | {r['bytes']:,} | {r['size_vs_onnx_fp32']} | {r['accuracy']:.4f} | "
              f"{r['accuracy_vs_torch_points']:+.2f} | {r['max_abs_logit_vs_torch']:.1e} | {r['argmax_agreement']:.2%} | "
              f"{ms(r['p50_ms_seq128_t1'])} | {ms(r['p50_ms_seq128_t2'])} | {ms(r['p50_ms_median_t1'])} | "
              f"{ms(r['p50_ms_median_t2'])} |")
    if tflite_note:
        print(f"\nnote: {tflite_note}")
    out = {"schema": "probscale-edge.converters/1", "model": a.model_folder, "task": a.task,
           "eval_examples": len(texts), "torch_fp32_accuracy": torch_acc, "median_length": median_len,
           "ort_fusions": fusions, "tflite_note": tflite_note, "rows": rows}
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(out, indent=2))
        print(f"wrote {a.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
