"""Gated-FFN T5 (T5 v1.1 / Flan-T5 layout: ``feed_forward_proj="gated-gelu"``, ``T5DenseGatedActDense`` with
``wi_0``, ``wi_1``, ``wo``; an untied LM head) in both T5 paths: the encoder classifier (``build``) and the
text-to-text surgery (``prune-seq2seq``). Neuron j is row j of wi_0 and of wi_1 and column j of wo.

Random-init models (no T5 weights offline): shapes, parameter counts, equivalence and parity only. transformers 5
ties every T5 table at construction (``tie_word_embeddings=False`` only turns off the decoder output scaling), so
the seq2seq models get their own LM head, as Flan-T5 checkpoints have; the decoder input table stays the shared one.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

from probscale_edge.modeling import EncoderClassifier, load_classifier, load_encoder, predict_logits, save_classifier  # noqa: E402
from probscale_edge.prune import SubnetworkSpec, apply_spec  # noqa: E402
from probscale_edge.seq2seq import (  # noqa: E402
    Seq2SeqSpec,
    apply_seq2seq_spec,
    layer_shapes,
    load_seq2seq,
    param_counts,
    save_seq2seq,
)

D, DKV, H, FF, N, V = 32, 8, 4, 64, 3, 1000
TEXTS = ["a short one", "Ünïcödé and 中文 text with emoji 😀", "", "a much longer sentence " * 8, "x"]


def gated_config(vocab=V, **over):
    from transformers import T5Config

    kw = dict(vocab_size=vocab, d_model=D, d_kv=DKV, num_heads=H, d_ff=FF, num_layers=N, num_decoder_layers=N,
              feed_forward_proj="gated-gelu", tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
              decoder_start_token_id=0)
    kw.update(over)
    return T5Config(**kw)


def gated_encoder_folder(folder, tokenizer_src, seed=0):
    """A random-init T5 v1.1-style encoder folder (T5EncoderModel) with the MiniLM tokenizer."""
    from transformers import AutoTokenizer, T5EncoderModel

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_src))
    model = T5EncoderModel(gated_config(tok.vocab_size))
    assert hasattr(model.encoder.block[0].layer[1].DenseReluDense, "wi_0")
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def gated_t5(vocab=V, seed=0):
    """A random-init T5 v1.1-style T5ForConditionalGeneration with its own (untied) LM head."""
    from transformers import T5ForConditionalGeneration

    torch.manual_seed(seed)
    m = T5ForConditionalGeneration(gated_config(vocab)).eval()
    m.lm_head = torch.nn.Linear(D, vocab, bias=False)
    torch.nn.init.normal_(m.lm_head.weight, std=D ** -0.5)
    assert not m.config.scale_decoder_outputs and m.lm_head.weight is not m.shared.weight
    return m


def zero_neurons(blocks, ffn_index, spec_ffn):
    """Hooks that zero the dropped neurons (the input of wo outside the kept ones) of ``blocks``."""
    handles = []
    for src, keep in spec_ffn.items():
        wo = blocks[int(src)].layer[ffn_index].DenseReluDense.wo
        m = torch.zeros(wo.in_features)
        m[list(keep)] = 1.0
        handles.append(wo.register_forward_pre_hook(lambda mod, inp, m=m: (inp[0] * m,)))
    return handles


# ---------------------------------------------------------------------------------------------- encoder path
ENC_SPEC = SubnetworkSpec(keep_layers=[0, 2], heads={"0": [0, 2, 3], "2": [1]},
                          ffn={"0": list(range(0, FF, 2)), "2": [1, 5, 7]})
ENC_FFN = SubnetworkSpec(keep_layers=[0, 1, 2], ffn={"0": list(range(0, FF, 3)), "1": [2, 9, 40, 63], "2": list(range(50))})


def test_gated_encoder_classifier_prunes_reloads_and_exports(tmp_path, minilm_dir):
    from probscale_edge.converters.onnx_export import ExportConfig, export_onnx

    enc, tok, _ = load_encoder(str(gated_encoder_folder(tmp_path / "src", minilm_dir)))
    model = EncoderClassifier(enc, 3).eval()
    a = model.adapter
    first = a.layers(model.encoder)[0]
    assert a.unit_costs(model.encoder, first) == {"head": 4 * D * DKV, "neuron": 3 * D}
    assert a.ffn_width(first) == FF
    before = model.param_counts()
    pruned = apply_spec(model, ENC_SPEC).eval()
    shapes = pruned.layer_shapes()
    assert [(s["heads"], s["ffn"], s.get("head_ids")) for s in shapes] == [(3, 32, [0, 2, 3]), (1, 3, [1])]
    for blk, s in zip(a.layers(pruned.encoder), shapes):  # every projection of a neuron was cut
        dense = blk.layer[1].DenseReluDense
        assert dense.wi_0.weight.shape == dense.wi_1.weight.shape == (s["ffn"], D) and dense.wo.weight.shape == (D, s["ffn"])
    after = pruned.param_counts()
    assert after["total"] == sum(p.numel() for p in pruned.parameters())
    assert after["embedding"] == before["embedding"]
    block = 4 * D * DKV * H + 3 * D * FF + 2 * D  # attention, gated FFN, two layer norms (no biases)
    removed = block + 4 * D * DKV * (1 + 3) + 3 * D * ((FF - 32) + (FF - 3))  # block 1; heads; neurons
    assert before["non_embedding"] - after["non_embedding"] == removed

    folder = save_classifier(pruned, tok, tmp_path / "pruned", ["a", "b", "c"])
    reloaded, tok2, meta = load_classifier(folder)
    assert meta["layer_shapes"] == shapes
    diff = float(np.abs(predict_logits(pruned, tok, TEXTS) - predict_logits(reloaded, tok2, TEXTS)).max())
    assert diff <= 1e-5
    rep = export_onnx(reloaded, tok2, tmp_path / "m.onnx", ExportConfig(), parity_texts=TEXTS)
    assert rep["parity_max_abs"] <= 1e-4, rep
    print(f"encoder: reload max |diff| {diff:.1e}, ONNX max |logit diff| {rep['parity_max_abs']:.1e}")


def test_gated_encoder_neuron_cut_equals_zeroed_wo_columns(tmp_path):
    """Cut neurons == the full model with those neurons zeroed at wo's input; slicing wi_1 with other rows than
    wi_0 gives other outputs (so the check sees a wrong cut)."""
    from transformers import T5EncoderModel

    from probscale_edge.prune import slice_linear

    torch.manual_seed(1)
    model = EncoderClassifier(T5EncoderModel(gated_config()), 3).eval()
    pruned = apply_spec(model, ENC_FFN).eval()
    assert [s["ffn"] for s in pruned.layer_shapes()] == [22, 4, 50]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, V, (3, 13), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    mask[2, 4:] = 0
    with torch.no_grad():
        full = model(ids, mask)
        got = pruned(ids, mask)
        handles = zero_neurons(model.encoder.encoder.block, 1, ENC_FFN.ffn)
        try:
            want = model(ids, mask)
        finally:
            for h in handles:
                h.remove()
    assert float((got - want).abs().max()) <= 1e-5
    assert float((got - full).abs().max()) > 1e-3  # the cut changed the model
    wrong = apply_spec(model, ENC_FFN).eval()
    dense = wrong.encoder.encoder.block[1].layer[1].DenseReluDense
    src = model.encoder.encoder.block[1].layer[1].DenseReluDense
    dense.wi_1 = slice_linear(src.wi_1, torch.tensor([0, 1, 2, 3]), 0)  # the first rows, not the kept ones
    with torch.no_grad():
        assert float((wrong(ids, mask) - want).abs().max()) > 1e-3


def test_gated_t5_v1_0_layout_is_unchanged(tmp_path):
    """The non-gated (T5 v1.0) blocks keep the base surgery: wi/wo, 2 x d_model per neuron."""
    from transformers import T5EncoderModel

    model = EncoderClassifier(T5EncoderModel(gated_config(feed_forward_proj="relu")), 2).eval()
    a = model.adapter
    layer = a.layers(model.encoder)[0]
    assert a.unit_costs(model.encoder, layer) == {"head": 4 * D * DKV, "neuron": 2 * D}
    assert a.ffn_linears(layer) == (layer.layer[1].DenseReluDense.wi, layer.layer[1].DenseReluDense.wo)
    pruned = apply_spec(model, ENC_FFN)
    assert pruned.encoder.encoder.block[1].layer[1].DenseReluDense.wi.weight.shape == (4, D)


def test_gated_t5_encoder_builds_and_predicts(tmp_path, minilm_dir, toy_csv):
    """A whole tiny build on the T5 v1.1 encoder (it crashed after the fine-tune before), run by the runtime."""
    import json

    from probscale_edge.pipeline import BuildConfig, TaskSpec, build
    from probscale_edge.runtime import Predictor

    src = gated_encoder_folder(tmp_path / "t5v11", minilm_dir)
    out = tmp_path / "bundle"
    cfg = BuildConfig.create(model=str(src), tasks=[TaskSpec(str(toy_csv))], output=str(out), target="x86_64",
                             budget=0.5, epochs=1, lr=1e-3, student_lr=1e-3, use_cache=False, latency_runs=3)
    build(cfg, log=lambda *_: None)
    disk = json.loads((out / "manifest.json").read_text())
    shapes = disk["subnetwork"]["layer_shapes"]
    assert sum(s["ffn"] for s in shapes) < N * FF or sum(s["heads"] for s in shapes) < N * H
    assert disk["validation"]["reload_max_abs"] <= 1e-5
    assert disk["validation"]["onnx_parity_max_abs"] <= 1e-4
    preds = Predictor(out).predict(["great film", "awful plot", ""])
    assert len(preds) == 3 and all(abs(sum(r.probabilities) - 1) < 1e-5 for r in preds)
    assert {r.label for r in preds} <= {"pos", "neg"}


# ---------------------------------------------------------------------------------------------- text-to-text
S2S = Seq2SeqSpec(  # blocks 0 dropped (the position-bias owners), heads and gated neurons cut unevenly
    SubnetworkSpec([1, 2], {"1": [1, 3]}, {"2": list(range(0, FF, 3))}),
    SubnetworkSpec([0, 2], {"0": [0, 2, 3], "2": [1]}, {"0": list(range(20)), "2": [3, 7, 11, 60]}),
    {"0": [0, 2], "2": [0, 1, 3]})
S2S_FFN = Seq2SeqSpec(SubnetworkSpec([0, 1, 2], {}, {"0": list(range(0, FF, 2)), "2": [1, 2, 3, 50]}),
                      SubnetworkSpec([0, 1, 2], {}, {"1": list(range(30)), "2": [0, 63]}))


def batch(seed=1, vocab=V):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, vocab, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    return ids, mask, torch.randint(2, vocab, (3, 6), generator=g)


def _expected_counts(shapes):
    enc = sum(4 * D * DKV * s["heads"] + 3 * D * s["ffn"] + 2 * D for s in shapes["encoder"])
    dec = sum(4 * D * DKV * (s["heads"] + s["cross_heads"]) + 3 * D * s["ffn"] + 3 * D for s in shapes["decoder"])
    return enc + dec + 2 * D + 2 * 32 * H  # final norms; one relative-bias table per stack (32 buckets x heads)


def test_gated_seq2seq_neuron_cut_equals_masking():
    """Cut gated neurons in encoder and decoder blocks == the full model with wo's inputs zeroed there:
    teacher-forced logits and greedy tokens (the cached path)."""
    model = gated_t5()
    ids, mask, dec = batch()
    pruned = apply_seq2seq_spec(model, S2S_FFN)
    handles = zero_neurons(model.encoder.block, 1, S2S_FFN.encoder.ffn) + zero_neurons(model.decoder.block, 2,
                                                                                        S2S_FFN.decoder.ffn)
    gen = dict(max_new_tokens=12, do_sample=False, eos_token_id=[])
    try:
        with torch.no_grad():
            want = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
            got = pruned(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
            want_tokens = model.generate(input_ids=ids, attention_mask=mask, **gen)
            got_tokens = pruned.generate(input_ids=ids, attention_mask=mask, **gen)
    finally:
        for h in handles:
            h.remove()
    assert float((got - want).abs().max()) <= 1e-5
    assert torch.equal(got_tokens, want_tokens)
    assert all(len(set(r)) >= 3 for r in got_tokens[:, 1:].tolist())  # not an echo
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    assert float((full - got).abs().max()) > 1e-3


def test_gated_seq2seq_non_uniform_saves_reloads_and_exports(tmp_path):
    from probscale_edge.converters.seq2seq import export_t5_seq2seq, seq2seq_parity

    model = gated_t5()
    ids, mask, dec = batch()
    pruned = apply_seq2seq_spec(model, S2S)
    shapes = layer_shapes(pruned)
    assert [(s["heads"], s["ffn"]) for s in shapes["encoder"]] == [(2, FF), (H, 22)]
    assert [(s["heads"], s["ffn"], s["cross_heads"]) for s in shapes["decoder"]] == [(3, 20, 2), (1, 4, 3)]
    dense = pruned.decoder.block[1].layer[2].DenseReluDense
    assert dense.wi_0.out_features == dense.wi_1.out_features == dense.wo.in_features == 4
    assert param_counts(model)["non_embedding"] == _expected_counts(layer_shapes(model))
    assert param_counts(pruned)["non_embedding"] == _expected_counts(shapes)
    assert param_counts(pruned)["embedding"] == param_counts(model)["embedding"] == 2 * V * D  # shared + LM head

    folder = save_seq2seq(pruned, None, tmp_path / "model")
    reloaded = load_seq2seq(folder)
    assert layer_shapes(reloaded) == shapes and not reloaded.config.scale_decoder_outputs
    assert reloaded.lm_head.weight is not reloaded.shared.weight
    with torch.no_grad():
        a = pruned(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        b = reloaded(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    diff = float((a - b).abs().max())
    assert diff <= 1e-5

    out = tmp_path / "onnx"
    export_t5_seq2seq(reloaded, out)
    r = seq2seq_parity(reloaded, out, ids.numpy(), mask.numpy(), max_new_tokens=12)
    assert r["tokens_equal"], (r["ort_tokens"], r["torch_tokens"])
    assert r["all_steps_max_abs_logit"] <= 1e-4
    assert r["calls"]["decoder_with_past"] == 11
    assert all(len(set(row)) >= 3 for row in np.asarray(r["ort_tokens"])[:, 1:].tolist())
    print(f"seq2seq: reload max |diff| {diff:.1e}, ONNX max |logit diff| {r['all_steps_max_abs_logit']:.1e}")


def _units(m):
    """Parameters of the heads and FFN neurons of both stacks (blocks without norms and position biases)."""
    from probscale_edge.seq2seq import block_params

    return block_params(m) - sum(p.numel() for st in (m.encoder, m.decoder) for n, p in st.block.named_parameters()
                                 if "layer_norm" in n or "relative" in n)


def test_gated_selection_counts_three_projections_per_neuron():
    """select_seq2seq costs a gated neuron 3 x d_model: with every head kept (min_heads), the FFN alone meets the
    budget to within one neuron (at 2 x d_model it would cut some 50 neurons too many)."""
    from probscale_edge.seq2seq import select_seq2seq

    model = gated_t5()
    rng = np.random.default_rng(0)
    scores = {(st, li, kind): rng.random(FF if kind == "ffn" else H) + 0.1
              for st, kinds in (("encoder", ("heads", "ffn")), ("decoder", ("heads", "cross", "ffn")))
              for li in range(N) for kind in kinds}
    spec = select_seq2seq(model, scores, budget=0.75, min_heads=H)
    assert not spec.encoder.heads and not spec.decoder.heads and not spec.cross_heads
    pruned = apply_seq2seq_spec(model, spec)
    assert 0.75 * _units(model) - 3 * D < _units(pruned) <= 0.75 * _units(model) + 1e-9


def test_gated_prune_seq2seq_cli_by_budget(tmp_path, minilm_dir):
    import csv
    import json
    import subprocess
    import sys

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(minilm_dir))
    src = tmp_path / "flan"
    model = gated_t5(vocab=len(tok))
    model.save_pretrained(str(src))
    tok.save_pretrained(str(src))
    data = tmp_path / "pairs.csv"
    with open(data, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["source", "target"])
        w.writerows([(f"what is {i} plus {i}", f"it is {2 * i}") for i in range(30)])
    out = tmp_path / "pruned"
    cmd = [sys.executable, "-m", "probscale_edge", "prune-seq2seq", "--model", str(src), "--budget", "0.5",
           "--data", str(data), "-o", str(out), "--onnx"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[PASS] reload" in r.stderr and "[PASS] ONNX greedy generation" in r.stderr
    spec = Seq2SeqSpec.from_dict(json.loads((out / "spec.json").read_text()))
    assert spec.encoder.ffn and spec.decoder.ffn  # gated neurons were cut in both stacks
    pruned = load_seq2seq(out)
    assert layer_shapes(pruned) == layer_shapes(apply_seq2seq_spec(model, spec))
    assert hasattr(pruned.decoder.block[0].layer[2].DenseReluDense, "wi_0")
    # the budget in parameters (a gated neuron is 3 x d_model): within one head of half the units
    assert 0.5 * _units(model) - 4 * D * DKV <= _units(pruned) <= 0.5 * _units(model) + 1e-9
    assert (out / "onnx" / "decoder_with_past.onnx").exists()
