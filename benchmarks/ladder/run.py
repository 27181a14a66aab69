"""The default build on the built-in tasks: the ladder of each, the rung it ships, and the same at other floors.

For every task and every --min-retention floor, one `build` with nothing else set (the default recipe, the
default ladder), as a user runs `probscale-edge build --task TASK --min-retention F`. Per rung: target and
measured total-parameter ratio, total and non-embedding parameters, int8 bytes, p50 (batch 1, 1 thread, the
build machine), dev and eval accuracy, the action taken (width cut or the probes' layer drop) and the width-only
candidate's dev accuracy at that rung. Per build: the rung shipped, its int8 bundle's eval accuracy and retention
(bundle eval accuracy over the full fine-tuned model's), and the build's seconds. Teachers are cached, so the
second floor re-uses the first one's fine-tune. Writes JSON and prints the tables.

    python benchmarks/ladder/run.py --tasks rotten_tomatoes sms_spam trec6 reuters_r8 --floors 0.99 0.97 \
        --json benchmarks/ladder/results/minilm.json
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


def summarize(m: dict, seconds: float) -> dict:
    lad = m["ladder"]
    c = lad["rungs"][lad["chosen"]]
    v = m["validation"]
    keys = ("rung", "target_ratio", "ratio_total", "total_params", "non_embedding_params", "bytes", "p50_ms",
            "dev_accuracy", "eval_accuracy", "retention", "action", "width_only_dev_accuracy", "candidates", "meets",
            "embedding", "epochs", "seconds", "layers", "layer_shapes", "depth_cap", "predicted_ms")
    return {"task": m["task"]["name"], "floor": lad["constraints"]["min_retention"],
            "seed": m.get("build_config", {}).get("seed", 0), "ladder": lad["ladder"], "seconds": round(seconds, 1),
            "full": lad["full"], "uncut_int8": lad["uncut_int8"], "stopped": lad["stopped"], "chosen": lad["chosen"],
            "rungs": [{k: r.get(k) for k in keys} for r in lad["rungs"]],
            "shipped": {"rung": c["rung"], "ratio_total": m["parameters"]["ratio_total"],
                        "total_params": m["parameters"]["pruned"]["total"],
                        "bytes": m["sizes"]["bundle_model_bytes"], "precision": m["quantization"]["precision"],
                        "bundle_eval_accuracy": v["accuracy"]["bundle"],
                        "full_eval_accuracy": v["accuracy"]["full_finetuned_torch_fp32"],
                        "eval_retention": v["retention"], "dev_retention": c["retention"], "action": c["action"],
                        # both candidates after the same short distillation (the ladder's like-for-like test)
                        # None: the depth cap of a latency budget left width alone out
                        "probe_choice_gain_dev": (c["candidates"][c["action"]] - c["candidates"]["width"]
                                                  if "width" in c["candidates"] else None)},
            "recipe": m["recipe"]["values"]}


def collected(folder: Path) -> list[dict]:
    """Rows of builds run elsewhere: a bundle's manifest, or the one error line of a build's log."""
    import re

    rows = []
    for log in sorted(folder.glob("*.log")):
        m = log.with_suffix("") / "manifest.json"
        if m.exists():
            man = json.loads(m.read_text())
            rows.append(summarize(man, man["build_seconds"]))
            continue
        text = log.read_text(errors="replace")
        task = re.search(r"^task (\S+):", text, re.M)
        floor = re.search(r"\(floor ([0-9.]+)%", text)
        err = re.search(r"^error: .*$", text, re.M)
        if task and floor and err:
            rows.append({"task": task.group(1), "floor": round(float(floor.group(1)) / 100, 4), "error": err.group(0),
                         "seconds": None})
    return sorted(rows, key=lambda r: (-r["floor"], r["task"]))


def _or_dash(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def table(rows: list[dict]) -> str:
    out = ["| task | floor | rung | target | ratio | non-emb params | int8 MB | p50 ms | dev | eval | retention (dev) "
           "| action | width-only dev | shipped |", "|---" * 14 + "|"]
    for r in rows:
        for g in r["rungs"]:
            out.append(f"| {r['task']} | {r['floor']:g} | {g['rung']} | {g['target_ratio']:g}x | {g['ratio_total']:.2f}x "
                       f"| {g['non_embedding_params']:,} | {g['bytes'] / 1e6:.2f} | {g['p50_ms']:.2f} "
                       f"| {g['dev_accuracy']:.4f} | {g['eval_accuracy']:.4f} | {g['retention']:.1%} | {g['action']} "
                       f"| {_or_dash(g['width_only_dev_accuracy'])} "
                       f"| {'**yes**' if g is r['rungs'][r['chosen']] else ''} |")
    return "\n".join(out)


def _versus(rung: dict) -> str:
    """The candidates of a rung, all measured: "drop layer 5 0.8130 vs width 0.8145 (-0.15)"; under a latency
    budget's depth cap width alone is not one: "drop layers 3, 7 0.8205 vs drop layers 3, 6, 7 0.8190"."""
    c = dict(rung["candidates"])
    if "width" not in c:
        return " vs ".join(f"{k} {v:.4f}" for k, v in c.items()) + f" (depth cap {rung.get('depth_cap')})"
    width = c.pop("width")
    if not c:
        return f"width only {width:.4f} (one layer left: no drop)"
    (drop, acc), = c.items()
    return f"{drop} {acc:.4f} vs width {width:.4f} ({100 * (acc - width):+.2f})"


