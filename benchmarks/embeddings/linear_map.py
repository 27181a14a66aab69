"""What a linear map after pooling would add to an embedding bundle's fidelity (issue 22): fit ``W`` (with a bias)
by ridge least squares from the bundle's embeddings of the training texts to the teacher's, apply it to the eval
texts, renormalize, and compare the mean cosine to the teacher before and after. No training of the bundle.

    python benchmarks/embeddings/linear_map.py BUNDLE [BUNDLE ...] --json benchmarks/embeddings/results/linear-map.json

The teacher, tasks and texts are the build's (``prepare_embed``/``teacher_embed`` on the four built-in tasks, its
embeddings from the cache); the bundle runs in the torch-free runtime. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

TASKS = ("rotten_tomatoes", "sms_spam", "trec6", "reuters_r8")


def _with_bias(x: np.ndarray) -> np.ndarray:
    return np.hstack([x, np.ones((len(x), 1), x.dtype)])


def _mean_cosine(unit_a: np.ndarray, unit_b: np.ndarray) -> float:
    return float((unit_a * unit_b).sum(1).mean())


def fit_map(student: np.ndarray, teacher: np.ndarray, ridge: float) -> np.ndarray:
    """``W`` ([d + 1, d]) minimizing ||[S, 1] W - T||^2 + ridge ||W||^2."""
    a = _with_bias(student).astype(np.float64)
    return np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ teacher.astype(np.float64))


def apply_map(student: np.ndarray, w: np.ndarray) -> np.ndarray:
    from sklearn.preprocessing import normalize

    return normalize(_with_bias(student) @ w)


def one_bundle(bundle: Path, run, t, ridges) -> dict:
    from runtime.predictor import Predictor

    p = Predictor(bundle, threads=2)
    train = p.embed(t.train_texts)
    evals = {task.name: p.embed(list(task.eval.texts)) for task in run.tasks}
    row = {"bundle": str(bundle), "train_mean_cosine": _mean_cosine(train, t.train_emb),
           "before": {k: _mean_cosine(v, t.eval_emb[k]) for k, v in evals.items()}, "after": {}}
    for r in ridges:
        w = fit_map(train, t.train_emb, r)
        row["after"][str(r)] = {k: _mean_cosine(apply_map(v, w), t.eval_emb[k]) for k, v in evals.items()}
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--ridge", default="0.01,1", help="ridge strengths, comma-separated")
    ap.add_argument("--json", required=True)
    a = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runtime/ beside probscale_edge/

    from rich.console import Console
    from rich.table import Table

    from probscale_edge.config import BuildConfig, TaskSpec
    from probscale_edge.pipeline.embed import prepare_embed, teacher_embed

    cfg = BuildConfig.create(model=a.model, kind="embed", tasks=tuple(TaskSpec(x) for x in TASKS),
                             output="/tmp/probscale-linear-map-unused", force=True)
    run = prepare_embed(cfg, lambda m: print(m, file=sys.stderr, flush=True))
    t = teacher_embed(run)
    ridges = [float(x) for x in a.ridge.split(",")]
    rows = [one_bundle(b, run, t, ridges) for b in a.bundles]
    table = Table(title="mean cosine to the teacher (mean of the four tasks), before and after a fitted linear map")
    for col in ("bundle", "train texts", "eval, as built", *(f"eval, mapped (ridge {r:g})" for r in ridges)):
        table.add_column(col)
    for row in rows:
        mean = {"before": np.mean(list(row["before"].values())),
                **{str(r): np.mean(list(row["after"][str(r)].values())) for r in ridges}}
        table.add_row(Path(row["bundle"]).name, f"{row['train_mean_cosine']:.4f}", f"{mean['before']:.4f}",
                      *(f"{mean[str(r)]:.4f}" for r in ridges))
    Console(stderr=True).print(table)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps({"model": a.model, "tasks": TASKS, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
