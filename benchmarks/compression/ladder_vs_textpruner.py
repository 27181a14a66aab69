"""The default build's ladder against TextPruner at an equal budget, on the same teacher, in one run (issue 19).

For one model, task and seed:

1. ``ladder``: the default build walked down to ``--ratio`` (``probscale-edge build --ladder 2,3,5,8,10
   --min-retention 0.5 --time-budget 0``: the low floor makes the walk reach the last rung);
2. ``textpruner``: that build's own fine-tuned teacher (from the build cache) pruned by TextPruner 1.1 (PyPI
   ``textpruner``: iterative head and FFN pruning, even per layer; ``textpruner_baseline.py``) to the encoder size
   the ladder's bundle kept, then built from that teacher with the same embedding side (the recipe's vocabulary
   trim, the shipped rung's embedding rank) and the same recovery (the recipe's distillation: hidden states,
   augmentation, learning rate) for as many epochs as the walk distilled in all.

Both int8 bundles are scored on the whole eval split against the one teacher. One JSON per run; ``--collect``
merges runs into one file of rows in ``run.py``'s form (``summary.py`` reads it) and prints the table (seed
means, the seed-to-seed spread and the difference per task).

    python benchmarks/compression/ladder_vs_textpruner.py --task rotten_tomatoes --seed 0 --json runs/rt-s0.json
    python benchmarks/compression/ladder_vs_textpruner.py --collect runs/*.json \\
        --json benchmarks/compression/results/minilm-ladder-vs-textpruner.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
LADDER = (2.0, 3.0, 5.0, 8.0, 10.0)


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def _build(**flat) -> tuple[dict, float]:
    from probscale_edge.pipeline import BuildConfig, build

    t0 = time.time()
    return build(BuildConfig.create(**flat), log=_log), time.time() - t0


def _row(m: dict, method: str, ratio: float, teacher_accuracy: float, seconds: float, **extra) -> dict:
    p, acc = m["parameters"], m["validation"]["accuracy"]["bundle"]
    return {"task": m["task"]["name"], "ratio": ratio, "method": method, "seed": m["build_config"]["seed"],
            "teacher_accuracy": teacher_accuracy, "accuracy_bundle": acc, "retention": acc / teacher_accuracy,
            "total": p["pruned"]["total"], "non_embedding": p["pruned"]["non_embedding"],
            "encoder_non_embedding": p["pruned"].get("encoder_non_embedding"), "total_ratio": p["ratio_total"],
            "non_embedding_ratio": p["ratio_non_embedding"], "basis": "total",
            "kept_layers": m["subnetwork"]["spec"]["keep_layers"], "layer_shapes": m["subnetwork"]["layer_shapes"],
            "bundle_bytes": m["sizes"]["bundle_model_bytes"],
            "embedding_rank": shipped_rank(m),
            "teacher_key": m["stages"]["finetune"]["key"],
            "seconds": round(seconds, 1), **extra}


def infeasible(m1: dict, ratio: float, target: int, why: str) -> dict:
    """TextPruner's row where it cannot reach the ladder's encoder size (no accuracy: no model exists)."""
    return {"task": m1["task"]["name"], "ratio": ratio, "method": "textpruner", "seed": m1["build_config"]["seed"],
            "retention": None, "infeasible": why, "target_encoder_non_embedding": target,
            "teacher_key": m1["stages"]["finetune"]["key"]}


def from_ladder_manifest(m1: dict, ratio: float, seconds: float, target_error: str | None = None) -> list[dict]:
    """The ladder's row (and TextPruner's infeasible one) from a finished ladder manifest."""
    lad = m1["ladder"]
    walked = lad["rungs"][:lad["chosen"] + 1]
    teacher_acc = m1["validation"]["accuracy"]["full_finetuned_torch_fp32"]
    rows = [_row(m1, "ladder", ratio, teacher_acc, seconds, rung_epochs=sum(r["epochs"] for r in walked),
                 actions=[r["action"] for r in walked], layer_share=m1["build_config"]["goal"].get("layer_share"))]
    if target_error:
        rows.append(infeasible(m1, ratio, m1["parameters"]["pruned"]["encoder_non_embedding"], target_error))
    return rows


def _textpruner_spec(teacher_dir: Path, task: str, max_train: int, target: int, seed: int) -> tuple[dict, dict]:
    from textpruner_baseline import prune_with_textpruner, spec_of

    from probscale_edge.data import load_task
    from probscale_edge.modeling import load_classifier

    model, tok, _ = load_classifier(teacher_dir)
    rep = prune_with_textpruner(copy.deepcopy(model), tok, load_task(task, max_train=max_train).train, target,
                                seed=seed, log=_log)
    return spec_of(rep), {k: rep[k] for k in ("config", "seconds", "textpruner_version") if k in rep}


def run_pair(a) -> dict:
    from probscale_edge.assets import cache_dir

    work = Path(a.work) / f"{Path(a.model).name}-{a.task}-s{a.seed}"
    common = dict(tasks=[_task(a.task)], target=a.target, max_train=a.max_train or None, seed=a.seed, force=True)
    chosen = {"embedding_rank": a.embedding_rank} if a.embedding_rank is not None else {}  # else the recipe's
    if a.layer_share is not None:
        chosen["layer_share"] = a.layer_share
    ladder = tuple(r for r in LADDER if r < a.ratio) + (a.ratio,)
    _log(f"==== {a.model} {a.task} seed {a.seed}: the ladder {ladder}")
    m1, s1 = _build(model=a.model, output=str(work / "ladder"), ladder=ladder, min_retention=0.5, time_budget=0,
                    **chosen, **common)
    recipe = m1["recipe"]["values"]
    rows = from_ladder_manifest(m1, a.ratio, s1)
    teacher_acc, epochs = rows[0]["teacher_accuracy"], rows[0]["rung_epochs"]
    teacher_dir = cache_dir() / "teachers" / m1["stages"]["finetune"]["key"]
    target = m1["parameters"]["pruned"]["encoder_non_embedding"]
    _log(f"==== textpruner to {target:,} encoder parameters on the ladder's teacher {teacher_dir.name}")
    t0 = time.time()
    try:
        spec, tp = _textpruner_spec(teacher_dir, a.task, a.max_train or None, target, a.seed)
    except ValueError as e:  # the budget is below TextPruner's smallest model (it keeps every layer)
        _log(f"     textpruner: no model at this budget ({e})")
        rows.append(infeasible(m1, a.ratio, target, str(e)))
        return {"model": a.model, "rows": rows, "args": vars(a)}
    m2, _ = _build(model=str(teacher_dir), output=str(work / "textpruner"), spec=spec,
                    trim_vocab=recipe["trim_vocab"], vocab_min_count=recipe["vocab_min_count"],
                    embedding_rank=shipped_rank(m1), recover_mode="distill", student_epochs=epochs,
                    student_lr=recipe["student_lr"], distill_hidden=recipe["distill_hidden"],
                    augment=recipe["augment"], **common)
    rows.append(_row(m2, "textpruner", a.ratio, teacher_acc, time.time() - t0, textpruner=tp,
                     student_epochs=epochs, teacher_accuracy_as_loaded=m2["stages"]["finetune"]["accuracy"],
                     layer_share=rows[0]["layer_share"]))  # the ladder's: it set the rank TextPruner is built at
    for r in rows:
        _log(f"     {r['method']}: {r['accuracy_bundle']:.4f} ({r['retention']:.2%}), {r['total']:,} parameters "
             f"({r['total_ratio']:.2f}x)")
    return {"model": a.model, "rows": rows, "args": vars(a)}


def shipped_rank(m1: dict) -> int:
    """The embedding rank of the ladder's shipped rung (deep rungs may lower the recipe's: ladder.rung_rank); a
    one-size build's or an older manifest's (rungs did not record it): the recipe's."""
    chosen = m1["ladder"]["rungs"][m1["ladder"]["chosen"]] if m1.get("ladder") else {}
    if "embedding_rank" not in chosen:
        return m1["recipe"]["values"]["embedding_rank"]
    return chosen["embedding_rank"] or 0  # None: the shipped rung kept its embedding dense


