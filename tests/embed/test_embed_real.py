"""The embedding route on the real all-MiniLM-L6-v2 and a real task (trec6), small and short enough for a test
(a few minutes on a CPU): a 5x smaller student keeps most of the teacher's same-label retrieval. The full
four-task figures are benchmarks/embeddings (README)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_real_minilm_fisher_scores_the_embedding():
    """The importance signal is not zero at the teacher (the reason for the sampled targets) and ranks units:
    heads and neurons differ by orders of magnitude."""
    from probscale_edge.modeling import load_encoder
    from probscale_edge.sentence import SentenceEncoder, embed_texts, embedding_importance, read_sentence_config

    enc, tok, src = load_encoder("all-MiniLM-L6-v2")
    model = SentenceEncoder(enc, read_sentence_config(src, "all-MiniLM-L6-v2"))
    texts = ["what is the capital of france?", "the movie was a delight", "free entry, text win now",
             "oil prices rose after the meeting"] * 4
    s = embedding_importance(model, tok, texts, embed_texts(model, tok, texts), batch_size=8, draws=1)
    heads = np.concatenate([s["heads"][i] for i in range(6)])
    ffn = np.concatenate([s["ffn"][i] for i in range(6)])
    assert heads.shape == (72,) and ffn.shape == (6 * 1536,)
    assert (heads > 0).all() and np.percentile(ffn, 99) > 20 * np.percentile(ffn, 10)


def test_real_minilm_5x_embedding_bundle_keeps_retrieval(tmp_path):
    from probscale_edge.pipeline import BuildConfig, TaskSpec, build
    from probscale_edge.runtime import Predictor

    out = tmp_path / "bundle"
    m = build(BuildConfig.create(model="all-MiniLM-L6-v2", tasks=[TaskSpec("trec6")], kind="embed", output=str(out),
                                 compression=5.0, max_train=1500, max_eval=600, student_epochs=2, student_lr=2e-4,
                                 target="x86_64", latency_runs=5), log=lambda *_: None)
    assert m["parameters"]["ratio_total"] >= 5.0
    b, t = m["metrics"]["per_task"]["bundle"]["trec6"], m["metrics"]["per_task"]["teacher"]["trec6"]
    assert b["recall@10"] / t["recall@10"] >= 0.85, (b, t)
    hist = m["stages"]["recover"]["history"]
    assert hist[0]["step"] == 0 and hist[-1]["dev_mean_cosine"] > hist[0]["dev_mean_cosine"] + 0.15, hist  # it learns
    assert b["mean_cosine"] >= 0.55 and b["spearman"] >= 0.4, b  # 1,500 texts, 2 epochs: far from the 4-task build
    e = Predictor(out).embed(["what is the capital of france?", "who wrote hamlet?"])
    assert e.shape == (2, 384) and np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)  # normalized as the teacher
