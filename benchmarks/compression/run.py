"""Compression benchmark: this project against ProbScale's heuristics and TextPruner at equal budgets.

For one model and each task: the fine-tuned teacher, then, at every ratio R (total parameters
R times fewer than the teacher's), one build per method, all with the same embedding treatment
(vocabulary trimmed to the task, word embedding factorized to --embedding-rank) so that only the
choice of the subnetwork and its recovery differ:

  probscale   this project: probe-guided layer search, composed-subnetwork check, Fisher heads and
              FFN neurons to the budget, distillation with early stopping (the default build)
  probscale-iter  the same, with heads and neurons removed in --prune-iterations re-scored steps
  bottom      ProbScale's truncation baseline: the first k layers, then fine-tuning on labels
              (whole layers while one fits the budget; below that, the first layer cut by units)
  random      a random layer subset, then the same unit cut and distillation as ours
  textpruner  TextPruner's own iterative head/FFN pruning (PyPI textpruner) of the teacher to the
              encoder size ours kept, then our distillation (BERT/RoBERTa/ELECTRA families only)

Each row: accuracy (fp32 student and the int8 bundle, whole eval split), retention against the
teacher, parameters (total and non-embedding), int8 bundle bytes, and, with --latency, the int8
bundle's batch-1 p50 at sequence 128 on this machine's CPU (1 thread). Writes JSON, a markdown
table and a Pareto plot (accuracy against total parameters).

    python benchmarks/compression/run.py --model all-MiniLM-L6-v2 --task rotten_tomatoes --task sms_spam \
        --ratios 5 10 --json benchmarks/compression/results/minilm.json

Rows are written as they finish (a rerun with --resume skips rows already in the JSON).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

METHODS = ("probscale", "probscale-iter", "bottom", "random", "textpruner")


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def _cfg(a, task, ratio, method, out, **over):
    from probscale_edge.pipeline import BuildConfig, TaskSpec
    from probscale_edge.recover import RecoverConfig
    from probscale_edge.select import SelectConfig

    rc = RecoverConfig(mode="distill", epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, student_lr=a.student_lr,
                       student_epochs=a.student_epochs, hidden_weight=a.distill_hidden, augment=a.augment)
    sc = SelectConfig(strategy="probscale", granularity="unit", layer_factor=a.layer_factor,
                      prune_iterations=a.prune_iterations if method == "probscale-iter" else 1)
    if method == "bottom":
        rc.mode = "finetune"
        rc.hidden_weight = 0.0  # truncation baseline: fine-tuning on labels, as ProbScale does
        rc.augment = 0
        sc.strategy = "bottom"
        sc.granularity = over.pop("granularity", "layer")
        if sc.granularity == "unit":  # truncation: the first layer only, then cut by units
            sc.layer_factor = 1.0
    elif method == "random":
        sc.strategy = "random"
    cfg = BuildConfig(model=a.model, tasks=[TaskSpec(task)], output=str(out), target=a.target, max_train=a.max_train,
                      compression=ratio, compression_basis=a.basis, trim_vocab=True, embedding_rank=a.embedding_rank, select=sc, recover=rc,
                      force=True, latency_runs=5, seed=a.seed, resume=a.resume)
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


def _row(m: dict, task, ratio, method, out, seconds, extra=None) -> dict:
    st = m["stages"]
    full, pruned = m["parameters"]["original"], m["parameters"]["pruned"]
    acc = m["validation"]["accuracy"]
    teacher = st["finetune"]["accuracy"]
    return {"task": task, "ratio": ratio, "method": method, "bundle": str(out),
            "teacher_accuracy": teacher, "accuracy_fp32": acc["pruned_torch_fp32"],
            "accuracy_bundle": acc.get("bundle"), "retention": acc.get("bundle") / teacher,
            "total": pruned["total"], "non_embedding": pruned["non_embedding"],
            "encoder_non_embedding": pruned.get("encoder_non_embedding"),
            "full_total": full["total"], "full_non_embedding": full["non_embedding"],
            "total_ratio": full["total"] / pruned["total"], "non_embedding_ratio": full["non_embedding"] / pruned["non_embedding"],
            "bundle_bytes": m["sizes"]["bundle_model_bytes"], "full_fp32_bytes": full["total"] * 4,
            "kept_layers": st["select"]["spec"]["keep_layers"], "layer_shapes": st["prune"].get("layer_shapes"),
            "vocab_kept": (st.get("vocab") or {}).get("kept"), "embedding_rank": (st.get("embedding") or {}).get("rank"),
            "strategy": st["select"].get("strategy"), "recover": st["recover"].get("mode"),
            "distill_hidden": (st["recover"].get("config") or {}).get("hidden_weight", 0.0),
            "student_epochs": (st["recover"].get("config") or {}).get("epochs"),
            "augment": (st["recover"].get("config") or {}).get("augment", 0),
            "basis": (st.get("budget") or {}).get("basis", "total"),
            "early_stopping": {k: v for k, v in (st["recover"].get("early_stopping") or {}).items() if k != "history"},
            "teacher_key": st["finetune"]["key"], "seconds": round(seconds, 1), **(extra or {})}


def run_build(cfg):
    from probscale_edge.pipeline import build

    t0 = time.time()
    m = build(cfg, log=_log)
    return m, time.time() - t0


def textpruner_spec(a, task_name, ours: dict):
    """TextPruner's choice of heads and FFN neurons on the (cached) teacher, as a SubnetworkSpec dict."""
    from textpruner_baseline import prune_with_textpruner, spec_of

    from probscale_edge.assets import cache_dir
    from probscale_edge.data import load_task
    from probscale_edge.modeling import load_classifier

    teacher, tok, _ = load_classifier(cache_dir() / "teachers" / ours["teacher_key"])
    task = load_task(task_name, max_train=a.max_train)
    model = copy.deepcopy(teacher)
    rep = prune_with_textpruner(model, tok, task.train, int(ours["encoder_non_embedding"]),
                                max_examples=a.textpruner_examples, log=_log)
    return spec_of(rep), {k: rep[k] for k in rep if k in ("config", "seconds", "textpruner_version", "version")}


