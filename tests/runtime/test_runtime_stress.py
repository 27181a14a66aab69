"""The runtime under stress: arbitrary Unicode, empty and huge inputs (hypothesis), and many
threads predicting at once give the same results as one."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pytest


@pytest.fixture(scope="module")
def predictor(tiny_bundle):
    from probscale_edge.runtime import Predictor

    return Predictor(tiny_bundle[0], threads=1)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=400), min_size=1, max_size=6))
def test_any_unicode_gives_valid_probabilities(predictor, texts):
    preds = predictor.predict(texts)
    assert len(preds) == len(texts)
    for p in preds:
        assert np.isfinite(p.probabilities).all()
        assert abs(sum(p.probabilities) - 1) < 1e-5
        assert p.label in predictor.labels


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=1, max_size=60))
def test_batching_does_not_change_results(predictor, text):
    others = ["short", "a much longer text " * 30, ""]
    alone = predictor.logits([text])
    batched = predictor.logits([text, *others])[:1]
    assert np.abs(alone - batched).max() <= 1e-4  # padding to the batch's length is masked out


def test_huge_input_is_truncated(predictor):
    enc = predictor.encode(["word " * 100_000])
    assert enc["input_ids"].shape[1] == predictor.max_length
    assert len(predictor.predict(["word " * 100_000])) == 1


def test_threads_agree_with_one(predictor):
    rng = np.random.default_rng(0)
    vocab = ["great", "awful", "plot", "cast", "boring", "superb", "film", "😀", "中文", "naïve"]
    texts = [" ".join(rng.choice(vocab, size=rng.integers(1, 30))) for _ in range(400)]
    single = predictor.logits(texts)
    chunks = [texts[i::8] for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as ex:
        results = list(ex.map(predictor.logits, chunks))
    for i, r in enumerate(results):
        assert np.abs(r - single[i::8]).max() <= 1e-5
