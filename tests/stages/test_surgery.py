"""Surgery for every family: non-uniform layers/heads/FFN save, reload and export with parity.

Random-init configs (no real RoBERTa/T5/DistilBERT/ELECTRA weights exist offline): these tests
check shapes, parameter counts and numerical parity, never accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import make_tiny
from probscale_edge.modeling import EncoderClassifier, load_classifier, load_encoder, predict_logits, save_classifier
from probscale_edge.prune import SubnetworkSpec, apply_spec

TEXTS = ["a short one", "Ünïcödé and 中文 text with emoji 😀", "", "a much longer sentence " * 8, "x"]
FAMILIES = ["bert", "roberta", "xlm-roberta", "electra", "mpnet", "distilbert", "t5"]
SHARED_BIAS = ("mpnet", "t5")  # one relative-position bias for all layers: pruned layers record their head ids


def _spec(model_type):
    return SubnetworkSpec(keep_layers=[0, 2, 3], heads={"0": [0, 2, 3], "2": [1]},
                          ffn={"0": list(range(0, 64, 2)), "3": [1, 5, 7]})


def _load(src):
    """A model folder -> (EncoderClassifier, tokenizer); T5 through T5EncoderModel (load_encoder)."""
    enc, tok, _ = load_encoder(str(src))
    return EncoderClassifier(enc, 3).eval(), tok


def _logits(model, ids, mask):
    with torch.no_grad():
        return model(ids, mask)


@pytest.mark.parametrize("model_type", FAMILIES)
def test_nonuniform_prune_save_reload_export(model_type, tmp_path, minilm_dir):
    from probscale_edge.converters.onnx_export import ExportConfig, export_onnx

    src = make_tiny(model_type, tmp_path / "src", minilm_dir)
    enc, tok, _ = load_encoder(str(src))
    model = EncoderClassifier(enc, 3).eval()
    before = model.param_counts()
    spec = _spec(model_type)
    pruned = apply_spec(model, spec).eval()
    shapes = pruned.layer_shapes()
    assert len(shapes) == 3
    assert [s["heads"] for s in shapes] == [3, 1, 4]
    assert [s["ffn"] for s in shapes] == [32, 64, 3]
    if model_type in SHARED_BIAS:
        assert [s.get("head_ids") for s in shapes] == [[0, 2, 3], [1], None]
    else:
        assert all("head_ids" not in s for s in shapes)
    after = pruned.param_counts()
    assert after["embedding"] == before["embedding"]
    assert after["non_embedding"] < before["non_embedding"]
    # physically smaller: count matches the tensors
    assert after["total"] == sum(p.numel() for p in pruned.parameters())

    folder = save_classifier(pruned, tok, tmp_path / "pruned", ["a", "b", "c"])
    reloaded, tok2, meta = load_classifier(folder)
    assert meta["layer_shapes"] == shapes
    a = predict_logits(pruned, tok, TEXTS)
    b = predict_logits(reloaded, tok2, TEXTS)
    assert np.abs(a - b).max() <= 1e-6

    rep = export_onnx(reloaded, tok2, tmp_path / "m.onnx", ExportConfig(), parity_texts=TEXTS)
    assert rep["parity_max_abs"] <= 1e-4, rep


def test_t5_encoder_layer_drop_moves_relative_bias(tmp_path, minilm_dir):
    """Block 0 dropped: the next kept block owns the bias; it and a later block are head-pruned."""
    from probscale_edge.converters.onnx_export import ExportConfig, export_onnx

    src = make_tiny("t5", tmp_path / "t5", minilm_dir)
    enc, tok, _ = load_encoder(str(src))
    model = EncoderClassifier(enc, 2).eval()
    pruned = apply_spec(model, SubnetworkSpec(keep_layers=[1, 2, 3], heads={"1": [2, 3], "3": [0, 1, 3]},
                                              ffn={"1": [0, 1, 2, 3]})).eval()
    blocks = pruned.encoder.encoder.block
    assert blocks[0].layer[0].SelfAttention.has_relative_attention_bias
    assert not any(b.layer[0].SelfAttention.has_relative_attention_bias for b in blocks[1:])
    folder = save_classifier(pruned, tok, tmp_path / "p", ["a", "b"])
    reloaded, tok2, _ = load_classifier(folder)
    a = predict_logits(pruned, tok, TEXTS)
    b = predict_logits(reloaded, tok2, TEXTS)
    assert np.abs(a - b).max() <= 1e-6
    shapes = reloaded.layer_shapes()
    assert [s["ffn"] for s in shapes] == [4, 64, 64]
    assert [s.get("head_ids") for s in shapes] == [[2, 3], None, [0, 1, 3]]
    rep = export_onnx(reloaded, tok2, tmp_path / "t5.onnx", ExportConfig(), parity_texts=TEXTS)
    assert rep["parity_max_abs"] <= 1e-4, rep


@pytest.mark.parametrize("model_type", SHARED_BIAS)
def test_shared_bias_head_pruning_equals_zeroed_heads(model_type, tmp_path):
    """Pruned heads of a shared-position-bias family = the full model with those heads' outputs zeroed.

    Checks that each layer adds the bias rows of the heads it kept (not e.g. the first ones), and that
    layers after a pruned one still get the bias of all heads (T5 passes it on from block 0)."""
    src = make_tiny(model_type, tmp_path / "src", None, seed=1)
    model, _ = _load(src)
    a = model.adapter
    bias = a.layers(model.encoder)[0].layer[0].SelfAttention.relative_attention_bias if model_type == "t5" \
        else model.encoder.encoder.relative_attention_bias
    with torch.no_grad():  # a strong, head-specific bias, so that picking wrong rows shows
        bias.weight.normal_(0.0, 3.0)
    heads = {"0": [1, 3], "2": [0, 2, 3], "3": [2]}
    pruned = apply_spec(model, SubnetworkSpec(keep_layers=[0, 1, 2, 3], heads=heads)).eval()
    ref = apply_spec(model, SubnetworkSpec(keep_layers=[0, 1, 2, 3])).eval()  # an unpruned copy
    hd = a.head_dim(ref.encoder)
    for li, keep in heads.items():
        o = a.attention_linears(a.layers(ref.encoder)[int(li)])[3]
        with torch.no_grad():  # the dropped heads' context columns of the output projection
            for h in set(range(4)) - set(keep):
                o.weight[:, h * hd:(h + 1) * hd] = 0
    torch.manual_seed(0)
    ids = torch.randint(5, 900, (3, 13))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    mask[2, 4:] = 0
    got, want, full = _logits(pruned, ids, mask), _logits(ref, ids, mask), _logits(model, ids, mask)
    assert (got - want).abs().max().item() <= 1e-5
    assert (got - full).abs().max().item() > 1e-3  # the pruning did change the model
    # keeping the first heads instead of the right ones gives other outputs (the check has teeth)
    wrong = apply_spec(model, SubnetworkSpec(keep_layers=[0, 1, 2, 3], heads=heads)).eval()
    for li, keep in heads.items():
        attn = a.get_module(a.layers(wrong.encoder)[int(li)], a.attn_module)
        attn.probscale_head_ids.copy_(torch.arange(len(keep)))
    assert (_logits(wrong, ids, mask) - want).abs().max().item() > 1e-3

    # pruning a pruned model composes the head ids (current indices -> source heads)
    twice = apply_spec(apply_spec(model, SubnetworkSpec([0, 1, 2, 3], heads={"0": [1, 2, 3]})),
                       SubnetworkSpec([0, 1, 2, 3], heads={"0": [0, 2], "2": [0, 2, 3], "3": [2]})).eval()
    assert twice.layer_shapes()[0]["head_ids"] == [1, 3]
    assert (_logits(twice, ids, mask) - want).abs().max().item() <= 1e-5


@pytest.mark.parametrize("model_type", SHARED_BIAS)
def test_shared_bias_families_allocate_heads(model_type, tmp_path):
    """Fisher allocation prunes heads for MPNet and T5 too (no longer FFN-only)."""
    from probscale_edge.importance import allocate

    model, _ = _load(make_tiny(model_type, tmp_path / "src", None))
    assert model.adapter.supports_head_pruning
    rng = np.random.default_rng(0)
    scores = {"heads": {li: rng.random(4) for li in range(4)}, "ffn": {li: rng.random(64) for li in range(4)}}
    layers = model.adapter.layers(model.encoder)
    total = sum(p.numel() for li in range(4) for p in layers[li].parameters())
    al = allocate(model, list(range(4)), scores, target_params=total // 2)
    assert al["heads"] and al["ffn"]
    pruned = apply_spec(model, SubnetworkSpec(list(range(4)), al["heads"], al["ffn"]))
    assert sum(s["heads"] for s in pruned.layer_shapes()) < 16


def test_layer_subset_param_counts_exact(tiny_bert):
    enc, tok, _ = load_encoder(str(tiny_bert))
    m = EncoderClassifier(enc, 2)
    per_layer = sum(p.numel() for p in m.adapter.layers(m.encoder)[0].parameters())
    # hidden 32, ffn 64: attention 4*(32*32+32) + LN 64, FFN 32*64+64 + 64*32+32, LN 64
    assert per_layer == 4 * (32 * 32 + 32) + 64 + (32 * 64 + 64) + (64 * 32 + 32) + 64
    p = apply_spec(m, SubnetworkSpec([1, 3]))
    assert m.param_counts()["non_embedding"] - p.param_counts()["non_embedding"] == 2 * per_layer


def test_invalid_spec_is_a_clear_error(tiny_bert):
    from probscale_edge.errors import ProbscaleError

    enc, tok, _ = load_encoder(str(tiny_bert))
    m = EncoderClassifier(enc, 2)
    with pytest.raises(ProbscaleError, match="invalid layers"):
        apply_spec(m, SubnetworkSpec([0, 9]))
    with pytest.raises(ProbscaleError, match="at least one attention head"):
        apply_spec(m, SubnetworkSpec([0], heads={"0": []}))
    torch.manual_seed(0)


@pytest.mark.parametrize("model_type", FAMILIES)
def test_hidden_states_of_layer_subsets(model_type, tmp_path, minilm_dir):
    """Composed subsets (probe.composed) give one state per kept layer, in order; the full model's equal
    transformers' own. (transformers 5's output_hidden_states drops states once layers are swapped.)"""
    from probscale_edge.modeling import tokenize
    from probscale_edge.probe import composed

    model, tok = _load(make_tiny(model_type, tmp_path / "src", minilm_dir))
    enc = tokenize(tok, TEXTS[:3], None, 32)
    args = (enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))
    kw = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    with torch.no_grad():
        mine = model.hidden_states(*args)
        theirs = model.encoder(**kw, output_hidden_states=True).hidden_states
        assert len(mine) == len(theirs) == 5
        assert max((a - b).abs().max().item() for a, b in zip(mine, theirs)) <= 1e-6
        for keep in ([0, 3], [1, 2], [3], [1, 2, 3]):
            with composed(model, keep) as m:
                hs = m.hidden_states(*args)
                assert len(hs) == len(keep) + 1
                assert (hs[-1] - m.encoder(**kw).last_hidden_state).abs().max().item() <= 1e-6
                assert (hs[0] - mine[0]).abs().max().item() <= 1e-6  # the embedding output does not change