def build_method(a, task, ratio, method, out, ours):
    """One build of ``method`` at ``ratio`` -> (manifest, seconds, extra row fields)."""
    extra = {}
    if method == "textpruner":
        if ours is None:
            raise RuntimeError("needs the probscale row of the same ratio (its encoder size is the target)")
        spec, extra = textpruner_spec(a, task, ours)
        return (*run_build(_cfg(a, task, ratio, method, out, spec=spec)), extra)
    try:
        return (*run_build(_cfg(a, task, ratio, method, out)), extra)
    except Exception as e:  # noqa: BLE001 - truncation where no whole layer fits: the first layer, cut by units
        if method != "bottom" or "below the smallest possible subnetwork" not in str(e):
            raise
        extra = {"note": "no whole layer fits the budget: first layer, cut by units"}
        return (*run_build(_cfg(a, task, ratio, method, out, granularity="unit")), extra)


def bench_latency(rows, runs: int, threads: int, seq: int):
    """p50 of every row's int8 bundle, interleaved round-robin so machine noise hits all alike."""
    import numpy as np

    from probscale_edge.runtime.predictor import Predictor

    preds, times = {}, {}
    for r in rows:
        if r.get("bundle") and Path(r["bundle"]).exists():
            p = Predictor(r["bundle"], threads=threads)
            enc = p.encode([" ".join(["word"] * seq)])  # truncated by the bundle's tokenizer to its max length
            enc = {k: v[:, :seq] for k, v in enc.items()}
            p.backend.run(enc)  # warm-up
            preds[id(r)] = (p, enc)
            times[id(r)] = []
    for _ in range(runs):
        for k, (p, enc) in preds.items():
            t = time.perf_counter()
            p.backend.run(enc)
            times[k].append((time.perf_counter() - t) * 1000)
    for r in rows:
        if id(r) in times:
            r["p50_ms"] = float(np.median(times[id(r)]))
            r["latency"] = {"runs": runs, "threads": threads, "seq": seq, "cpu": platform.processor() or platform.machine()}


