"""Latency budgets: does `build --max-latency-ms` land on its budget, and what accuracy does each buy?

For one model and task: a latency table measured on this machine (`probscale-edge latency-table`),
then one build per budget (same teacher, probes and recipe; only --max-latency-ms differs), then
every bundle timed in blocks, pass after pass (batch 1, sequence --seq, 1 thread), so machine noise
hits all alike. Per budget: predicted ms, measured p50, measured/predicted, and the bundle's
accuracy on the whole eval split. Writes JSON and a markdown table.

    python benchmarks/latency_budget/run.py --task sms_spam --budgets 4 6 9 \
        --json benchmarks/latency_budget/results/minilm-sms_spam.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path


def _log(m):
    print(m, file=sys.stderr, flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--task", default="sms_spam")
    ap.add_argument("--budgets", type=float, nargs="+", default=[4, 6, 9])
    ap.add_argument("--target", default="x86_64", help="quantization preset (the table is timed with it)")
    ap.add_argument("--table", default=None, help="an existing latency table (default: measure one here)")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--embedding-rank", type=int, default=64)
    ap.add_argument("--work", default="bundles/latency_budget")
    ap.add_argument("--json", default="benchmarks/latency_budget/results/latency_budget.json")
    ap.add_argument("--retime", action="store_true", help="only time the bundles of the rows already in --json again")
    a = ap.parse_args(argv)

    from probscale_edge.pipeline import BuildConfig, TaskSpec, build
    from probscale_edge.select import SelectConfig

    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    table_path = Path(a.table) if a.table else out.with_name(out.stem + "-table.json")
    if a.retime:
        a.table = str(table_path)
    if not a.table:
        from probscale_edge.latency import measure_table
        from probscale_edge.modeling import EncoderClassifier, load_encoder
        from probscale_edge.runtime.bench import write_json

        enc, tok, _ = load_encoder(a.model)
        _log("measuring the latency table ...")
        t = measure_table(EncoderClassifier(enc, 2).eval(), tok, target=a.target, seq=a.seq, threads=1, runs=200,
                          model_name=a.model, log=_log)
        write_json(t.to_dict(), table_path)
    table = json.loads(table_path.read_text())

    rows = json.loads(out.read_text())["rows"] if a.retime else []
    for ms in [] if a.retime else a.budgets:
        dest = Path(a.work) / f"{Path(a.model).name}-{a.task}-{ms:g}ms"
        cfg = BuildConfig(model=a.model, tasks=[TaskSpec(a.task)], output=str(dest), target=a.target, force=True,
                          trim_vocab=True, embedding_rank=a.embedding_rank, max_latency_ms=ms,
                          latency_table=str(table_path), select=SelectConfig(granularity="unit", layer_factor=100),
                          latency_runs=5)
        _log(f"==== build at {ms:g} ms")
        t0 = time.time()
        m = build(cfg, log=_log)
        v = m["validation"]
        rows.append({"budget_ms": ms, "bundle": str(dest), "predicted_ms": m["latency_budget"]["predicted_ms"],
                     "accuracy": v["accuracy"]["bundle"], "teacher_accuracy": v["accuracy"]["full_finetuned_torch_fp32"],
                     "retention": v["retention"], "parameters": m["parameters"]["pruned"],
                     "layer_shapes": m["subnetwork"]["layer_shapes"], "build_seconds": round(time.time() - t0, 1),
                     "calibration": m["latency_budget"].get("calibration")})

    _log("timing every bundle (blocks of consecutive runs, pass after pass) ...")
    from probscale_edge.latency import time_bundles

    p50, _, by_pass = time_bundles([r["bundle"] for r in rows], a.seq, 1, a.runs, passes=10, per_pass=True)
    for r, med, ps in zip(rows, p50, by_pass):
        r["p50_ms"] = float(med)
        r["pass_p50_ms"] = ps
        r["passes_within_budget"] = sum(v <= r["budget_ms"] for v in ps)
        r["measured_over_predicted"] = r["p50_ms"] / r["predicted_ms"]
        r["within_budget"] = r["p50_ms"] <= r["budget_ms"]
    rep = {"model": a.model, "task": a.task, "seq": a.seq, "threads": 1, "runs": a.runs, "target": a.target,
           "machine": {"processor": table.get("device", {}).get("processor"), "machine": platform.machine()},
           "table": {k: table[k] for k in ("base_ms", "layer_ms", "head_ms", "neuron_ms", "max_relative_error")},
           "rows": rows}
    out.write_text(json.dumps(rep, indent=1))
    lines = [f"{a.model} on {a.task}: batch 1, sequence {a.seq}, 1 thread, {a.runs} runs per bundle in 10 passes "
             f"({rep['machine']['processor']}). Table: {table['base_ms']:.2f} ms + {table['layer_ms']:.3f}/layer + "
             f"{table['head_ms']:.4f}/head + {table['neuron_ms'] * 1000:.3f} us/neuron "
             f"(fit error <= {table['max_relative_error']:.1%}).", "",
             "| budget ms | predicted ms | measured in build (slowest pass) | measured p50 ms (passes: min-max) | "
             "within budget (passes) | accuracy (retention) | params total / non-emb. |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        pc = r["parameters"]
        cal = (r.get("calibration") or [{}])[-1]
        inb = f"{cal['measured_ms']:.2f} ({cal['slowest_pass_ms']:.2f})" if cal.get("slowest_pass_ms") else "-"
        lines.append(f"| {r['budget_ms']:g} | {r['predicted_ms']:.2f} | {inb} | {r['p50_ms']:.2f} "
                     f"({min(r['pass_p50_ms']):.2f}-{max(r['pass_p50_ms']):.2f}) | "
                     f"{'yes' if r['within_budget'] else 'NO'} ({r['passes_within_budget']}/{len(r['pass_p50_ms'])}) | "
                     f"{r['accuracy']:.4f} ({r['retention']:.1%}) | {pc['total'] / 1e6:.2f}M / "
                     f"{pc['non_embedding'] / 1e6:.2f}M |")
    md = "\n".join(lines) + "\n"
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
