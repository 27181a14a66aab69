"""ALBERT: untying the shared layer (exact parity, honest parameter counts), non-uniform surgery, save/reload,
ONNX parity, and one tiny build through the torch-free runtime.

Random-init configs (hidden 32, 4 heads, FFN 64, embedding 16): shapes, counts and parity only, never accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probscale_edge.modeling import EncoderClassifier, load_classifier, load_encoder, predict_logits, save_classifier
from probscale_edge.prune import SubnetworkSpec, apply_spec

TEXTS = ["a short one", "Ünïcödé and 中文 text with emoji 😀", "", "a much longer sentence " * 8, "x"]
H, FFN, E = 32, 64, 16
# one AlbertLayer: attention q/k/v/dense (+ biases) and its LayerNorm, the FFN pair, the full-layer LayerNorm
PER_LAYER = 4 * (H * H + H) + 2 * H + (H * FFN + FFN) + (FFN * H + H) + 2 * H


def make_albert(folder, tokenizer_src=None, layers=4, groups=1, inner=1, seed=0):
    """A random-init ALBERT folder (with the MiniLM WordPiece tokenizer when given)."""
    from transformers import AlbertConfig, AlbertModel, AutoTokenizer

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_src)) if tokenizer_src else None
    cfg = AlbertConfig(vocab_size=tok.vocab_size if tok else 1000, embedding_size=E, hidden_size=H,
                       num_hidden_layers=layers, num_hidden_groups=groups, inner_group_num=inner,
                       num_attention_heads=4, intermediate_size=FFN, max_position_embeddings=160, pad_token_id=0)
    AlbertModel(cfg).save_pretrained(str(folder))
    if tok:
        tok.save_pretrained(str(folder))
    return folder


def _inputs(n=3, length=13, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 900, (n, length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    mask[2, 4:] = 0
    return ids, mask


def _hidden(enc, ids, mask):
    with torch.no_grad():
        return enc(input_ids=ids, attention_mask=mask).last_hidden_state


@pytest.mark.parametrize("layers,groups,inner", [(4, 1, 1), (4, 2, 1), (3, 1, 2), (6, 2, 2)])
def test_untie_is_exact_and_counted(layers, groups, inner, tmp_path):
    from transformers import AlbertModel

    src = make_albert(tmp_path / "src", layers=layers, groups=groups, inner=inner)
    tied = AlbertModel.from_pretrained(str(src)).eval()
    tied.pooler = None
    ids, mask = _inputs()
    want = _hidden(tied, ids, mask)

    enc, _, _ = load_encoder(str(src))  # unties (AlbertAdapter.prepare_for_surgery)
    got = _hidden(enc, ids, mask)
    print(f"untie {layers}/{groups}/{inner}: max|diff| {(got - want).abs().max().item():.2e}")
    assert (got - want).abs().max().item() <= 1e-6

    depths = layers * inner
    c = enc.config
    assert (c.num_hidden_layers, c.num_hidden_groups, c.inner_group_num) == (depths, depths, 1)
    groups_ = enc.encoder.albert_layer_groups
    assert len(groups_) == depths and all(len(g.albert_layers) == 1 for g in groups_)
    ptrs = [p.data_ptr() for g in groups_ for p in g.parameters()]
    assert len(set(ptrs)) == len(ptrs)  # no depth shares a tensor with another any more
    assert all(m.config is c for g in groups_ for m in g.modules() if hasattr(m, "config"))

    # parameter counts: the checkpoint's (shared layers once) and the untied model's (one copy per depth)
    emb = (1000 * E + 160 * E + 2 * E + 2 * E)  # word, position, token type, LayerNorm
    mapping = E * H + H  # embedding_hidden_mapping_in
    tied_n = emb + mapping + groups * inner * PER_LAYER
    untied_n = emb + mapping + depths * PER_LAYER
    assert c.probscale_untied is True
    layout = c.probscale_shared_layout
    assert (layout["num_hidden_layers"], layout["num_hidden_groups"], layout["inner_group_num"]) == (layers, groups, inner)
    assert layout["checkpoint_parameters"] == {"total": tied_n, "embedding": emb, "non_embedding": tied_n - emb}
    assert layout["untied_parameters"] == {"total": untied_n, "embedding": emb, "non_embedding": untied_n - emb}
    assert sum(p.numel() for p in tied.parameters()) == tied_n
    assert sum(p.numel() for p in enc.parameters()) == untied_n > tied_n
    model = EncoderClassifier(enc, 2)
    assert model.param_counts()["encoder_non_embedding"] == untied_n - emb
    assert len(model.layer_shapes()) == depths

    # the copies are independent: changing depth 0 changes the output, and the other depths are unchanged
    with torch.no_grad():
        groups_[0].albert_layers[0].ffn_output.weight.mul_(-3.0)
    assert (_hidden(enc, ids, mask) - want).abs().max().item() > 1e-3
    assert all(not torch.equal(groups_[0].albert_layers[0].ffn_output.weight, g.albert_layers[0].ffn_output.weight)
               for g in groups_[1:])


def test_untied_checkpoint_is_left_as_it_is(tmp_path):
    """A checkpoint whose depths share nothing (groups == layers) is not copied, and says so."""
    src = make_albert(tmp_path / "src", layers=4, groups=4)
    enc, _, _ = load_encoder(str(src))
    assert enc.config.probscale_untied is False
    assert not hasattr(enc.config, "probscale_shared_layout")
    assert sum(p.numel() for p in enc.parameters()) == 1000 * E + 164 * E + E * H + H + 4 * PER_LAYER


def test_nonuniform_prune_save_reload_export(tmp_path, minilm_dir):
    from probscale_edge.converters.onnx_export import ExportConfig, export_onnx

    src = make_albert(tmp_path / "src", minilm_dir, layers=4, groups=1)
    enc, tok, _ = load_encoder(str(src))
    model = EncoderClassifier(enc, 3).eval()
    before = model.param_counts()
    spec = SubnetworkSpec(keep_layers=[0, 2, 3], heads={"0": [0, 2, 3], "2": [1]},
                          ffn={"0": list(range(0, 64, 2)), "3": [1, 5, 7]})
    pruned = apply_spec(model, spec).eval()
    shapes = pruned.layer_shapes()
    assert [s["heads"] for s in shapes] == [3, 1, 4]
    assert [s["ffn"] for s in shapes] == [32, 64, 3]
    c = pruned.encoder.config
    assert (c.num_hidden_layers, c.num_hidden_groups, c.inner_group_num) == (3, 3, 1)
    after = pruned.param_counts()
    assert after["embedding"] == before["embedding"]
    assert after["total"] == sum(p.numel() for p in pruned.parameters())
    hd = H // 4
    # exact: one layer dropped; 1 + 3 heads cut (q/k/v rows with bias, dense columns); 32 + 61 neurons cut
    head_cost = 3 * (H * hd + hd) + H * hd
    neuron_cost = H + 1 + H
    cut = PER_LAYER + 4 * head_cost + (32 + 61) * neuron_cost
    assert before["non_embedding"] - after["non_embedding"] == cut
    # the pruned model is the full one with those units zeroed (each depth cut on its own copy)
    ids, mask = _inputs()
    with torch.no_grad():
        base = apply_spec(model, SubnetworkSpec(keep_layers=[0, 2, 3])).eval()
        layers = base.adapter.layers(base.encoder)
        for li, keep in ((0, [0, 2, 3]), (1, [1])):
            o = layers[li].albert_layers[0].attention.dense
            for h in set(range(4)) - set(keep):
                o.weight[:, h * hd:(h + 1) * hd] = 0
        for li, keep in ((0, list(range(0, 64, 2))), (2, [1, 5, 7])):
            fo = layers[li].albert_layers[0].ffn_output
            fo.weight[:, sorted(set(range(64)) - set(keep))] = 0
        assert (pruned(ids, mask) - base(ids, mask)).abs().max().item() <= 1e-5
        assert (pruned(ids, mask) - model(ids, mask)).abs().max().item() > 1e-4

    folder = save_classifier(pruned, tok, tmp_path / "pruned", ["a", "b", "c"])
    reloaded, tok2, meta = load_classifier(folder)
    assert meta["layer_shapes"] == shapes
    assert reloaded.encoder.config.probscale_untied is True  # config.json carries the flag and the layout
    assert reloaded.encoder.config.probscale_shared_layout["num_hidden_groups"] == 1
    a = predict_logits(pruned, tok, TEXTS)
    b = predict_logits(reloaded, tok2, TEXTS)
    reload_diff = float(np.abs(a - b).max())
    assert reload_diff <= 1e-5

    rep = export_onnx(reloaded, tok2, tmp_path / "m.onnx", ExportConfig(), parity_texts=TEXTS)
    print(f"albert reload max|diff| {reload_diff:.2e}, onnx max|logit diff| {rep['parity_max_abs']:.2e}")
    assert rep["parity_max_abs"] <= 1e-4, rep


def test_folder_saved_with_shared_layers_reloads_untied(tmp_path, minilm_dir):
    """A classifier saved before untying (built by hand on a tied AlbertModel) reloads as saved, then unties."""
    from transformers import AlbertModel

    src = make_albert(tmp_path / "src", minilm_dir, layers=4, groups=2)
    tied = AlbertModel.from_pretrained(str(src)).eval()
    tied.pooler = None
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(src))
    model = EncoderClassifier(tied, 2).eval()
    assert len(model.layer_shapes()) == 2  # the groups, not the depths: why everything loads untied
    want = predict_logits(model, tok, TEXTS)
    reloaded, tok2, _ = load_classifier(save_classifier(model, tok, tmp_path / "tied", ["a", "b"]))
    assert len(reloaded.layer_shapes()) == 4 and reloaded.encoder.config.probscale_untied is True
    assert float(np.abs(predict_logits(reloaded, tok2, TEXTS) - want).max()) <= 1e-6
    from probscale_edge.errors import ProbscaleError

    with pytest.raises(ProbscaleError, match="shares its layers"):
        apply_spec(model, SubnetworkSpec(keep_layers=[0]))


def test_hidden_states_of_layer_subsets(tmp_path, minilm_dir):
    """Our per-layer states equal transformers' own; composed subsets (a copy, as keep_layers is custom) run
    exactly the kept depths."""
    from probscale_edge.modeling import tokenize
    from probscale_edge.probe import composed

    enc, tok, _ = load_encoder(str(make_albert(tmp_path / "src", minilm_dir, layers=4, groups=2)))
    model = EncoderClassifier(enc, 2).eval()
    e = tokenize(tok, TEXTS[:3], None, 32)
    args = (e["input_ids"], e["attention_mask"], e.get("token_type_ids"))
    kw = {"input_ids": e["input_ids"], "attention_mask": e["attention_mask"]}
    with torch.no_grad():
        mine = model.hidden_states(*args)
        theirs = model.encoder(**kw, output_hidden_states=True).hidden_states
        assert len(mine) == len(theirs) == 5
        assert max((a - b).abs().max().item() for a, b in zip(mine, theirs)) <= 1e-6
        for keep in ([0, 3], [1, 2], [3]):
            with composed(model, keep) as m:
                hs = m.hidden_states(*args)
                assert len(hs) == len(keep) + 1
                assert (hs[-1] - m.encoder(**kw).last_hidden_state).abs().max().item() <= 1e-6
                ref = apply_spec(model, SubnetworkSpec(keep_layers=keep))
                assert (hs[-1] - ref.encoder(**kw).last_hidden_state).abs().max().item() <= 1e-6
        assert model.encoder.config.num_hidden_layers == 4  # composed left the model as it was


def test_tiny_build_end_to_end(tmp_path, minilm_dir, toy_csv):
    from probscale_edge.pipeline import BuildConfig, TaskSpec, build
    from probscale_edge.runtime import Predictor

    src = make_albert(tmp_path / "albert", minilm_dir, layers=4, groups=1)
    out = tmp_path / "bundle"
    cfg = BuildConfig.create(model=str(src), tasks=[TaskSpec(str(toy_csv))], output=str(out), target="x86_64",
                             budget=0.5, epochs=1, lr=1e-3, student_lr=1e-3, use_cache=False, latency_runs=3)
    m = build(cfg, log=lambda *_: None)
    assert m["source_model"]["model_type"] == "albert"
    v = m["validation"]
    print(f"albert build: reload {v['reload_max_abs']:.2e}, onnx {v['onnx_parity_max_abs']:.2e}, "
          f"parameters {m['parameters']['original']['total']} -> {m['parameters']['pruned']['total']}")
    assert v["reload_max_abs"] <= 1e-5 and v["onnx_parity_max_abs"] <= 1e-4
    p = m["parameters"]
    # "original" counts the untied teacher (4 copies of the shared layer), more than the checkpoint holds
    assert p["original"]["encoder_non_embedding"] == E * H + H + 4 * PER_LAYER
    assert p["pruned"]["non_embedding"] < p["original"]["non_embedding"]
    preds = Predictor(out).predict(["great film", "awful plot", ""])
    assert len(preds) == 3 and all(abs(sum(r.probabilities) - 1) < 1e-5 for r in preds)