def summarize(rows) -> list[dict]:
    """Per method and ratio: retention averaged over the tasks (the issue's headline figures). Rows of
    several seeds are averaged per task first, so every task counts once."""
    per_task = {}
    for r in rows:
        per_task.setdefault((r["method"], r["ratio"], r["task"]), []).append(r)
    out = {}
    for (method, ratio, task), rs in per_task.items():
        mean = lambda k: sum(r[k] for r in rs) / len(rs)  # noqa: E731
        out.setdefault((method, ratio), []).append({"task": task, "seeds": len(rs), "retention": mean("retention"),
                                                    "accuracy": mean("accuracy_bundle"),
                                                    "total_ratio": mean("total_ratio"),
                                                    "non_embedding_ratio": mean("non_embedding_ratio")})
    res = []
    for (method, ratio), ts in sorted(out.items(), key=lambda kv: (kv[0][1], METHODS.index(kv[0][0]))):
        res.append({"method": method, "ratio": ratio, "tasks": len(ts), "seeds": max(t["seeds"] for t in ts),
                    "mean_retention": sum(t["retention"] for t in ts) / len(ts),
                    "mean_total_ratio": sum(t["total_ratio"] for t in ts) / len(ts),
                    "mean_non_embedding_ratio": sum(t["non_embedding_ratio"] for t in ts) / len(ts),
                    "per_task": sorted(ts, key=lambda t: t["task"])})
    return res


def head_to_head(summary, ours: str, other: str) -> list[dict]:
    """Per ratio and task: our mean retention against ``other``'s (same tasks, same seeds)."""
    res = []
    by = {(s["method"], s["ratio"]): {t["task"]: t for t in s["per_task"]} for s in summary}
    for ratio in sorted({s["ratio"] for s in summary}):
        a, b = by.get((ours, ratio), {}), by.get((other, ratio), {})
        for task in sorted(set(a) & set(b)):
            res.append({"ratio": ratio, "task": task, "seeds": min(a[task]["seeds"], b[task]["seeds"]),
                        ours: a[task]["retention"], other: b[task]["retention"],
                        "difference_points": 100 * (a[task]["retention"] - b[task]["retention"]),
                        "higher": a[task]["retention"] > b[task]["retention"]})
    return res


def merge(paths) -> dict:
    """One report from several runs (e.g. separate device calls, or seeds): rows keep their seed."""
    rows, args = [], []
    model = None
    for p in paths:
        r = json.loads(Path(p).read_text())
        model = model or r["model"]
        if r["model"] != model:
            raise SystemExit(f"{p} is a run of {r['model']}, not {model}: merge runs of one model")
        a = r.get("args", {})
        args += a if isinstance(a, list) else [a]  # a merged report holds its sources' args
        for x in r["rows"]:
            x.setdefault("seed", a.get("seed", 0) if isinstance(a, dict) else 0)
            rows.append(x)
    rep = {"model": model, "rows": rows, "errors": [], "merged_from": [str(p) for p in paths], "args": args}
    return rep


