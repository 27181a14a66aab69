"""Headline benchmark: the full model against this project's bundles, one run, same machine, same data.

  (a) full fine-tuned model, PyTorch fp32
  (b) full model, ONNX fp32 (ONNX Runtime)
  (c) full model, ONNX Runtime dynamic int8: what Optimum's export + quantize gives (the peer)
  (d) this project's bundles (every BUNDLE given; ONNX int8, .ort or TFLite)

For each: accuracy on the task's eval split, bytes, batch-1 p50/p99 latency at a fixed sequence
length (default 128) with a fixed thread count (default 1), cold start (process start to first
prediction), and peak RSS. Every model is measured in its own fresh process, so RSS and cold start
are its own. Ratios against (a) and (c). Also the runtime's own overhead: tokenizing and
post-processing as a share of a bare session run (batch 1). Writes JSON, markdown, HTML and a
Pareto plot (accuracy against bytes and against latency).

    python benchmarks/headline/run.py --teacher TEACHER_FOLDER --task rotten_tomatoes BUNDLE [BUNDLE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TEXT = ("The film is a charming, funny and surprisingly moving portrait of a family that keeps falling apart "
        "and coming back together, and the cast is excellent.")


# --------------------------------------------------------------------------- worker (one per model)
def worker(kind: str, path: str, tokenizer: str, seq: int, threads: int, runs: int) -> dict:
    t_start = time.perf_counter()
    import psutil

    if kind == "torch":
        import torch

        torch.set_num_threads(threads)
        from probscale_edge.modeling import load_classifier, tokenize

        model, tok, _ = load_classifier(path)
        enc = tokenize(tok, [TEXT], None, seq)
        ids = enc["input_ids"]
        pad = lambda t: torch.nn.functional.pad(t, (0, seq - t.shape[1]))  # noqa: E731
        args = (pad(ids), pad(enc["attention_mask"]), pad(enc["token_type_ids"]) if "token_type_ids" in enc else None)

        def run():
            with torch.no_grad():
                return model(*args)
    else:
        from probscale_edge.runtime.predictor import Predictor

        if Path(path).is_dir():
            p = Predictor(path, threads=threads, backend="litert" if kind == "litert" else None)
        else:
            p = Predictor.from_files(path, tokenizer, ["0", "1"], 128, 0, threads=threads)
        if not p.fixed_length:
            p.fixed_length = seq
        feed = p.encode([TEXT])  # every backend picks the inputs it has

        def run():
            return p.backend.run(feed)
    run()
    cold = time.perf_counter() - t_start
    for _ in range(10):
        run()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        run()
        ts.append((time.perf_counter() - t) * 1000)
    out = {"cold_start_s": cold, "p50_ms": float(np.percentile(ts, 50)), "p99_ms": float(np.percentile(ts, 99)),
           "mean_ms": float(np.mean(ts)), "peak_rss_mb": _peak_rss_mb(psutil)}
    if kind != "torch":  # the runtime's own overhead at batch 1: tokenizing + post-processing against the session
        # each predict() call is split into its three phases (Predictor timings), so the session time is
        # the one right after tokenizing, in the same call: no second, cache-warm session run to subtract
        text = TEXT
        if p.backend_name == "onnxruntime":  # a TFLite graph has a fixed length: its overhead is at that length
            p.fixed_length = None
        for _ in range(10):
            p.predict([text])
        pre, sess, post, total = [], [], [], []
        for _ in range(runs):
            tm = {}
            t = time.perf_counter()
            p.predict([text], timings=tm)
            total.append(time.perf_counter() - t)
            pre.append(tm["tokenize_s"])
            sess.append(tm["session_s"])
            post.append(tm["post_s"])
        out["predict_p50_ms"] = float(np.median(total) * 1000)
        out["session_p50_ms"] = float(np.median(sess) * 1000)
        out["tokenize_p50_ms"] = float(np.median(pre) * 1000)
        out["post_p50_ms"] = float(np.median(post) * 1000)
        out["pre_post_overhead"] = float(np.median(np.add(pre, post)) / np.median(sess))
    return out


def _peak_rss_mb(psutil) -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: ru_maxrss survives exec, so a worker started
    from a large parent would report the parent's peak."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return psutil.Process().memory_info().rss / 1e6


def measure(kind, path, tokenizer, a) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, str(path), "--tokenizer", str(tokenizer or ""),
           "--seq", str(a.seq), "--threads", str(a.threads), "--runs", str(a.runs)]
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), PROBSCALE_EDGE_QUIET="1")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"measuring {path} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- driver
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundles", nargs="*")
    ap.add_argument("--teacher", help="full fine-tuned model folder (probscale-edge format)")
    ap.add_argument("--task", default="rotten_tomatoes")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--max-eval", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/headline/results")
    ap.add_argument("--worker", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    ap.add_argument("--tokenizer", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker[0], a.worker[1], a.tokenizer, a.seq, a.threads, a.runs)))
        return

    from probscale_edge.converters.onnx_export import ExportConfig, export_onnx
    from probscale_edge.converters.quantize import PRESETS, quantize_dynamic_int8
    from probscale_edge.data import load_task, stratified_sample
    from probscale_edge.latency import cpu_name
    from probscale_edge.modeling import load_classifier, predict_logits
    from probscale_edge.runtime.predictor import Predictor

    task = load_task(a.task, max_train=4000)
    ev = task.eval if not a.max_eval else task.eval.subset(stratified_sample(task.eval.labels, a.max_eval))
    labels = np.asarray(ev.labels)
    rows = []
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="probscale-headline-") as d:
        d = Path(d)
        model, tok, _ = load_classifier(a.teacher)
        counts = model.param_counts()
        tok.save_pretrained(str(d / "tok"))
        tj = d / "tok" / "tokenizer.json"
        print("(a) PyTorch fp32 ...", file=sys.stderr, flush=True)
        acc = float((predict_logits(model, tok, ev.texts, ev.pairs).argmax(-1) == labels).mean())
        bytes_ = sum(f.stat().st_size for f in Path(a.teacher).glob("*.safetensors"))
        rows.append({"id": "a", "name": "full model, PyTorch fp32", "accuracy": acc, "bytes": bytes_,
                     "params_total": counts["total"], "params_non_embedding": counts["non_embedding"],
                     **measure("torch", a.teacher, None, a)})
        fp32 = d / "full_fp32.onnx"
        export_onnx(model, tok, fp32, ExportConfig(), parity_texts=ev.texts[:8])
        int8 = d / "full_int8.onnx"
        quantize_dynamic_int8(fp32, int8, PRESETS["x86_64"])
        for rid, name, path in (("b", "full model, ONNX fp32", fp32),
                                ("c", "full model, ONNX Runtime dynamic int8 (Optimum-style peer)", int8)):
            print(f"({rid}) {name} ...", file=sys.stderr, flush=True)
            p = Predictor.from_files(path, tj, task.label_names, 128, int(tok.pad_token_id or 0))
            acc = float((p.logits(ev.texts, ev.pairs).argmax(-1) == labels).mean())
            rows.append({"id": rid, "name": name, "accuracy": acc, "bytes": path.stat().st_size,
                         "params_total": counts["total"], "params_non_embedding": counts["non_embedding"],
                         **measure("ort", path, tj, a)})
        del model
        for i, b in enumerate(a.bundles):
            print(f"(d{i + 1}) {b} ...", file=sys.stderr, flush=True)
            p = Predictor(b)
            m = p.manifest
            acc = float((p.logits(ev.texts, ev.pairs).argmax(-1) == labels).mean())
            pc = m["parameters"]["pruned"]
            rows.append({"id": f"d{i + 1}", "name": f"bundle {Path(b).name} ({m['model']['format']} "
                                                    f"{m['model']['precision']})",
                         "accuracy": acc, "bytes": m["sizes"]["bundle_model_bytes"], "params_total": pc["total"],
                         "params_non_embedding": pc["non_embedding"], **measure("ort", b, None, a)})
            if (m.get("tflite") or {}).get("included"):  # the same bundle's LiteRT model
                print(f"(d{i + 1}t) {b} (TFLite) ...", file=sys.stderr, flush=True)
                pt = Predictor(b, backend="litert")
                acc = float((pt.logits(ev.texts, ev.pairs).argmax(-1) == labels).mean())
                rows.append({"id": f"d{i + 1}t", "name": f"bundle {Path(b).name} (tflite {m['tflite']['precision']}, "
                                                         f"LiteRT)", "accuracy": acc, "bytes": m["tflite"]["bytes"],
                             "params_total": pc["total"], "params_non_embedding": pc["non_embedding"],
                             **measure("litert", b, None, a)})
    a_row = rows[0]
    c_row = next(r for r in rows if r["id"] == "c")
    for r in rows:
        r["retention_vs_a"] = r["accuracy"] / a_row["accuracy"]
        r["speedup_vs_a"] = a_row["p50_ms"] / r["p50_ms"]
        r["speedup_vs_c"] = c_row["p50_ms"] / r["p50_ms"]
        r["smaller_vs_a"] = a_row["bytes"] / r["bytes"]
        r["fewer_params_total_vs_a"] = a_row["params_total"] / r["params_total"]
    report = {"schema": "probscale-edge.headline/1", "task": a.task, "eval_examples": len(labels),
              "sequence_length": a.seq, "threads": a.threads, "batch": 1, "runs": a.runs, "host": os.uname().nodename,
              "cpu": cpu_name(), "rows": rows}
    (out / "headline.json").write_text(json.dumps(report, indent=2))
    md = _markdown(report)
    (out / "headline.md").write_text(md)
    (out / "headline.html").write_text("<html><head><meta charset='utf-8'><title>probscale-edge headline</title>"
                                       "</head><body><pre>" + md.replace("&", "&amp;").replace("<", "&lt;") +
                                       "</pre><img src='headline.png'></body></html>")
    _plot(report, out / "headline.png")
    print(md)
    print(f"wrote {out}/headline.{{json,md,html,png}}", file=sys.stderr)


def _markdown(rep) -> str:
    lines = [f"Task {rep['task']} ({rep['eval_examples']} eval examples); batch 1, sequence {rep['sequence_length']}, "
             f"{rep['threads']} thread(s), {rep['runs']} runs; {rep['cpu']}.", "",
             "| | model | accuracy | retention | params total / non-emb. | bytes | x smaller | p50 ms | p99 ms | "
             "x faster vs (a) | x faster vs (c) | cold start s | peak RSS MB | pre/post overhead |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rep["rows"]:
        ov = f"{r['pre_post_overhead']:+.1%}" if "pre_post_overhead" in r else "–"
        lines.append(f"| ({r['id']}) | {r['name']} | {r['accuracy']:.4f} | {r['retention_vs_a']:.1%} | "
                     f"{r['params_total'] / 1e6:.2f}M / {r['params_non_embedding'] / 1e6:.2f}M | {r['bytes'] / 1e6:.1f} MB | "
                     f"{r['smaller_vs_a']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['speedup_vs_a']:.1f} | "
                     f"{r['speedup_vs_c']:.2f} | {r['cold_start_s']:.2f} | {r['peak_rss_mb']:.0f} | {ov} |")
    return "\n".join(lines) + "\n"


def _plot(rep, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from probscale_edge.visual import place_labels, plain_log_axis

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = []
    for ax, key, label in ((axes[0], "bytes", "model bytes (MB)"), (axes[1], "p50_ms", "p50 latency (ms), batch 1")):
        at = {}  # rows at one point (same size and accuracy) share one label: "(a) (b)"
        for r in rep["rows"]:
            x = r[key] / 1e6 if key == "bytes" else r[key]
            ax.scatter(x, r["accuracy"], s=40, color="tab:red" if r["id"].startswith("d") else "tab:blue")
            at.setdefault((x, r["accuracy"]), []).append(f"({r['id']})")
        labels.append([(x, y, " ".join(ids)) for (x, y), ids in at.items()])
        plain_log_axis(ax, [x for x, _ in at])  # plain ticks (2, 5, 10, 20), minor labels off
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{rep['task']}: accuracy against size and latency (blue: full model, red: bundles)")
    fig.tight_layout()
    for ax, items in zip(axes, labels):  # once the layout is final: labels that overlap neither points nor labels
        place_labels(ax, items)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
