"""Factorization without retraining (benchmarks/ladder README, iteration 4): the fine-tuned teacher, vocabulary trimmed,
the word embedding factorized plain vs token-weighted at ranks 64-192 -> dev accuracy.

    python benchmarks/ladder/factorization.py rotten_tomatoes

results/factorization-rotten_tomatoes.json was measured when the vocabulary and the token weights read only the
4,000 training rows (11,960 tokens kept); the pipeline now gives them every training row but the dev split's,
so a re-run measures today's pipeline (a larger vocabulary), not the same numbers.
"""
import copy
import json
import sys
from pathlib import Path

from probscale_edge.config import BuildConfig, TaskSpec
from probscale_edge.embedding import factorize_embeddings, token_weights
from probscale_edge.pipeline import stages
from probscale_edge.pipeline.ladder import _dev_accuracy
from probscale_edge.pipeline.run import prepare
from probscale_edge.pipeline.student import embedding_side, task_texts

task = sys.argv[1] if len(sys.argv) > 1 else "rotten_tomatoes"
cfg = BuildConfig.create(tasks=(TaskSpec(task),), target="arm64")
run = prepare(cfg, lambda m: print(m, file=sys.stderr))
t = stages.teacher(run)
model, tok = embedding_side(run, t, copy.deepcopy(t.model), factorize_now=False)
print("full dev", _dev_accuracy(run, t.model, t.tokenizer), "trimmed dev", _dev_accuracy(run, model, tok))
V = model.adapter.word_embeddings(model.encoder).weight.shape[0]
w = token_weights(tok, task_texts(run), V, run.max_length)
rows = []
for rank in (64, 96, 128, 192):
    for name, ww in (("plain", None), ("weighted", w)):
        m = copy.deepcopy(model)
        rep = factorize_embeddings(m, rank, ww)
        acc = _dev_accuracy(run, m, tok)
        rows.append((rank, name, rep.energy_kept, rep.relative_error, acc))
        print(rank, name, f"energy {rep.energy_kept:.3f} err {rep.relative_error:.3f} dev {acc:.4f}", flush=True)
out = Path(__file__).parent / "results" / f"factorization-{task}.json"
json.dump({"task": task, "columns": ["rank", "kind", "energy_kept", "relative_error", "dev_accuracy"], "rows": rows},
          open(out, "w"), indent=1)