def markdown(rep) -> str:
    bases = sorted({r.get("basis", "total") for r in rep["rows"]}) or ["total"]
    lines = [f"### {rep['model']}: compression at equal budgets", "", f"The ratio column counts {' / '.join(bases)} parameters.", "",
             "| task | ratio | method | seed | teacher | int8 bundle | retention | total params (x fewer) | "
             "non-embedding (x fewer) | bundle bytes | p50 ms |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rep["rows"]:
        p50 = f"{r['p50_ms']:.2f}" if r.get("p50_ms") else "-"
        lines.append(f"| {r['task']} | {r['ratio']:g}x | {r['method']} | {r.get('seed', 0)} | {r['teacher_accuracy']:.4f} | "
                     f"{r['accuracy_bundle']:.4f} | {r['retention']:.1%} | {r['total']:,} ({r['total_ratio']:.1f}x) | "
                     f"{r['non_embedding']:,} ({r['non_embedding_ratio']:.1f}x) | {r['bundle_bytes']:,} | {p50} |")
    for e in rep.get("errors", []):
        lines.append(f"| {e['task']} | {e['ratio']:g}x | {e['method']} | - | - | did not run: {e['error'][:90]} | | | | | |")
    lines += ["", "| method | ratio | tasks | seeds | mean retention | mean total x fewer | mean non-embedding x fewer |",
              "|---|---|---|---|---|---|---|"]
    for s in rep["summary"]:
        lines.append(f"| {s['method']} | {s['ratio']:g}x | {s['tasks']} | {s['seeds']} | {s['mean_retention']:.1%} | "
                     f"{s['mean_total_ratio']:.1f} | {s['mean_non_embedding_ratio']:.1f} |")
    methods = {s["method"] for s in rep["summary"]}
    ours = next((m for m in ("probscale-iter", "probscale") if m in methods), None)
    for other in ("textpruner", "bottom"):
        h2h = head_to_head(rep["summary"], ours, other) if ours and other in methods else []
        if h2h:
            lines += ["", f"| ratio | task | seeds | {ours} retention | {other} retention | difference (points) |",
                      "|---|---|---|---|---|---|"]
            for h in h2h:
                lines.append(f"| {h['ratio']:g}x | {h['task']} | {h['seeds']} | {h[ours]:.2%} | {h[other]:.2%} | "
                             f"{h['difference_points']:+.2f} |")
            for ratio in sorted({h["ratio"] for h in h2h}):
                hs = [h for h in h2h if h["ratio"] == ratio]
                lines.append(f"\n{ours} higher than {other} at {ratio:g}x on {sum(h['higher'] for h in hs)} of {len(hs)} tasks.")
    return "\n".join(lines) + "\n"


def plot(rep, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from probscale_edge.visual import plain_log_axis

    tasks = sorted({r["task"] for r in rep["rows"]})
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.8), squeeze=False)
    marks = {"probscale": "o", "probscale-iter": "*", "bottom": "s", "random": "^", "textpruner": "D"}
    for ax, t in zip(axes[0], tasks):
        rs = [r for r in rep["rows"] if r["task"] == t]
        if rs:
            ax.axhline(rs[0]["teacher_accuracy"], color="k", lw=0.8, ls="--", label="teacher")
            ax.scatter([rs[0]["full_total"] / 1e6], [rs[0]["teacher_accuracy"]], c="k", marker="*", s=80)
        for m in METHODS:
            pts = sorted((r["total"] / 1e6, r["accuracy_bundle"]) for r in rs if r["method"] == m)
            if pts:
                ax.plot(*zip(*pts), marker=marks[m], label=m, color=f"C{METHODS.index(m)}")  # one colour per method
        plain_log_axis(ax, [r["total"] / 1e6 for r in rs] + [r["full_total"] / 1e6 for r in rs[:1]])  # plain ticks
        ax.set_title(t)
        ax.set_xlabel("total parameters (millions)")
        ax.set_ylabel("accuracy (int8 bundle)")
        ax.grid(alpha=0.3)
    legend = {n: h for ax in axes[0] for h, n in zip(*ax.get_legend_handles_labels())}  # every method, not panel 1's
    axes[0][0].legend(legend.values(), legend.keys(), fontsize=8)
    fig.suptitle(f"{rep['model']}: accuracy against size")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--task", action="append", default=None)
    ap.add_argument("--ratios", type=float, nargs="+", default=[5, 10])
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--embedding-rank", type=int, default=None, help="default: hidden size / 6")
    ap.add_argument("--target", default="x86_64")
    ap.add_argument("--max-train", type=int, default=4000)
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--student-lr", type=float, default=1e-4)
    ap.add_argument("--student-epochs", type=float, default=None, help="recovery epochs (default: --epochs)")
    ap.add_argument("--distill-hidden", type=float, default=0.0,
                    help="hidden-state distillation weight of the distilled methods (0: logits only)")
    ap.add_argument("--augment", type=int, default=0,
                    help="augmented distillation of the distilled methods: perturbed copies per training example")
    ap.add_argument("--basis", choices=("total", "non-embedding"), default="total",
                    help="what --ratios count: total or non-embedding parameters")
    ap.add_argument("--layer-factor", type=float, default=2.0,
                    help="layers are chosen under this multiple of the budget, then cut by units")
    ap.add_argument("--prune-iterations", type=int, default=8, help="re-scored pruning steps of probscale-iter")
    ap.add_argument("--textpruner-examples", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="bundles/compression")
    ap.add_argument("--json", default=None)
    ap.add_argument("--resume", action="store_true",
                    help="keep rows already in --json and skip them; an interrupted build resumes from its checkpoints")
    ap.add_argument("--latency", action="store_true", help="measure the int8 bundles' p50 (needs the bundles here)")
    ap.add_argument("--latency-only", action="store_true", help="only (re)measure latency of the rows in --json")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="combine finished runs (e.g. seeds) into --json")
    a = ap.parse_args(argv)
    tasks = a.task or ["rotten_tomatoes", "sms_spam", "trec6", "reuters_r8"]
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        ap.error(f"unknown method(s) {bad}: use {', '.join(METHODS)}")
    short = Path(a.model).name.lower().replace("all-", "").split("-")[0]
    json_path = Path(a.json or f"benchmarks/compression/results/{short}.json")
    rep = {"model": a.model, "rows": [], "errors": [], "args": vars(a)}
    if (a.resume or a.latency_only) and json_path.exists():
        old = json.loads(json_path.read_text())
        rep["rows"], rep["errors"] = old.get("rows", []), []
    if a.embedding_rank is None:
        from transformers import AutoConfig

        from probscale_edge.modeling import resolve_model

        c = AutoConfig.from_pretrained(str(resolve_model(a.model)))
        a.embedding_rank = c.hidden_size // 6
    rep["embedding_rank"] = a.embedding_rank

    def save():
        rep["summary"] = summarize(rep["rows"])
        methods = {r["method"] for r in rep["rows"]}
        ours = next((m for m in ("probscale-iter", "probscale") if m in methods), None)
        rep["head_to_head"] = {o: head_to_head(rep["summary"], ours, o) for o in ("textpruner", "bottom")
                               if ours and o in methods}
        json_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = json_path.with_suffix(".json.part")
        tmp.write_text(json.dumps(rep, indent=1, default=str))
        os.replace(tmp, json_path)

    if a.merge:
        rep = merge(a.merge)
    done = {(r["task"], r["ratio"], r["method"], r.get("seed", 0)) for r in rep["rows"]}
    if not (a.latency_only or a.merge):
        for task in tasks:
            for ratio in a.ratios:
                ours = next((r for r in rep["rows"] if (r["task"], r["ratio"], r.get("seed", 0)) == (task, ratio, a.seed)
                             and r["method"].startswith("probscale")), None)
                for method in methods:
                    if (task, ratio, method, a.seed) in done:
                        continue
                    out = Path(a.work) / f"{short}-{Path(task).stem}-{ratio:g}x-{method}"
                    _log(f"==== {a.model} {task} {ratio:g}x {method}")
                    try:
                        m, secs, extra = build_method(a, task, ratio, method, out, ours)
                        row = {**_row(m, task, ratio, method, out, secs, extra), "seed": a.seed}
                        rep["rows"].append(row)
                        if method.startswith("probscale") and ours is None:
                            ours = row
                        _log(f"     -> {row['accuracy_bundle']:.4f} ({row['retention']:.1%}), {row['total']:,} params "
                             f"({row['total_ratio']:.1f}x)")
                    except Exception as e:  # noqa: BLE001 - one failing method must not lose the others
                        _log(f"     !! {type(e).__name__}: {e}")
                        rep["errors"].append({"task": task, "ratio": ratio, "method": method,
                                              "error": f"{type(e).__name__}: {e}"})
                    save()
    if a.latency or a.latency_only:
        _log("measuring int8 bundle latency (interleaved) ...")
        bench_latency(rep["rows"], a.runs, 1, 128)
    save()
    md = markdown(rep)
    json_path.with_suffix(".md").write_text(md)
    plot(rep, json_path.with_suffix(".png"))
    print(md)
    return rep


if __name__ == "__main__":
    main()
