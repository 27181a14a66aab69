"""DeBERTa-v2 / v3 (model_type "deberta-v2"): head / FFN / layer surgery, reload, ONNX, a tiny build.

Random-init configs (no DeBERTa weights offline) with the MiniLM WordPiece tokenizer: DeBERTa-v3's own
tokenizer is SentencePiece (spm.model) and is not available offline. Two layouts:

- ``v3``: share_att_key=True, pos_att_type p2c|c2p, log-bucketed positions, LayerNorm on rel_embeddings,
  no absolute positions (the DeBERTa-v3 defaults);
- ``v2``: share_att_key=False (own pos_key_proj / pos_query_proj), unbucketed relative positions,
  absolute positions too, and the ConvLayer after the first layer (conv_kernel_size 3, as deberta-v2-xlarge).

These tests check shapes, parameter counts and numerical parity, never accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probscale_edge.modeling import EncoderClassifier, load_classifier, load_encoder, predict_logits, save_classifier
from probscale_edge.prune import SubnetworkSpec, apply_spec

TEXTS = ["a short one", "Ünïcödé and 中文 text with emoji 😀", "", "a much longer sentence " * 8, "x"]
VARIANTS = {
    "v3": dict(share_att_key=True, pos_att_type=["p2c", "c2p"], relative_attention=True, position_buckets=16,
               max_relative_positions=-1, norm_rel_ebd="layer_norm", position_biased_input=False),
    "v2": dict(share_att_key=False, pos_att_type=["p2c", "c2p"], relative_attention=True, position_buckets=-1,
               max_relative_positions=-1, norm_rel_ebd="none", position_biased_input=True, conv_kernel_size=3),
}


def make_deberta(folder, variant: str, tokenizer_src=None, seed: int = 0, layers: int = 4):
    """A random-init DebertaV2Model folder (hidden 32, 4 heads, FFN 64) of ``variant``."""
    from transformers import AutoTokenizer, DebertaV2Config, DebertaV2Model

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_src)) if tokenizer_src else None
    cfg = DebertaV2Config(vocab_size=tok.vocab_size if tok else 1000, hidden_size=32, num_hidden_layers=layers,
                          num_attention_heads=4, intermediate_size=64, max_position_embeddings=160,
                          type_vocab_size=0, pad_token_id=0, **VARIANTS[variant])
    DebertaV2Model(cfg).save_pretrained(str(folder))
    if tok:
        tok.save_pretrained(str(folder))
    return folder


def _load(src, labels=3):
    enc, tok, _ = load_encoder(str(src))
    return EncoderClassifier(enc, labels).eval(), tok


def _attn(model, i):
    a = model.adapter
    return a.get_module(a.layers(model.encoder)[i], a.attn_module)


def _ids(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 900, (3, 29), generator=g)  # 29 > the 8 exact buckets of v3: log buckets are used
    mask = torch.ones_like(ids)
    mask[1, 17:] = 0
    mask[2, 4:] = 0
    return ids, mask


def _logits(model, ids, mask):
    with torch.no_grad():
        return model(ids, mask)


def test_registered_and_no_token_type_ids(tmp_path):
    """DeBERTa-v2/v3 have type_vocab_size 0: no token-type embedding, so the family feeds no token_type_ids."""
    from probscale_edge.adapters import get_adapter, supported_model_types

    assert "deberta-v2" in supported_model_types()
    a = get_adapter("deberta-v2")
    assert a.uses_token_type_ids is False
    assert a.input_names() == ["input_ids", "attention_mask"]
    model, _ = _load(make_deberta(tmp_path / "src", "v3"))
    assert model.encoder.embeddings.token_type_embeddings is None
    ids, mask = _ids()
    with torch.no_grad():  # the encoder itself ignores them
        h0 = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        h1 = model.encoder(input_ids=ids, attention_mask=mask, token_type_ids=torch.ones_like(ids)).last_hidden_state
    assert (h0 - h1).abs().max().item() == 0.0


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_nonuniform_prune_save_reload_export(variant, tmp_path, minilm_dir):
    from probscale_edge.converters.onnx_export import ExportConfig, export_onnx

    model, tok = _load(make_deberta(tmp_path / "src", variant, minilm_dir))
    rel = model.encoder.encoder.rel_embeddings.weight.detach().clone()
    before = model.param_counts()
    spec = SubnetworkSpec(keep_layers=[0, 2, 3], heads={"0": [0, 2, 3], "2": [1]},
                          ffn={"0": list(range(0, 64, 2)), "3": [1, 5, 7]})
    pruned = apply_spec(model, spec).eval()
    shapes = pruned.layer_shapes()
    assert shapes == [{"heads": 3, "ffn": 32}, {"heads": 1, "ffn": 64}, {"heads": 4, "ffn": 3}]
    for i, heads in enumerate((3, 1, 4)):
        att = _attn(pruned, i)
        assert att.num_attention_heads == heads and att.all_head_size == heads * 8
        assert att.query_proj.out_features == att.key_proj.out_features == att.value_proj.out_features == heads * 8
        pos = [getattr(att, n, None) for n in ("pos_key_proj", "pos_query_proj")]
        if variant == "v2":
            assert all(p is not None and p.out_features == heads * 8 for p in pos)
        else:
            assert pos == [None, None]
    # the shared relative embeddings stay whole and untouched
    assert torch.equal(pruned.encoder.encoder.rel_embeddings.weight, rel)
    assert (pruned.encoder.encoder.conv is not None) == (variant == "v2")
    after = pruned.param_counts()
    assert after["embedding"] == before["embedding"]
    assert after["non_embedding"] < before["non_embedding"]
    assert after["total"] == sum(p.numel() for p in pruned.parameters())

    folder = save_classifier(pruned, tok, tmp_path / "pruned", ["a", "b", "c"])
    reloaded, tok2, meta = load_classifier(folder)
    assert meta["layer_shapes"] == shapes == reloaded.layer_shapes()
    a = predict_logits(pruned, tok, TEXTS)
    b = predict_logits(reloaded, tok2, TEXTS)
    assert np.abs(a - b).max() <= 1e-5
    assert np.abs(a - predict_logits(model, tok, TEXTS)).max() > 1e-4  # the cut did change the model

    import onnx

    for opset in (17, 18):
        rep = export_onnx(reloaded, tok2, tmp_path / f"m{opset}.onnx", ExportConfig(opset=opset), parity_texts=TEXTS)
        assert rep["parity_max_abs"] <= 1e-4, rep
        assert [i.name for i in onnx.load(str(tmp_path / f"m{opset}.onnx")).graph.input] == ["input_ids", "attention_mask"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_head_pruning_equals_zeroed_heads(variant, tmp_path):
    """Pruned heads = the full model with those heads' context columns of the output projection zeroed.

    The query / key / position projections and the relative embeddings are made strong (random init
    leaves the attention near uniform), so the c2p / p2c scores matter: a layer whose position projections
    kept other rows than its content projections (v2) differs."""
    model, _ = _load(make_deberta(tmp_path / "src", variant, seed=1))
    a = model.adapter
    with torch.no_grad():
        model.encoder.encoder.rel_embeddings.weight.normal_(0.0, 1.0)
        for i in range(4):
            for n in ("query_proj", "key_proj", "pos_key_proj", "pos_query_proj"):
                if getattr(_attn(model, i), n, None) is not None:
                    getattr(_attn(model, i), n).weight.normal_(0.0, 0.4)
    heads = {"0": [1, 3], "2": [0, 2, 3], "3": [2]}
    pruned = apply_spec(model, SubnetworkSpec(keep_layers=[0, 1, 2, 3], heads=heads)).eval()
    ref = apply_spec(model, SubnetworkSpec(keep_layers=[0, 1, 2, 3])).eval()  # an unpruned copy
    hd = a.head_dim(ref.encoder)
    for li, keep in heads.items():
        o = a.attention_linears(a.layers(ref.encoder)[int(li)])[3]
        with torch.no_grad():
            for h in set(range(4)) - set(keep):
                o.weight[:, h * hd:(h + 1) * hd] = 0
    ids, mask = _ids()
    got, want, full = _logits(pruned, ids, mask), _logits(ref, ids, mask), _logits(model, ids, mask)
    assert (got - want).abs().max().item() <= 1e-5
    assert (got - full).abs().max().item() > 1e-3  # the pruning did change the model

    # the relative-position path matters here: without it the outputs differ
    flat = apply_spec(model, SubnetworkSpec(keep_layers=[0, 1, 2, 3], heads=heads)).eval()
    with torch.no_grad():
        flat.encoder.encoder.rel_embeddings.weight.zero_()
    assert (_logits(flat, ids, mask) - want).abs().max().item() > 1e-3

    if variant == "v2":  # position projections keeping the first heads' rows instead of the kept ones differ
        wrong = apply_spec(model, SubnetworkSpec(keep_layers=[0, 1, 2, 3], heads=heads)).eval()
        for li, keep in heads.items():
            src, dst = _attn(model, int(li)), _attn(wrong, int(li))
            with torch.no_grad():
                for n in ("pos_key_proj", "pos_query_proj"):
                    getattr(dst, n).weight.copy_(getattr(src, n).weight[:len(keep) * hd])
                    getattr(dst, n).bias.copy_(getattr(src, n).bias[:len(keep) * hd])
        assert (_logits(wrong, ids, mask) - want).abs().max().item() > 1e-3

    # pruning a pruned model composes (current head indices)
    twice = apply_spec(apply_spec(model, SubnetworkSpec([0, 1, 2, 3], heads={"0": [1, 2, 3]})),
                       SubnetworkSpec([0, 1, 2, 3], heads={"0": [0, 2], "2": [0, 2, 3], "3": [2]})).eval()
    assert (_logits(twice, ids, mask) - want).abs().max().item() <= 1e-5


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_unit_costs_match_the_cut(variant, tmp_path):
    """unit_costs (used by the Fisher allocation) = parameters one head / one FFN neuron really removes
    (v2: the pos_key_proj / pos_query_proj rows of a head too)."""
    model, _ = _load(make_deberta(tmp_path / "src", variant))
    a = model.adapter
    costs = a.unit_costs(model.encoder, a.layers(model.encoder)[1])
    n0 = model.param_counts()["total"]
    one_head = apply_spec(model, SubnetworkSpec([0, 1, 2, 3], heads={"1": [0, 1, 3]}))
    one_neuron = apply_spec(model, SubnetworkSpec([0, 1, 2, 3], ffn={"1": list(range(63))}))
    assert n0 - one_head.param_counts()["total"] == costs["head"]
    assert n0 - one_neuron.param_counts()["total"] == costs["neuron"] == 32 + 1 + 32
    assert costs["head"] == (4 + (2 if variant == "v2" else 0)) * 32 * 8 + (3 + (2 if variant == "v2" else 0)) * 8


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_layer_drop_keeps_shared_rel_embeddings(variant, tmp_path, minilm_dir):
    """Layers 0 and 2 dropped: exactly two layers' parameters go, rel_embeddings (and the v2 ConvLayer,
    which the encoder applies after whichever layer is first) stay, and the result reloads exactly."""
    model, tok = _load(make_deberta(tmp_path / "src", variant, minilm_dir))
    a = model.adapter
    per_layer = sum(p.numel() for p in a.layers(model.encoder)[0].parameters())
    rel = model.encoder.encoder.rel_embeddings.weight.detach().clone()
    pruned = apply_spec(model, SubnetworkSpec([1, 3], heads={"3": [0, 3]})).eval()
    assert model.param_counts()["total"] - pruned.param_counts()["total"] == \
        per_layer + a.unit_costs(model.encoder, a.layers(model.encoder)[3])["head"] * 2 + per_layer
    assert a.num_layers(pruned.encoder) == pruned.encoder.config.num_hidden_layers == 2
    assert torch.equal(pruned.encoder.encoder.rel_embeddings.weight, rel)
    assert (pruned.encoder.encoder.conv is not None) == (variant == "v2")
    # the pruned encoder = the original layers 1 and 3 run by hand on the shared relative embeddings
    ids, mask = _ids()
    enc = pruned.encoder
    with torch.no_grad():
        out = enc(input_ids=ids, attention_mask=mask).last_hidden_state
        h = emb = enc.embeddings(input_ids=ids, mask=mask)
        m4 = enc.encoder.get_attention_mask(mask)
        rel_pos, rel_emb = enc.encoder.get_rel_pos(h), enc.encoder.get_rel_embedding()
        for i, layer in enumerate(a.layers(enc)):
            h = layer(h, m4, relative_pos=rel_pos, rel_embeddings=rel_emb)[0]
            if i == 0 and enc.encoder.conv is not None:
                h = enc.encoder.conv(emb, h, mask)
    assert (out - h).abs().max().item() <= 1e-6
    folder = save_classifier(pruned, tok, tmp_path / "p", ["a", "b", "c"])
    reloaded, tok2, _ = load_classifier(folder)
    assert np.abs(predict_logits(pruned, tok, TEXTS) - predict_logits(reloaded, tok2, TEXTS)).max() <= 1e-5


def test_hidden_states_of_layer_subsets(tmp_path, minilm_dir):
    """v3 (no ConvLayer): one state per kept layer, equal to transformers' own for the full model."""
    from probscale_edge.modeling import tokenize
    from probscale_edge.probe import composed

    model, tok = _load(make_deberta(tmp_path / "src", "v3", minilm_dir))
    enc = tokenize(tok, TEXTS[:4], None, 32)
    args = (enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))
    kw = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    with torch.no_grad():
        mine = model.hidden_states(*args)
        theirs = model.encoder(**kw, output_hidden_states=True).hidden_states
        assert len(mine) == len(theirs) == 5
        assert max((x - y).abs().max().item() for x, y in zip(mine, theirs)) <= 1e-6
        for keep in ([0, 3], [1, 2], [3]):
            with composed(model, keep) as m:
                hs = m.hidden_states(*args)
                assert len(hs) == len(keep) + 1
                assert (hs[-1] - m.encoder(**kw).last_hidden_state).abs().max().item() <= 1e-6