def _task(name):
    from probscale_edge.pipeline import TaskSpec

    return TaskSpec(name)


def collect(paths) -> dict:
    rows, model = [], None
    for p in paths:
        d = json.loads(Path(p).read_text())
        model = model or Path(d["model"]).name  # a device path names the same model
        rows += d["rows"]
    return {"model": model, "rows": rows, "merged_from": [str(p) for p in paths], "table": table(rows)}


def table(rows) -> list[dict]:
    """Per task and method: the seeds, their mean and spread (max - min) of retention; the difference of means."""
    out = []
    for task in sorted({r["task"] for r in rows}):
        line = {"task": task}
        for method in ("ladder", "textpruner"):
            every = [r for r in rows if r["task"] == task and r["method"] == method]
            rs = sorted((r for r in every if r.get("retention") is not None), key=lambda r: r["seed"])
            ret = [r["retention"] for r in rs]
            line.setdefault("infeasible", []).extend(f"{method} seed {r['seed']}: {r['infeasible']}"
                                                     for r in every if r.get("infeasible"))
            line[method] = {"seeds": [r["seed"] for r in rs], "retention": ret,
                            "mean": statistics.mean(ret) if ret else None,
                            "spread": max(ret) - min(ret) if len(ret) > 1 else None,
                            "total_ratio": [round(r["total_ratio"], 2) for r in rs]}
        a, b = line["ladder"]["mean"], line["textpruner"]["mean"]
        line["difference_points"] = None if a is None or b is None else 100 * (a - b)
        out.append(line)
    return out


