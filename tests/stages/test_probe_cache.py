"""Probe features cached by content hash: a repeat probe skips extraction and gives the same report."""

from __future__ import annotations

import numpy as np

from probscale_edge.data import load_task
from probscale_edge.modeling import EncoderClassifier, load_encoder
from probscale_edge.probe import ProbeSettings as ProbeConfig, features_key, probe_layers


def test_repeat_probe_reads_features_from_the_cache(tiny_bert, toy_csv, tmp_path):
    enc, tok, _ = load_encoder(str(tiny_bert))
    model = EncoderClassifier(enc, 2).eval()
    task = load_task(str(toy_csv))
    cfg = ProbeConfig(max_examples=120, max_length=32)
    cache = tmp_path / "features"
    seen = []
    first = probe_layers(model, tok, [task], [1.0], cfg, progress=seen.append, cache=cache, model_key="m1")
    assert sum(seen) == 120 and not first.tasks[0]["features_cached"]
    files = list(cache.glob("*.npy"))
    assert len(files) == 1 and np.load(files[0]).shape == (5, 120, 32)  # embeddings + 4 layers, hidden 32

    seen.clear()
    again = probe_layers(model, tok, [task], [1.0], cfg, progress=seen.append, cache=cache, model_key="m1")
    assert seen == [] and again.tasks[0]["features_cached"]  # no forward pass at all
    assert again.weighted == first.weighted

    # another model (key), pooling or text set is another entry
    texts = task.train.texts[:10]
    k = features_key("m1", texts, None, cfg)
    assert k != features_key("m2", texts, None, cfg)
    assert k != features_key("m1", texts, None, ProbeConfig(max_examples=120, max_length=32, pooling="cls"))
    assert k != features_key("m1", texts[:9] + ["changed"], None, cfg)

    # a damaged entry is recomputed and replaced, not trusted
    files[0].write_bytes(b"garbage")
    seen.clear()
    fixed = probe_layers(model, tok, [task], [1.0], cfg, progress=seen.append, cache=cache, model_key="m1")
    assert sum(seen) == 120 and fixed.weighted == first.weighted
    assert np.load(files[0]).shape == (5, 120, 32)