def test_tiny_build_predicts_through_runtime(tmp_path, minilm_dir, toy_csv):
    """The whole build on a random-init DeBERTa-v3 layout; the torch-free Predictor reproduces its accuracy."""
    import json

    import onnx

    from probscale_edge.data import load_local
    from probscale_edge.pipeline import BuildConfig, TaskSpec, build
    from probscale_edge.runtime import Predictor

    src = make_deberta(tmp_path / "src", "v3", minilm_dir)
    out = tmp_path / "bundle"
    build(BuildConfig.create(model=str(src), tasks=[TaskSpec(str(toy_csv))], output=str(out), target="x86_64",
                             budget=0.5, epochs=1, lr=1e-3, student_lr=1e-3, use_cache=False, latency_runs=3))
    m = json.loads((out / "manifest.json").read_text())
    v = m["validation"]
    assert v["reload_max_abs"] <= 1e-5
    assert v["onnx_parity_max_abs"] <= 1e-4
    shapes = m["subnetwork"]["layer_shapes"]
    assert sum(s["heads"] for s in shapes) < 16 or sum(s["ffn"] for s in shapes) < 4 * 64
    assert [i.name for i in onnx.load(str(out / "model.onnx")).graph.input] == ["input_ids", "attention_mask"]
    t = load_local(toy_csv)
    p = Predictor(out)
    assert p.accuracy(t.eval.texts, t.eval.labels) == pytest.approx(v["accuracy"]["bundle"], abs=1e-9)
    preds = p.predict(["great film", "", "awful plot " * 30])
    assert len(preds) == 3 and all(abs(sum(r.probabilities) - 1) < 1e-5 for r in preds)
