"""Surgery for every family: non-uniform layers/heads/FFN save, reload and export with parity.

Random-init configs (no real RoBERTa/T5/DistilBERT/ELECTRA weights exist offline): these tests
check shapes, parameter counts and numerical parity, never accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_tiny
from probscale_edge.modeling import EncoderClassifier, load_classifier, load_encoder, predict_logits, save_classifier
from probscale_edge.prune import SubnetworkSpec, apply_spec

TEXTS = ["a short one", "Ünïcödé and 中文 text with emoji 😀", "", "a much longer sentence " * 8, "x"]
FAMILIES = ["bert", "roberta", "xlm-roberta", "electra", "mpnet", "distilbert"]


def _spec(model_type):
    heads = {"0": [0, 2, 3], "2": [1]}
    if model_type == "mpnet":
        heads = {}  # MPNet's shared relative-position bias: layer-level pruning only (see README)
    return SubnetworkSpec(keep_layers=[0, 2, 3], heads=heads, ffn={"0": list(range(0, 64, 2)), "3": [1, 5, 7]})


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
    if model_type != "mpnet":
        assert [s["heads"] for s in shapes] == [3, 1, 4]
    assert [s["ffn"] for s in shapes] == [32, 64, 3]
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
    src = make_tiny("t5", tmp_path / "t5", minilm_dir)
    enc, tok, _ = load_encoder(str(src))
    model = EncoderClassifier(enc, 2).eval()
    from probscale_edge.errors import ProbscaleError

    with pytest.raises(ProbscaleError, match="head pruning is not supported"):
        apply_spec(model, SubnetworkSpec(keep_layers=[1, 3], heads={"3": [0, 1]}))
    pruned = apply_spec(model, SubnetworkSpec(keep_layers=[1, 3], ffn={"1": [0, 1, 2, 3]}))
    blocks = pruned.encoder.encoder.block
    assert blocks[0].layer[0].SelfAttention.has_relative_attention_bias
    folder = save_classifier(pruned, tok, tmp_path / "p", ["a", "b"])
    reloaded, tok2, _ = load_classifier(folder)
    a = predict_logits(pruned, tok, TEXTS)
    b = predict_logits(reloaded, tok2, TEXTS)
    assert np.abs(a - b).max() <= 1e-6
    assert [s["ffn"] for s in reloaded.layer_shapes()] == [4, 64]


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