def markdown(rep) -> str:
    pct = lambda x: "-" if x is None else f"{x:.2%}"  # noqa: E731
    lines = ["| task | ladder, by seed | ladder mean | textpruner, by seed | textpruner mean | difference (points) "
             "| larger seed spread (points) | ratio (ladder / textpruner) |", "|---" * 8 + "|"]
    for t in rep["table"]:
        la, tp = t["ladder"], t["textpruner"]
        spread = max([s for s in (la["spread"], tp["spread"]) if s is not None], default=None)
        tp_mean = "no model at this budget" if t["infeasible"] and tp["mean"] is None else pct(tp["mean"])
        lines.append(f"| {t['task']} | {' / '.join(pct(x) for x in la['retention'])} | {pct(la['mean'])} "
                     f"| {' / '.join(pct(x) for x in tp['retention'])} | {tp_mean} "
                     f"| {'-' if t['difference_points'] is None else format(t['difference_points'], '+.2f')} "
                     f"| {'-' if spread is None else format(100 * spread, '.2f')} "
                     f"| {', '.join(map(str, la['total_ratio']))} / {', '.join(map(str, tp['total_ratio'])) or '-'} |")
    means = [(t["ladder"]["mean"], t["textpruner"]["mean"]) for t in rep["table"]]
    if means and all(x is not None and y is not None for x, y in means):
        lines.append(f"| **mean** | | {pct(statistics.mean(x for x, _ in means))} | | "
                     f"{pct(statistics.mean(y for _, y in means))} | | | |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--task", default="rotten_tomatoes")
    ap.add_argument("--ratio", type=float, default=10.0, help="the ladder's last rung (times fewer total parameters)")
    ap.add_argument("--target", default="x86_64")
    ap.add_argument("--max-train", type=int, default=0,
                    help="training rows (0: all). The ladder's vocabulary reads every training row but its dev split, "
                         "a one-size build only the rows it trains on: under a cap the two vocabularies differ")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--embedding-rank", type=int, default=None,
                    help="the ladder's embedding rank (default: the recipe's); TextPruner's build takes the same")
    ap.add_argument("--layer-share", type=float, default=None,
                    help="the ladder's --layer-share (default: the build's); TextPruner takes the rank it led to")
    ap.add_argument("--work", default="bundles/ladder-vs-textpruner")
    ap.add_argument("--collect", nargs="+", metavar="JSON", help="merge finished runs into --json and print the table")
    ap.add_argument("--json", required=True)
    a = ap.parse_args(argv)
    rep = collect(a.collect) if a.collect else run_pair(a)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(rep, indent=1, default=str))
    if a.collect:
        md = markdown(rep)
        Path(a.json).with_suffix(".md").write_text(md)
        print(md)
    return rep


if __name__ == "__main__":
    main()