def shipped_table(rows: list[dict]) -> str:
    out = ["| task | floor | shipped rung | total-param ratio | bundle MB | bundle eval acc | full eval acc "
           "| eval retention | dev retention | the probes' layer drop vs width only (dev, same short distillation) | build s |",
           "|---" * 11 + "|"]
    for r in rows:
        s = r["shipped"]
        out.append(f"| {r['task']} | {r['floor']:g} | {s['rung']} ({s['action']}) | {s['ratio_total']:.2f}x "
                   f"| {s['bytes'] / 1e6:.2f} | {s['bundle_eval_accuracy']:.4f} | {s['full_eval_accuracy']:.4f} "
                   f"| {s['eval_retention']:.1%} | {s['dev_retention']:.1%} | {_versus(r['rungs'][r['chosen']])} "
                   f"| {r['seconds']:.0f} |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--tasks", nargs="+", default=["rotten_tomatoes", "sms_spam", "trec6", "reuters_r8"])
    ap.add_argument("--floors", type=float, nargs="+", default=[0.99, 0.97])
    ap.add_argument("--target", default="arm64")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="bundles/ladder")
    ap.add_argument("--json", default="benchmarks/ladder/results/ladder.json")
    ap.add_argument("--tables", action="store_true", help="only print the tables of the rows already in --json")
    ap.add_argument("--from", dest="from_dir", help="add the builds run elsewhere (DIR/NAME/manifest.json, and "
                    "DIR/NAME.log for the builds that wrote no bundle) instead of building here")
    a = ap.parse_args(argv)
    if a.tables or a.from_dir:
        a.tasks = []

    from probscale_edge.errors import ProbscaleError
    from probscale_edge.pipeline import BuildConfig, TaskSpec, build

    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = json.loads(out.read_text())["rows"] if out.exists() else []
    if a.from_dir:
        rows += collected(Path(a.from_dir))
        out.write_text(json.dumps({"model": a.model, "machine": f"collected from {a.from_dir}", "rows": rows}, indent=1))
    done = {(r["task"], r["floor"]) for r in rows}
    for floor in a.floors:
        for task in a.tasks:
            if (task, floor) in done:
                continue
            _log(f"== {task} at --min-retention {floor:g}")
            t0 = time.time()
            cfg = BuildConfig.create(model=a.model, tasks=[TaskSpec(task)], target=a.target, seed=a.seed,
                                     min_retention=floor, force=True,
                                     output=str(Path(a.work) / f"{task}-{floor:g}"))
            try:
                m = build(cfg, log=_log)
            except ProbscaleError as e:
                rows.append({"task": task, "floor": floor, "error": e.line(), "seconds": round(time.time() - t0, 1)})
                out.write_text(json.dumps({"model": a.model, "machine": platform.node(), "rows": rows}, indent=1))
                continue
            rows.append(summarize(m, time.time() - t0))
            out.write_text(json.dumps({"model": a.model, "machine": platform.node(), "rows": rows}, indent=1))
    ok = [r for r in rows if "error" not in r]
    print(shipped_table(ok))
    print()
    print(table(ok))
    for r in rows:
        if "error" in r:
            print(f"{r['task']} at {r['floor']:g}: {r['error']}")


if __name__ == "__main__":
    main()
