"""T5 encoder-decoder surgery (text-to-text): blocks, self/cross-attention heads and FFN neurons per layer.

Random-init T5 (no T5 weights exist offline): shapes, equivalence and parity only. The decoder's input table
is drawn apart from the shared one (as in test_seq2seq_export) so greedy generation does not just echo.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

from probscale_edge.converters.seq2seq import export_t5_seq2seq, seq2seq_parity  # noqa: E402
from probscale_edge.errors import ProbscaleError  # noqa: E402
from probscale_edge.prune import SubnetworkSpec  # noqa: E402
from probscale_edge.seq2seq import (  # noqa: E402
    Seq2SeqSpec,
    apply_seq2seq_spec,
    layer_shapes,
    load_seq2seq,
    param_counts,
    save_seq2seq,
)

D, DKV, H, FF, V = 64, 16, 4, 128, 1000


def tiny_t5(layers=3, **over):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    kw = dict(vocab_size=V, d_model=D, d_kv=DKV, num_heads=H, d_ff=FF, num_layers=layers, num_decoder_layers=layers,
              pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    kw.update(over)
    m = T5ForConditionalGeneration(T5Config(**kw)).eval()
    m.decoder.embed_tokens = torch.nn.Embedding(kw["vocab_size"], D)
    torch.nn.init.normal_(m.decoder.embed_tokens.weight)
    return m


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, V, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    return ids, mask, torch.randint(2, V, (3, 6), generator=g)


def masked(model, spec: Seq2SeqSpec):
    """The unpruned model with the spec's dropped heads and neurons zeroed (hooks on the output projections)."""
    handles = []

    def zero(lin, keep, width):
        m = torch.zeros(lin.in_features // width)
        m[list(keep)] = 1.0
        m = m.repeat_interleave(width)
        handles.append(lin.register_forward_pre_hook(lambda mod, inp: (inp[0] * m,)))

    for stack, part, attn_i, ffn_i in ((model.encoder, spec.encoder, 0, 1), (model.decoder, spec.decoder, 0, 2)):
        for src, heads in part.heads.items():
            blk = stack.block[int(src)]
            att = blk.layer[attn_i].SelfAttention
            zero(att.o, heads, DKV)
        for src, neurons in part.ffn.items():
            zero(stack.block[int(src)].layer[ffn_i].DenseReluDense.wo, neurons, 1)
    for src, heads in spec.cross_heads.items():
        zero(model.decoder.block[int(src)].layer[1].EncDecAttention.o, heads, DKV)
    return handles


UNITS = Seq2SeqSpec(  # every block kept; heads and neurons cut unevenly, including block 0 of each stack
    SubnetworkSpec([0, 1, 2], {"0": [1, 3], "2": [2]}, {"1": list(range(0, FF, 3))}),
    SubnetworkSpec([0, 1, 2], {"0": [0, 2, 3], "1": [1]}, {"2": list(range(40))}),
    {"0": [1, 2], "2": [0, 1, 3]})  # block 0 with 2 cross heads: its zero bias would not broadcast to 3 or 4
NON_UNIFORM = Seq2SeqSpec(  # also drops block 0 of both stacks (the owners of the position biases)
    SubnetworkSpec([1, 2], {"1": [1, 3]}, {"2": list(range(0, FF, 3))}),
    SubnetworkSpec([1, 2], {"1": [0, 2, 3], "2": [1]}, {"1": list(range(40))}),
    {"1": [0, 2], "2": [0, 1, 3]})


def test_head_and_neuron_surgery_equals_masking():
    """Cutting heads (encoder self, decoder self with the shared position bias, cross) and FFN neurons gives the
    outputs of the full model with those units zeroed: teacher-forced logits, and greedy tokens (the cached path)."""
    model = tiny_t5()
    ids, mask, dec = batch()
    pruned = apply_seq2seq_spec(model, UNITS)
    handles = masked(model, UNITS)
    try:
        with torch.no_grad():
            ref = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
            got = pruned(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
            gen = dict(max_new_tokens=12, do_sample=False, eos_token_id=[])
            ref_tokens = model.generate(input_ids=ids, attention_mask=mask, **gen)
            got_tokens = pruned.generate(input_ids=ids, attention_mask=mask, **gen)
    finally:
        for h in handles:
            h.remove()
    assert float((ref - got).abs().max()) <= 1e-5
    assert torch.equal(ref_tokens, got_tokens)
    assert all(len(set(r)) >= 3 for r in got_tokens[:, 1:].tolist())  # not an echo
    with torch.no_grad():  # and the cut really changed the model
        full = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    assert float((full - got).abs().max()) > 1e-3


def _expected_counts(shapes):
    enc = sum(4 * D * DKV * s["heads"] + 2 * D * s["ffn"] + 2 * D for s in shapes["encoder"])
    dec = sum(4 * D * DKV * (s["heads"] + s["cross_heads"]) + 2 * D * s["ffn"] + 3 * D for s in shapes["decoder"])
    return enc + dec + 2 * D + 2 * 32 * H  # final norms; one relative-bias table per stack (32 buckets x heads)


def test_non_uniform_t5_saves_reloads_and_exports(tmp_path):
    """#3's must-show for T5 text-to-text: non-uniform shapes (blocks 0 dropped) save, reload to the same logits,
    and export to ONNX with a key/value cache whose greedy generation matches PyTorch within 1e-4."""
    model = tiny_t5()
    ids, mask, dec = batch()
    pruned = apply_seq2seq_spec(model, NON_UNIFORM)
    shapes = layer_shapes(pruned)
    assert [(s["heads"], s["ffn"]) for s in shapes["encoder"]] == [(2, FF), (H, 43)]
    assert [(s["heads"], s["ffn"], s["cross_heads"]) for s in shapes["decoder"]] == [(3, 40, 2), (1, FF, 3)]
    assert shapes["decoder"][1]["head_ids"] == [1]  # the position-bias row it keeps
    assert param_counts(pruned)["non_embedding"] == _expected_counts(shapes)
    assert param_counts(model)["non_embedding"] == _expected_counts(layer_shapes(model))
    assert param_counts(pruned)["embedding"] == param_counts(model)["embedding"] == 2 * V * D

    folder = save_seq2seq(pruned, None, tmp_path / "model")
    reloaded = load_seq2seq(folder)
    assert layer_shapes(reloaded) == shapes
    with torch.no_grad():
        a = pruned(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        b = reloaded(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    assert float((a - b).abs().max()) <= 1e-5

    out = tmp_path / "onnx"
    export_t5_seq2seq(reloaded, out)
    r = seq2seq_parity(reloaded, out, ids.numpy(), mask.numpy(), max_new_tokens=12)
    assert r["tokens_equal"], (r["ort_tokens"], r["torch_tokens"])
    assert r["all_steps_max_abs_logit"] <= 1e-4
    assert r["calls"]["decoder_with_past"] == 11
    tokens = np.asarray(r["ort_tokens"])[:, 1:]
    assert all(len(set(row)) >= 3 for row in tokens.tolist())
    assert Seq2SeqSpec.from_dict(NON_UNIFORM.to_dict()) == NON_UNIFORM


def test_bad_specs_and_models_are_clear_errors(tmp_path, tiny_bert):
    model = tiny_t5(layers=2)
    enc = SubnetworkSpec([0, 1])
    with pytest.raises(ProbscaleError, match="invalid decoder blocks"):
        apply_seq2seq_spec(model, Seq2SeqSpec(enc, SubnetworkSpec([0, 2])))
    with pytest.raises(ProbscaleError, match="invalid encoder blocks"):
        apply_seq2seq_spec(model, Seq2SeqSpec(SubnetworkSpec([]), SubnetworkSpec([0])))
    with pytest.raises(ProbscaleError, match="which it drops"):
        apply_seq2seq_spec(model, Seq2SeqSpec(enc, SubnetworkSpec([1], {"1": [0]}), {"0": [1]}), inplace=True)
    assert layer_shapes(model)["decoder"][1]["heads"] == H  # refused before anything was cut
    # gated-FFN T5 (v1.1, Flan-T5) is no longer refused (its surgery: tests/stages/test_t5_gated.py)
    gated = apply_seq2seq_spec(tiny_t5(layers=2, feed_forward_proj="gated-gelu"),
                               Seq2SeqSpec(SubnetworkSpec([0, 1], ffn={"1": [0, 5]}), SubnetworkSpec([0])))
    assert [s["ffn"] for s in layer_shapes(gated)["encoder"]] == [FF, 2] and len(gated.decoder.block) == 1
    from probscale_edge.modeling import load_encoder

    bert, _, _ = load_encoder(str(tiny_bert))
    with pytest.raises(ProbscaleError, match="T5ForConditionalGeneration"):
        apply_seq2seq_spec(bert, Seq2SeqSpec(enc, SubnetworkSpec([0])))
    with pytest.raises(ProbscaleError, match="not a probscale-edge seq2seq folder"):
        load_seq2seq(tmp_path)
    assert len(model.decoder.block) == 2  # nothing was cut in place


def test_cli_prunes_exports_and_leaves_nothing_on_bad_input(tmp_path):
    import json
    import subprocess
    import sys

    src = tmp_path / "t5"
    tiny_t5().save_pretrained(str(src))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(NON_UNIFORM.to_dict()))
    out = tmp_path / "pruned"
    cmd = [sys.executable, "-m", "probscale_edge", "prune-seq2seq", "--model", str(src), "--spec", str(spec), "-o", str(out)]
    r = subprocess.run(cmd + ["--onnx"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[PASS] reload" in r.stderr and "[PASS] ONNX greedy generation" in r.stderr
    assert layer_shapes(load_seq2seq(out))["decoder"][0]["cross_heads"] == 2
    assert (out / "onnx" / "decoder_with_past.onnx").exists()
    again = subprocess.run(cmd, capture_output=True, text=True)  # exists, no --force
    assert again.returncode == 2 and "already exists" in again.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"encoder": {"keep_layers": [0, 7]}, "decoder": {"keep_layers": [0]}}))
    r = subprocess.run(cmd[:-4] + ["--spec", str(bad), "-o", str(tmp_path / "never")], capture_output=True, text=True)
    assert r.returncode == 2 and "invalid encoder blocks" in r.stderr
    assert not (tmp_path / "never").exists() and not list(tmp_path.glob(".never*"))


def test_fisher_selection_meets_the_budget_and_drops_dead_units_first(minilm_dir):
    """select_seq2seq on text-to-text Fisher scores: the blocks' heads and neurons end at the budget, and units
    that cannot affect the loss (their output weights zeroed) score 0 and are the first to go."""
    from transformers import AutoTokenizer

    from probscale_edge.seq2seq import block_params, select_seq2seq, unit_scores

    tok = AutoTokenizer.from_pretrained(str(minilm_dir))
    model = tiny_t5(vocab_size=len(tok))
    with torch.no_grad():
        model.decoder.block[1].layer[0].SelfAttention.o.weight[:, 2 * DKV:3 * DKV] = 0  # decoder self head 2
        model.decoder.block[0].layer[1].EncDecAttention.o.weight[:, :DKV] = 0  # cross head 0 of block 0
        model.encoder.block[0].layer[1].DenseReluDense.wo.weight[:, :10] = 0  # encoder neurons 0-9
    sources = [f"translate number {i} into words please" for i in range(40)]
    targets = [f"the number is {i}" for i in range(40)]
    scores = unit_scores(model, tok, sources, targets, max_examples=32, batch_size=8)
    assert set(scores) == {(st, li, kind) for st, _, kind in
                           [("encoder", 0, "heads"), ("encoder", 0, "ffn"), ("decoder", 0, "heads"),
                            ("decoder", 0, "cross"), ("decoder", 0, "ffn")] for li in range(3)}
    assert scores[("decoder", 1, "heads")][2] == 0 and scores[("decoder", 0, "cross")][0] == 0
    assert (scores[("encoder", 0, "ffn")][:10] == 0).all() and (scores[("encoder", 0, "ffn")][10:] > 0).all()
    units = lambda m: block_params(m) - sum(p.numel() for st in (m.encoder, m.decoder) for n, p in  # noqa: E731
                                            st.block.named_parameters() if "layer_norm" in n or "relative" in n)
    before = units(model)
    spec = select_seq2seq(model, scores, budget=0.4)
    pruned = apply_seq2seq_spec(model, spec)
    assert 0.4 * before - 4 * D * DKV <= units(pruned) <= 0.4 * before + 1e-9
    assert 2 not in spec.decoder.heads["1"] and 0 not in spec.cross_heads["0"]
    assert not set(range(10)) & set(spec.encoder.ffn["0"])
    shapes = layer_shapes(pruned)
    assert len({s["ffn"] for s in shapes["encoder"] + shapes["decoder"]}) > 1  # non-uniform
    with torch.no_grad():
        ids = tok(sources[:2], return_tensors="pt", padding=True)
        assert torch.isfinite(pruned(**ids, decoder_input_ids=ids["input_ids"][:, :4]).logits).all()
    with pytest.raises(ProbscaleError, match="not a fraction"):
        select_seq2seq(model, scores, budget=1.5)


def test_cli_selects_by_budget_from_pairs(tmp_path, minilm_dir):
    import csv
    import json
    import subprocess
    import sys

    from transformers import AutoTokenizer

    src = tmp_path / "t5"
    tok = AutoTokenizer.from_pretrained(str(minilm_dir))
    tiny_t5(vocab_size=len(tok)).save_pretrained(str(src))
    tok.save_pretrained(str(src))
    data = tmp_path / "pairs.csv"
    with open(data, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["source", "target"])
        w.writerows([(f"what is {i} plus {i}", f"it is {2 * i}") for i in range(30)])
    out = tmp_path / "pruned"
    base = [sys.executable, "-m", "probscale_edge", "prune-seq2seq", "--model", str(src), "-o", str(out)]
    r = subprocess.run(base + ["--budget", "0.3", "--data", str(data)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    spec = Seq2SeqSpec.from_dict(json.loads((out / "spec.json").read_text()))
    assert spec.encoder.ffn and spec.decoder.ffn and spec.cross_heads  # every kind was cut
    assert layer_shapes(load_seq2seq(out)) == layer_shapes(apply_seq2seq_spec(tiny_t5(vocab_size=len(tok)), spec))
    r = subprocess.run(base + ["--force", "--budget", "0.3"], capture_output=True, text=True)
    assert r.returncode == 2 and "a budget with (source, target) pairs" in r.stderr
