"""Iterative head/neuron pruning: masks equal surgery, masked units score zero, steps only remove.

Tiny random-init models with a real tokenizer: these check the mechanics, never accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import make_tiny
from probscale_edge.data import load_task
from probscale_edge.importance import allocate, iterative_allocate, mask_units, unit_importance
from probscale_edge.modeling import EncoderClassifier, load_encoder, tokenize
from probscale_edge.prune import SubnetworkSpec, apply_spec

KEEP = {"heads": {"0": [1, 3], "2": [0]}, "ffn": {"1": list(range(0, 64, 3)), "3": [2, 9, 40]}}


def _model(model_type, tmp_path, minilm_dir):
    enc, tok, _ = load_encoder(str(make_tiny(model_type, tmp_path / model_type, minilm_dir)))
    return EncoderClassifier(enc, 2).eval(), tok


@pytest.mark.parametrize("model_type", ["bert", "mpnet", "distilbert"])
def test_masks_equal_surgery(model_type, tmp_path, minilm_dir):
    model, tok = _model(model_type, tmp_path, minilm_dir)
    enc = tokenize(tok, ["a short one", "a somewhat longer sentence with more words in it"], None, 32)
    args = (enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))
    cut = apply_spec(model, SubnetworkSpec([0, 1, 2, 3], KEEP["heads"], KEEP["ffn"])).eval()
    handles = mask_units(model, KEEP)
    try:
        with torch.no_grad():
            masked = model(*args)
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        want = cut(*args)
        full = model(*args)
    assert (masked - want).abs().max().item() <= 1e-5
    assert (full - want).abs().max().item() > 1e-4  # the masks did something


def test_masked_units_score_zero_and_steps_only_remove(tmp_path, minilm_dir, toy_csv):
    model, tok = _model("bert", tmp_path, minilm_dir)
    task = load_task(str(toy_csv))
    s = unit_importance(model, tok, [task], [1.0], keep=KEEP)
    assert np.all(s["heads"][0][[0, 2]] == 0) and np.all(s["heads"][0][[1, 3]] > 0)
    assert np.all(s["ffn"][3][[2, 9, 40]] > 0)
    assert np.count_nonzero(s["ffn"][3]) == 3
    assert np.all(s["heads"][1] > 0)  # unmasked layers keep every score

    layers = model.adapter.layers(model.encoder)
    total = sum(p.numel() for li in range(4) for p in layers[li].parameters())
    target = int(total * 0.4)
    one = iterative_allocate(model, tok, [task], [1.0], list(range(4)), target, iterations=1)
    it = iterative_allocate(model, tok, [task], [1.0], list(range(4)), target, iterations=4)
    for al in (one, it):
        assert al["params"] <= target
        assert al["params"] >= target - 2 * (4 * 32 * 8 + 3 * 8)  # within a couple of heads of the target
        cut = apply_spec(model, SubnetworkSpec(list(range(4)), al["heads"], al["ffn"]))
        assert sum(p.numel() for layer in cut.adapter.layers(cut.encoder) for p in layer.parameters()) == al["params"]
    # one step of the iterative search is exactly the one-shot allocation
    shot = allocate(model, list(range(4)), unit_importance(model, tok, [task], [1.0]), target)
    assert shot == one


def test_a_step_never_revives_what_an_earlier_step_removed(tmp_path, minilm_dir):
    """Where attention is most of a layer's cost (deep rungs, after the FFN was cut), the first small step can
    remove no head and takes its share from the FFN; the next step removes a head and its FFN share shrinks.
    Allocated on its own it would keep neurons the first step removed (mpnet, trec6, 8x: "iterative pruning
    revived ffn in layer 8"); told the earlier step, it removes them first and still meets its target."""
    model, _ = _model("bert", tmp_path, minilm_dir)
    shapes = [model.adapter.layer_shape(model.encoder, layer) for layer in model.adapter.layers(model.encoder)]
    cm = {"layer": 0, "head": 40, "neuron": 1}  # 4 heads of 40 and 64 neurons of 1 a layer: attention is 71%
    total = sum(s["heads"] * 40 + s["ffn"] for s in shapes)
    rng = np.random.default_rng(0)
    scores = {"heads": [rng.random(s["heads"]) + 0.1 for s in shapes], "ffn": [rng.random(s["ffn"]) + 0.1 for s in shapes]}
    layers = list(range(len(shapes)))

    def gone(al, kind):
        return {(li, j) for li in layers for j in range(shapes[li]["heads" if kind == "heads" else "ffn"])
                if str(li) in al[kind] and j not in al[kind][str(li)]}

    one = allocate(model, layers, scores, total - 30, min_neurons=4, cost_model=cm)
    assert not gone(one, "heads") and len(gone(one, "ffn")) == 30  # no head fits 30: the FFN gives it all
    masked = {k: [v.copy() for v in scores[k]] for k in scores}
    for li, j in gone(one, "ffn"):
        masked["ffn"][li][j] = 0.0  # what the re-scoring sees: removed units score zero
    alone = allocate(model, layers, masked, total - 60, min_neurons=4, cost_model=cm)
    assert not gone(one, "ffn") <= gone(alone, "ffn")  # the fault: 1 head, 20 neurons, 10 of the 30 back
    two = allocate(model, layers, masked, total - 60, min_neurons=4, cost_model=cm, before=one)
    assert gone(one, "ffn") <= gone(two, "ffn") and gone(one, "heads") <= gone(two, "heads")
    assert total - 60 - 40 < two["cost"] <= total - 60  # the target still holds, within one head


def test_a_target_past_the_ffn_floors_is_met_with_heads(tmp_path, minilm_dir):
    """Attention and FFN each give their share; what the FFN cannot give (its layers at their neuron floor) comes
    from the heads, so the allocation meets its target whenever the floors allow. It used to stop short (0.004 ms
    over a latency budget that one head less would have met: tests/stages/test_latency.py on a CI machine)."""
    model, _ = _model("bert", tmp_path, minilm_dir)
    shapes = [model.adapter.layer_shape(model.encoder, layer) for layer in model.adapter.layers(model.encoder)]
    layers = list(range(len(shapes)))
    cm = {"layer": 0, "head": 40, "neuron": 1}
    total = sum(s["heads"] * 40 + s["ffn"] for s in shapes)
    rng = np.random.default_rng(0)
    scores = {"heads": [rng.random(s["heads"]) + 0.1 for s in shapes], "ffn": [rng.random(s["ffn"]) + 0.1 for s in shapes]}
    floor = shapes[0]["ffn"] - 8  # the FFN can give 8 neurons a layer, far below its half share
    al = allocate(model, layers, scores, total // 2, min_neurons=floor, cost_model=cm)
    assert total // 2 - 40 < al["cost"] <= total // 2
    assert all(len(al["ffn"][str(li)]) == floor for li in layers)
