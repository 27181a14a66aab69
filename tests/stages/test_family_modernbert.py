"""ModernBERT: fused-QKV head pruning, gated-FFN neuron pruning, layer dropping that keeps each kept layer's
attention type (local / global) and attention norm; reload, ONNX export and a tiny build through the runtime.

Random-init configs (shapes and numerical parity, never accuracy). ``local_attention=4`` (a sliding half-window
of 2 tokens) so that local and global layers compute visibly different things on short texts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probscale_edge.modeling import EncoderClassifier, load_classifier, load_encoder, predict_logits, save_classifier
from probscale_edge.prune import SubnetworkSpec, apply_spec

TEXTS = ["a short one", "Ünïcödé and 中文 text with emoji 😀", "", "a much longer sentence " * 8, "x",
         "one two three four five six seven eight nine ten"]
# 4 layers, a global layer every 3rd: [full, sliding, sliding, full]
TYPES = ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]
# layer 0 (global, the one without an attention norm) dropped; non-uniform heads and neurons
SPEC = SubnetworkSpec(keep_layers=[1, 2, 3], heads={"1": [0, 2, 3], "3": [1]},
                      ffn={"1": list(range(0, 64, 2)), "2": [1, 5, 7]})


def _config(vocab: int, **kw):
    from transformers import ModernBertConfig

    base = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
                max_position_embeddings=160, pad_token_id=0, bos_token_id=101, eos_token_id=102, cls_token_id=101,
                sep_token_id=102, global_attn_every_n_layers=3, local_attention=4,
                initializer_range=0.2)  # larger than stock (0.02): attention patterns, and so window and type, matter
    base.update(kw)
    return ModernBertConfig(**base)


def make_modernbert(folder, tokenizer_src, seed: int = 0, **kw):
    """A random-init ModernBERT folder (save_pretrained) with the MiniLM WordPiece tokenizer."""
    from transformers import AutoTokenizer, ModernBertModel

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_src))
    model = ModernBertModel(_config(tok.vocab_size, **kw))
    with torch.no_grad():  # norms away from 1/0, so that a missing or extra attention norm shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.3)
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def src(tmp_path_factory, minilm_dir):
    return make_modernbert(tmp_path_factory.mktemp("modernbert") / "src", minilm_dir)


def _load(folder):
    enc, tok, _ = load_encoder(str(folder))
    return EncoderClassifier(enc, 3).eval(), tok


def _batch(seed=0):
    torch.manual_seed(seed)
    ids = torch.randint(1000, 9000, (3, 17))
    mask = torch.ones_like(ids)
    mask[1, 11:] = 0
    mask[2, 5:] = 0
    return ids, mask


def _logits(model, ids, mask):
    with torch.no_grad():
        return model(ids, mask)


def _zeroed(model, spec: SubnetworkSpec):
    """A copy of the full model computing what ``spec`` keeps: dropped layers' output projections zeroed (the
    layer becomes the identity: both branches are residual), dropped heads' and neurons' Wo columns zeroed."""
    import copy

    ref = copy.deepcopy(model).eval()
    a = ref.adapter
    hd = a.head_dim(ref.encoder)
    with torch.no_grad():
        for li, layer in enumerate(a.layers(ref.encoder)):
            wo, fo = layer.attn.Wo, layer.mlp.Wo
            if li not in spec.keep_layers:
                for lin in (wo, fo):
                    lin.weight.zero_()
                    if lin.bias is not None:
                        lin.bias.zero_()
                continue
            for h in set(range(4)) - set(spec.heads.get(str(li), range(4))):
                wo.weight[:, h * hd:(h + 1) * hd] = 0
            for j in set(range(64)) - set(spec.ffn.get(str(li), range(64))):
                fo.weight[:, j] = 0
    return ref


def test_prune_shapes_counts_and_types(src):
    model, _ = _load(src)
    a = model.adapter
    assert type(a).__name__ == "ModernBertAdapter" and not a.uses_token_type_ids
    assert [s["attention"] for s in model.layer_shapes()] == TYPES
    assert [s["attn_norm"] for s in model.layer_shapes()] == [False, True, True, True]
    before = model.param_counts()
    pruned = apply_spec(model, SPEC).eval()
    shapes = pruned.layer_shapes()
    assert [s["heads"] for s in shapes] == [3, 4, 1]
    assert [s["ffn"] for s in shapes] == [32, 3, 64]
    assert [s["attention"] for s in shapes] == TYPES[1:]  # each kept layer's own type, not renumbered ones
    assert [s["attn_norm"] for s in shapes] == [True, True, True]  # layer 1 keeps its attention norm
    assert pruned.encoder.config.layer_types == TYPES[1:] and pruned.encoder.config.num_hidden_layers == 3
    layers = a.layers(pruned.encoder)
    assert layers[0].attn.sliding_window == 3 and layers[2].attn.sliding_window is None  # half-window 2, + 1
    assert tuple(layers[0].attn.Wqkv.weight.shape) == (3 * 3 * 8, 32) and tuple(layers[0].attn.Wo.weight.shape) == (32, 24)
    assert tuple(layers[1].mlp.Wi.weight.shape) == (2 * 3, 32) and tuple(layers[1].mlp.Wo.weight.shape) == (32, 3)
    after = pruned.param_counts()
    assert after["embedding"] == before["embedding"]
    assert after["total"] == sum(p.numel() for p in pruned.parameters())
    # the removed parameters are exactly: one whole layer, 1 + 3 heads, 32 + 61 neurons
    c = a.unit_costs(model.encoder, a.layers(model.encoder)[1])
    layer0 = sum(p.numel() for p in a.layers(model.encoder)[0].parameters())
    assert before["non_embedding"] - after["non_embedding"] == layer0 + 4 * c["head"] + 93 * c["neuron"]


@pytest.mark.parametrize("bias", [False, True])
def test_unit_costs_are_the_parameters_a_cut_removes(bias):
    from transformers import ModernBertModel

    torch.manual_seed(0)
    enc = ModernBertModel(_config(1000, attention_bias=bias, mlp_bias=bias))
    model = EncoderClassifier(enc, 2)
    a = model.adapter
    c = a.unit_costs(enc, a.layers(enc)[1])
    hidden = 32
    assert c == {"head": 3 * (hidden * 8 + 8 * bias) + hidden * 8, "neuron": 2 * (hidden + bias) + hidden}
    n = model.param_counts()["total"]
    one_head = apply_spec(model, SubnetworkSpec([0, 1, 2, 3], heads={"1": [0, 1, 3]}))
    one_neuron = apply_spec(model, SubnetworkSpec([0, 1, 2, 3], ffn={"2": list(range(63))}))
    assert n - one_head.param_counts()["total"] == c["head"]
    assert n - one_neuron.param_counts()["total"] == c["neuron"]
    assert a.ffn_width(a.layers(one_neuron.encoder)[2]) == 63


@pytest.mark.parametrize("keep", [[1, 2, 3], [0, 2, 3]])
def test_cut_model_equals_full_model_with_units_zeroed(src, keep):
    """The cut model computes what the full model computes with the dropped layers, heads and neurons zeroed:
    the q, k and v thirds keep the same heads, Wi's input and gate halves the same neurons, and each kept
    layer its own attention type (layer 0 dropped: a global layer first; [0, 2, 3]: global, local, global)."""
    model, _ = _load(src)
    spec = SubnetworkSpec(keep_layers=keep, heads={str(keep[0]): [0, 2, 3], "3": [1]},
                          ffn={str(keep[0]): list(range(0, 64, 2)), "2": [1, 5, 7]})
    pruned = apply_spec(model, spec).eval()
    ids, mask = _batch()
    got, want, full = _logits(pruned, ids, mask), _logits(_zeroed(model, spec), ids, mask), _logits(model, ids, mask)
    assert (got - want).abs().max().item() <= 1e-5
    assert (got - full).abs().max().item() > 1e-3  # the cut did change the model
    # the same cut with the types a fresh 3-layer config would give (by position: global, local, local)
    wrong = apply_spec(model, spec).eval()
    stock = ["full_attention", "sliding_attention", "sliding_attention"]
    assert [layer.attention_type for layer in wrong.adapter.layers(wrong.encoder)] != stock
    for layer, kind in zip(wrong.adapter.layers(wrong.encoder), stock):
        layer.attention_type = kind
    wrong.encoder.config.layer_types = stock
    assert (_logits(wrong, ids, mask) - want).abs().max().item() > 1e-3  # the check has teeth


def test_fisher_masks_equal_the_cut(src):
    """importance.mask_units (hooks on the inputs of attn.Wo and mlp.Wo, as Fisher scoring reads them)
    computes the same function as cutting the units: the hooked tensors are head-major / neuron-indexed."""
    from probscale_edge.importance import mask_units

    model, _ = _load(src)
    spec = SubnetworkSpec([0, 1, 2, 3], heads={"0": [1, 3], "2": [0]}, ffn={"1": [2, 9, 40], "3": list(range(50))})
    ids, mask = _batch(1)
    handles = mask_units(model, {"heads": spec.heads, "ffn": spec.ffn})
    try:
        masked = _logits(model, ids, mask)
    finally:
        for h in handles:
            h.remove()
    got = _logits(apply_spec(model, spec).eval(), ids, mask)
    assert (got - masked).abs().max().item() <= 1e-5
    assert (got - _logits(model, ids, mask)).abs().max().item() > 1e-3


def test_nonuniform_prune_save_reload_export(src, tmp_path):
    import onnxruntime as ort

    from probscale_edge.converters.onnx_export import ExportConfig, export_onnx
    from probscale_edge.modeling import tokenize

    model, tok = _load(src)
    pruned = apply_spec(model, SPEC).eval()
    shapes = pruned.layer_shapes()
    folder = save_classifier(pruned, tok, tmp_path / "pruned", ["a", "b", "c"])
    reloaded, tok2, meta = load_classifier(folder)
    assert meta["layer_shapes"] == shapes == reloaded.layer_shapes()
    layers = reloaded.adapter.layers(reloaded.encoder)
    assert [layer.attention_type for layer in layers] == TYPES[1:]
    assert not isinstance(layers[0].attn_norm, torch.nn.Identity)  # rebuilt: a fresh layer 0 has none
    a = predict_logits(pruned, tok, TEXTS)
    b = predict_logits(reloaded, tok2, TEXTS)
    assert np.abs(a - b).max() <= 1e-5
    ids, mask = _batch()
    want = _logits(_zeroed(model, SPEC), ids, mask)
    assert (_logits(reloaded, ids, mask) - want).abs().max().item() <= 1e-5

    rep = export_onnx(reloaded, tok2, tmp_path / "m.onnx", ExportConfig(), parity_texts=TEXTS)
    assert rep["parity_max_abs"] <= 1e-4, rep
    assert rep["inputs"] == ["input_ids", "attention_mask"]
    # one text per run: every sequence length (shorter and longer than the export sample) through the graph
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    worst = 0.0
    for text in TEXTS:
        enc = tokenize(tok2, [text], None, 128)
        feed = {n: enc[n].numpy() for n in ("input_ids", "attention_mask")}
        got = sess.run(["logits"], feed)[0]
        ref = _logits(reloaded, enc["input_ids"], enc["attention_mask"]).numpy()
        worst = max(worst, float(np.abs(got - ref).max()))
    assert worst <= 1e-4


def test_tiny_build_predicts_through_the_runtime(src, toy_csv, tmp_path):
    from probscale_edge.data import load_local
    from probscale_edge.pipeline import BuildConfig, TaskSpec, build
    from probscale_edge.runtime import Predictor

    out = tmp_path / "bundle"
    m = build(BuildConfig.create(model=str(src), tasks=[TaskSpec(str(toy_csv))], output=str(out), target="x86_64",
                                 budget=0.5, epochs=1, lr=1e-3, student_lr=1e-3, use_cache=False, latency_runs=3),
              log=lambda *_: None)
    v = m["validation"]
    assert v["onnx_parity_max_abs"] <= 1e-4 and v["reload_max_abs"] <= 1e-5
    assert m["parameters"]["pruned"]["non_embedding"] < m["parameters"]["original"]["non_embedding"]
    assert all("attention" in s for s in m["subnetwork"]["layer_shapes"])
    p = Predictor(out)
    assert p.input_names == ["input_ids", "attention_mask"]
    preds = p.predict(["great film", "", "an awful, boring plot " * 6])
    assert len(preds) == 3 and all(abs(sum(r.probabilities) - 1) < 1e-5 for r in preds)
    t = load_local(toy_csv)
    assert p.accuracy(t.eval.texts, t.eval.labels) == pytest.approx(v["accuracy"]["bundle"], abs=1e-9)
