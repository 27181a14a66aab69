"""Vocabulary trimming: smaller embedding matrix, consistent tokenizer, same outputs on task text."""

from __future__ import annotations

import numpy as np

from probscale_edge.modeling import EncoderClassifier, load_classifier, load_encoder, predict_logits, save_classifier
from probscale_edge.vocab import trim_vocabulary

TASK = ["the film was great", "a dull, boring plot", "superb cast and score", "naïve but charming 😀"]


def test_trim_keeps_outputs_on_task_text_and_tokenizes_anything(tiny_bert, tmp_path):
    enc, tok, _ = load_encoder(str(tiny_bert))
    m = EncoderClassifier(enc, 2).eval()
    before = predict_logits(m, tok, TASK)
    n_before = m.param_counts()["embedding"]
    new_tok, rep = trim_vocabulary(m, tok, TASK)
    assert rep.kept < rep.original / 3  # 30,522 -> specials + characters + the task's tokens
    assert m.param_counts()["embedding"] < n_before
    after = predict_logits(m, new_tok, TASK)
    assert np.abs(before - after).max() <= 1e-5  # same ids, renumbered: identical outputs
    # unseen words still tokenize into kept pieces, not [UNK]
    ids = new_tok("unprecedented cinematography")["input_ids"]
    assert new_tok.unk_token_id not in ids and len(ids) > 4
    assert rep.unk_rate_after == rep.unk_rate_before
    # saves and reloads with the rewritten tokenizer
    folder = save_classifier(m, new_tok, tmp_path / "trimmed", ["a", "b"])
    m2, tok2, _ = load_classifier(folder)
    assert np.abs(predict_logits(m2, tok2, TASK) - after).max() <= 1e-6
    assert tok2("the film")["input_ids"] == new_tok("the film")["input_ids"]
