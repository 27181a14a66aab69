"""What the word embedding's form alone costs a sentence-embedding student (issue 22): the full model, every layer
kept, its trimmed word embedding replaced by each form at the same parameter count, no training -> mean cosine
to the teacher on the eval texts. A low-rank table spreads its rank over every row; with ``--embedding-dense-rows``
the most used tokens keep their exact rows and a lower rank pays for them.

    python benchmarks/embeddings/embedding_cap.py --json benchmarks/embeddings/results/embedding-cap.json

Same teacher, tasks, vocabulary trim and token weights as ``probscale-edge build --task embed`` on the four
built-in tasks (``probscale_edge/pipeline/embed.py``: ``teacher_embed``, ``cut``). Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

TASKS = ("rotten_tomatoes", "sms_spam", "trec6", "reuters_r8")


def equal_dense_rows(vocab: int, hidden: int, rank: int, reference_rank: int) -> int:
    """The exact rows that bring a rank-``rank`` table (with them) to the parameters of a rank-``reference_rank``
    one (without them); 0 when there is no room."""
    from probscale_edge.embedding import embedding_params_after

    want = embedding_params_after(vocab, hidden, reference_rank)
    k = max(0, (want - embedding_params_after(vocab, hidden, rank) - hidden - rank) // (hidden - rank))
    while k and embedding_params_after(vocab, hidden, rank, k) > want:  # each exact row swaps r for H parameters
        k -= 1
    return k


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--ranks", default="96,128", help="the reference ranks (plain tables), comma-separated")
    ap.add_argument("--lower", default="64,48", help="the lower ranks that pay for exact rows, comma-separated")
    ap.add_argument("--json", required=True)
    a = ap.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    from probscale_edge.config import BuildConfig, TaskSpec
    from probscale_edge.pipeline.embed import cut, prepare_embed, teacher_embed
    from probscale_edge.sentence import embed_texts
    from probscale_edge.specs import SubnetworkSpec

    cfg = BuildConfig.create(model=a.model, kind="embed", tasks=tuple(TaskSpec(t) for t in TASKS),
                             output="/tmp/probscale-embedding-cap-unused", force=True)
    run = prepare_embed(cfg, lambda m: print(m, file=sys.stderr, flush=True))
    t = teacher_embed(run)
    texts = [x for task in run.tasks for x in task.eval.texts]
    want = np.concatenate([t.eval_emb[task.name] for task in run.tasks])
    full = t.model.param_counts()["total"]
    every = SubnetworkSpec(list(range(len(t.model.layer_shapes()))))
    rows = []

    def cut_to(rank, dense):
        run.cfg = cfg.replace(prune=cfg.prune.replace(embedding_dense_rows=dense))
        return cut(run, t, every, {"trim_vocab": True, "embedding_rank": rank})

    for ref in map(int, a.ranks.split(",")):
        forms = [(ref, 0)]
        for rank, dense in forms:  # the plain reference first: its trimmed vocabulary sizes the forms after it
            t0 = time.time()
            m, tok = cut_to(rank, dense)
            if len(forms) == 1:
                vocab, hidden = run.stages["vocab"]["kept"], m.adapter.word_embeddings(m.encoder).proj.out_features
                forms += [(low, equal_dense_rows(vocab, hidden, low, ref)) for low in map(int, a.lower.split(","))]
            got = embed_texts(m, tok, texts, run.max_length)
            cos = float(np.mean(np.sum(got * want, axis=1)))
            e = run.stages["embedding"]
            rows.append({"reference_rank": ref, "rank": rank, "dense_rows": dense, "vocab": int(vocab),
                         "embedding_parameters": e["params_after"], "total_parameters": m.param_counts()["total"],
                         "dense_share_of_tokens": e.get("dense_share"), "mean_cosine": cos,
                         "seconds": round(time.time() - t0, 1)})
            print(f"rank {rank} + {dense} exact rows: {e['params_after']:,} parameters, mean cosine {cos:.4f}",
                  file=sys.stderr, flush=True)
    table = Table(title=f"{a.model}: the word embedding's form alone (every layer kept, no training), "
                        f"{len(texts):,} eval texts")
    for c in ("form", "embedding params", "exact rows cover", "mean cosine to the teacher"):
        table.add_column(c)
    for r in rows:
        form = f"rank {r['rank']}" + (f" + {r['dense_rows']:,} exact rows" if r["dense_rows"] else "")
        share = "-" if r["dense_share_of_tokens"] is None else f"{r['dense_share_of_tokens']:.1%}"
        table.add_row(form, f"{r['embedding_parameters']:,}", share, f"{r['mean_cosine']:.4f}")
    Console().print(table)
    out = {"model": a.model, "tasks": TASKS, "eval_texts": len(texts), "full_total_parameters": full,
           "note": "token shares count the training texts' tokens (plus one per row), as the build's weights do",
           "rows": rows}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
