"""Augmented distillation: neighbour search, the perturbations, and training on teacher-only rows.

Mechanics only (tiny random-init models, the real MiniLM tokenizer); the accuracy effect is measured
with real weights in benchmarks/compression."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from helpers import make_tiny
from probscale_edge.augment import AugmentConfig, Augmenter, augment_texts, task_vocabulary, word_neighbours
from probscale_edge.data import load_task
from probscale_edge.modeling import EncoderClassifier, load_encoder, predict_logits
from probscale_edge.recover import TrainSettings as RecoverConfig, recover


def test_word_neighbours_are_the_nearest_by_cosine():
    vecs = {"good": [1, 0, 0], "great": [0.9, 0.1, 0], "bad": [-1, 0.1, 0], "awful": [-0.9, 0, 0.1], "film": [0, 0, 1]}
    nb = word_neighbours(list(vecs), lambda ws: np.array([vecs[w] for w in ws]), k=2)
    assert nb["good"] == ["great", "film"] and nb["bad"] == ["awful", "film"]
    assert all(w not in nb[w] for w in nb)  # never itself
    assert word_neighbours(["alone"], lambda ws: np.ones((1, 3))) == {}


def test_perturbations_are_deterministic_and_stay_in_the_task_vocabulary(toy_csv):
    split = load_task(str(toy_csv)).train
    vocab = task_vocabulary(split.texts, 1)
    assert vocab and all(w == w.lower() and w.isalpha() for w in vocab)
    nb = {w: [v for v in vocab if v != w][:3] for w in vocab}
    cfg = AugmentConfig(copies=3, p_mask=0.2, p_swap=0.3, p_span=0.5, seed=7)
    t1, p1, src = augment_texts(split.texts, None, cfg, nb, "[MASK]")
    t2, _, _ = augment_texts(split.texts, None, cfg, nb, "[MASK]")
    t3, _, _ = augment_texts(split.texts, None, AugmentConfig(copies=3, p_mask=0.2, p_swap=0.3, p_span=0.5, seed=8),
                             nb, "[MASK]")
    assert t1 == t2 and t1 != t3 and p1 is None
    assert len(t1) == 3 * len(split) and src == list(range(len(split))) * 3
    source_words = {w for t in split.texts for w in t.split()}
    new_words = {w for t in t1 for w in t.split()}
    assert new_words <= source_words | set(vocab) | {"[MASK]"}  # a trimmed vocabulary stays closed
    assert "[MASK]" in new_words and any(len(a.split()) < len(split.texts[s].split()) for a, s in zip(t1, src))
    changed = sum(a != split.texts[s] for a, s in zip(t1, src)) / len(t1)
    assert 0.5 < changed < 1.0
    # pairs: both sides perturbed, aligned, and never cut to a span
    tp, pp, _ = augment_texts(split.texts, split.texts, cfg, nb, "[MASK]")
    assert len(pp) == len(tp) and all(len(a.split()) == len(split.texts[s].split()) for a, s in zip(tp, src))
    with pytest.raises(Exception, match="at least 1"):
        augment_texts(split.texts, None, AugmentConfig(copies=0), nb, None)


def test_augmented_distillation_trains_on_teacher_only_rows(tmp_path, minilm_dir, toy_csv):
    enc, tok, _ = load_encoder(str(make_tiny("bert", tmp_path / "bert", minilm_dir)))
    teacher = EncoderClassifier(enc, 2).eval()
    task = load_task(str(toy_csv))
    logits = predict_logits(teacher, tok, task.train.texts)
    student = EncoderClassifier(load_encoder(str(tmp_path / "bert"))[0], 2)
    cfg = RecoverConfig(mode="distill", epochs=1, augment=2, dev_fraction=0.2)
    aug = Augmenter(teacher, tok, AugmentConfig(copies=2, seed=0))
    rep = recover(student, tok, task.train, cfg, teacher_logits=logits, augmenter=aug)
    fit = len(task.train) - int(round(0.2 * len(task.train)))  # augmented after the dev split
    a = rep["augmentation"]
    assert a["source_rows"] == fit and a["added_rows"] == 2 * fit and rep["examples"] == 3 * fit
    assert np.isfinite(rep["final_loss"]) and a["vocabulary"] > 0
    # the augmented rows' targets are the teacher's logits on the perturbed text, not copies of the source's
    from probscale_edge.data import Split

    sub = Split(task.train.texts[:8], task.train.labels[:8])
    out, lg, _ = aug.expand(sub, logits[:8])
    assert out.labels[8:] == [-1] * 16 and lg.shape == (24, 2)
    np.testing.assert_allclose(lg[8:], predict_logits(teacher, tok, out.texts[8:]), atol=1e-5)
    with pytest.raises(Exception, match="augmentation copies 2 with --recover finetune"):
        recover(student, tok, task.train, RecoverConfig(mode="finetune", augment=2), augmenter=aug)
    with pytest.raises(Exception, match="needs the teacher"):
        recover(student, tok, task.train, RecoverConfig(mode="distill", augment=2, epochs=1), teacher_logits=logits)


def test_cli_rejects_augment_without_distill(tmp_path):
    r = subprocess.run([sys.executable, "-m", "probscale_edge", "build", "--recover", "finetune", "--augment", "4",
                        "-o", str(tmp_path / "b")], capture_output=True, text=True)
    assert r.returncode != 0 and "--augment 4 with --recover-mode finetune" in r.stderr
    assert not (tmp_path / "b").exists()
