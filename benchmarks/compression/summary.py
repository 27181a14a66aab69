"""Where the compression frontier stands: one file from every measured result in results/.

Reads the result files listed in SOURCES (benchmarks/compression/run.py rows, and benchmarks/ladder/run.py rows of
default-recipe builds walked down to a ratio), averages the seeds of each (model, ratio, task, method) and writes

- ``results/summary.json``: ``{model: {ratio: {task: {method: retention}}}}``, retention as a fraction (bundle
  eval accuracy over the full fine-tuned model's), the seeds averaged;
- ``results/summary.md``: the same as tables, with the seeds, their spread and the file each cell came from.

A method label names one recipe: rows of the same method under another recipe (another file) get the file's
suffix, so no cell mixes recipes. The files differ in teacher, training rows and machine (each file's note says
how); compare methods within one file, or read a cross-file comparison as the anecdote it is.

    python benchmarks/compression/summary.py
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).parent / "results"
LADDER = Path(__file__).parent.parent / "ladder" / "results"

# (file, suffix added to its method names, what differs): compression/run.py rows
SOURCES = [
    (HERE / "minilm.json", "", "H200, 4,000 training rows, one seed, one-shot selection"),
    (HERE / "minilm-iter.json", "", "H200, 4,000 training rows, two seeds where run, 8 pruning iterations"),
    (HERE / "minilm-aug-rt10.json", "+aug4", "2 CPU cores, 4,000 rows, --augment 4 for both methods"),
    (HERE / "minilm-reuters10.json", "", "2 CPU cores, 4,000 rows"),
    (HERE / "mpnet-8xne.json", "", "H200, ratio on non-embedding parameters (two recipes: see its README row)"),
    (HERE / "mpnet-hd.json", "", "H200, hidden-state distillation"),
    (HERE / "minilm-ladder-vs-textpruner.json", "/same-teacher",
     "ladder_vs_textpruner.py: the default ladder and TextPruner at its encoder size on the ladder's own teacher, "
     "all training rows; H200 (rotten_tomatoes, trec6: two seeds), 2 CPU cores (sms_spam, reuters_r8); the walk "
     "stopped at the width floor at 9.22x on rotten_tomatoes (no TextPruner model that small) and 9.52x on "
     "reuters_r8"),
    (HERE / "minilm-ladder-vs-textpruner-5x-3seeds.json", "/same-teacher",
     "ladder_vs_textpruner.py --ratio 5 (ladder 2x-3x-5x), three seeds: seed 2 and the sms_spam seed 0 and trec6 "
     "rows at 4b10168 (trec6 seeds 0-1 reproduced 706d0d0 exactly), the other rows at 706d0d0 "
     "(minilm-ladder-vs-textpruner-5x.json); lent H200s"),
    (HERE / "minilm-ladder-vs-textpruner-choose.json", "/same-teacher+choose",
     "ladder_vs_textpruner.py, the same walk under ladder.choose (a cut that reaches the rung's size wins), two "
     "seeds, code 706d0d0, one lent H200; rank 128 leaves no room for 10x on these two tasks (both candidates "
     "stopped short at the width floor)"),
    (HERE / "minilm-ladder-vs-textpruner-rank64.json", "/same-teacher+rank64",
     "ladder_vs_textpruner.py --embedding-rank 64 (ladder and TextPruner), two seeds, code 706d0d0, one lent H200"),
    (HERE / "minilm-ladder-vs-textpruner-rankfit-cpu.json", "/same-teacher+rankfit",
     "ladder_vs_textpruner.py, code 1687bb4: the ladder refits the rank at deep rungs (128 -> 96 at 8x -> 80 at "
     "10x), TextPruner at the shipped rank 80; one seed, 2 CPU cores"),
    (HERE / "minilm-ladder-vs-textpruner-10x-refit.json", "/same-teacher+share33",
     "ladder_vs_textpruner.py --ratio 10, code 416c5d1, --layer-share 1/3 (the refit rule as 1687bb4 shipped it: "
     "rank 80 rotten_tomatoes, 96 reuters_r8, 128 trec6 and sms_spam), TextPruner at the shipped rank; two seeds "
     "(three on trec6 and sms_spam), 20 runs on one lent H200"),
    (HERE / "minilm-ladder-vs-textpruner-10x-share045.json", "/same-teacher+share45",
     "ladder_vs_textpruner.py --ratio 10 --layer-share 0.45 (the default since: rank 64 rotten_tomatoes and "
     "reuters_r8, 96 trec6, 112 sms_spam), the same teachers as +share33 (paired by seed), TextPruner at the "
     "shipped rank; three seeds (sms_spam seed 1 at 11.6x for both; rotten_tomatoes and reuters_r8 seed 2 at 4b10168)"),
]
# ladder/run.py rows: the default build's recipe walked down a ladder ending at the ratio (--min-retention 0.5)
LADDER_SOURCES = [
    (HERE / "minilm-ladder10.json", "ladder", "H200, the default recipe walked 2x-3x-5x-8x-10x, rung epochs 1"),
    (HERE / "minilm-ladder10-e2.json", "ladder-e2", "H200, the same with 2 distillation epochs per rung"),
    (HERE / "mpnet-ladder10.json", "ladder",
     "H200, the default recipe, ladder 2x-3x-5x-8x-10x entered at 5x by the probes (sms_spam 8x), rung epochs 1"),
    (HERE / "mpnet-ladder10-latency11.json", "ladder+lat11",
     "H200, the same walk with --max-latency-ms 11 on this CPU's latency table (depth cap), target x86_64"),
]


def _ratio_key(ratio: float, basis: str | None) -> str:
    return f"{ratio:g}x" + ("" if basis in (None, "total") else f" {basis.replace('_', '-')}")


def cells() -> dict:
    """{(model, ratio, task, method): {"retentions": [...], "source": file, "note": ...}}"""
    out: dict = defaultdict(lambda: {"retentions": [], "ratios": [], "sources": {}})
    for path, suffix, note in SOURCES:
        if not path.exists():
            continue
        d = json.loads(path.read_text())
        for r in d["rows"]:
            if r.get("retention") is None:
                continue
            key = (d["model"], _ratio_key(r["ratio"], r.get("basis")), r["task"], r["method"] + suffix)
            c = out[key]
            c["retentions"].append(r["retention"])
            c["ratios"].append(r.get("total_ratio"))
            c["sources"][path.name] = note
    for path, method, note in LADDER_SOURCES:
        if not path.exists():
            continue
        d = json.loads(path.read_text())
        for r in d["rows"]:
            if "shipped" not in r:
                continue
            key = (d.get("model", "all-MiniLM-L6-v2"), _ratio_key(max(r["ladder"]), None), r["task"], method)
            c = out[key]
            c["retentions"].append(r["shipped"]["eval_retention"])
            c["ratios"].append(r["shipped"]["ratio_total"])
            c["sources"][path.name] = note
    return out


def summary(cs: dict) -> dict:
    tree: dict = {}
    for (model, ratio, task, method), c in sorted(cs.items()):
        tree.setdefault(model, {}).setdefault(ratio, {}).setdefault(task, {})[method] = round(
            statistics.fmean(c["retentions"]), 5)
    return tree


def markdown(cs: dict) -> str:
    lines = ["| model | ratio | task | method | retention (seed mean) | seeds | spread (points) | measured ratio | file |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (model, ratio, task, method), c in sorted(cs.items()):
        rs = c["retentions"]
        spread = f"{(max(rs) - min(rs)) * 100:.2f}" if len(rs) > 1 else "-"
        got = [x for x in c["ratios"] if x]
        measured = f"{min(got):.2f}-{max(got):.2f}x" if got and min(got) != max(got) else (f"{got[0]:.2f}x" if got else "-")
        lines.append(f"| {model} | {ratio} | {task} | {method} | {statistics.fmean(rs):.2%} | {len(rs)} | {spread} "
                     f"| {measured} | {', '.join(c['sources'])} |")
    means = defaultdict(list)
    for (model, ratio, task, method), c in cs.items():
        means[(model, ratio, method)].append((task, statistics.fmean(c["retentions"])))
    lines += ["", "Mean over the four built-in tasks, where a method has all four (a mean over cells from more than one "
              "file mixes runs, and says so):", "",
              "| model | ratio | method | mean retention | from |", "|---|---|---|---|---|"]
    for (model, ratio, method), vals in sorted(means.items()):
        if len({t for t, _ in vals}) == 4:
            notes = {}
            for k, c in cs.items():
                if (k[0], k[1], k[3]) == (model, ratio, method):
                    notes.update(c["sources"])
            src = "; ".join(f"{f} ({n})" for f, n in sorted(notes.items()))
            mixed = f"MIXES {len(notes)} files: " if len(notes) > 1 else ""
            lines.append(f"| {model} | {ratio} | {method} | {statistics.fmean(v for _, v in vals):.2%} | {mixed}{src} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    cs = cells()
    (HERE / "summary.json").write_text(json.dumps(summary(cs), indent=1) + "\n")
    md = markdown(cs)
    (HERE / "summary.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
