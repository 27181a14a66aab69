"""Every family added to BertAdapter's table (probscale_edge/adapters/bert.py) beyond the first five, one row each:
random-init tiny config, non-uniform prune equal to the full model with the same units zeroed, save/reload,
ONNX parity and input names, and a forward without token_type_ids.

Checked in transformers 5.24 (tiny random configs through AutoModel.from_config) and left out:
- xmod: the forward needs language ids (raises unless set_default_language() was called);
- bros: needs bbox; layoutlm: bbox defaults to zeros, but its forward calls the pooler unconditionally (the
  pooler is dropped) and its checkpoints are trained on OCR boxes the pipeline never feeds;
- lilt (a second, layout attention stream with its own projections), layoutlmv2/v3, lxmert, git (visual inputs
  or a vision tower inside the model);
- markuplm: the model runs with default xpaths, but its tokenizer takes nodes + xpaths (texts are split into
  nodes), which the runtime's tokenizer.json does not reproduce; roc_bert: trained with shape and
  pronunciation ids from a Python-only tokenizer (no tokenizer.json), which the pipeline never feeds;
- tapas: 7 token-type channels; canine: characters, no word embedding (get_input_embeddings not implemented);
- longformer (global-attention projections), luke (entity-aware query projections), convbert (span-based
  convolution heads), nystromformer (a depthwise convolution over heads), mobilebert (bottlenecks): extra
  per-head weights that the BERT surgery does not cut;
- big_bird: short inputs switch block-sparse attention to full by rebuilding the self-attention from the
  config, which undoes pruned heads (reload fails);
- mra (on CPU, without its CUDA kernel, the attention returns zeros), yoso (LSH attention: CUDA-only kernel unless
  use_expectation, and a head-mixing convolution with conv_window), ibert (quantized QuantLinear modules);
- esm: the surgery fits, but the folder transformers 5 writes renames LayerNorm weights (gamma/beta) and the
  checkpoint-key check in load_encoder rejects it;
- nezha, qdqbert: no longer in transformers 5.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probscale_edge.adapters import get_adapter
from probscale_edge.adapters.bert import BertAdapter, BertLayoutNoTokenTypesAdapter
from probscale_edge.modeling import EncoderClassifier, load_classifier, load_encoder, predict_logits, save_classifier
from probscale_edge.prune import SubnetworkSpec, apply_spec

TEXTS = ["a short one", "Ünïcödé and 中文 text with emoji 😀", "", "a much longer sentence " * 8, "x"]
FIRST_FIVE = ("bert", "roberta", "xlm-roberta", "electra", "camembert")  # tests/stages/test_surgery.py
# model_type -> config beyond hidden 32 / 4 layers / 4 heads / FFN 64
ROWS = {
    "data2vec-text": {"pad_token_id": 1},
    "roberta-prelayernorm": {"pad_token_id": 1},
    "xlm-roberta-xl": {"pad_token_id": 1},
    "ernie": {"use_task_id": True},  # ERNIE 3.0: task-type embeddings (ids default to zeros)
    "megatron-bert": {},
    "rembert": {"input_embedding_size": 16, "output_embedding_size": 16},
    "roformer": {"embedding_size": 16},
    "splinter": {},
    "visual_bert": {},  # text only: no visual_embeds
    "bert-generation": {},  # no token-type embedding
}
SPEC = SubnetworkSpec(keep_layers=[0, 2, 3], heads={"0": [0, 2, 3], "2": [1]},
                      ffn={"0": list(range(0, 64, 2)), "3": [1, 5, 7]})


def make_family(model_type, folder, tokenizer_src, seed=0):
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_src))
    kw = dict(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
              intermediate_size=64, max_position_embeddings=162, pad_token_id=0)
    kw.update(ROWS[model_type])
    AutoModel.from_config(AutoConfig.for_model(model_type, **kw)).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def _zeroed(model, spec):
    """The full model with the units ``spec`` cuts zeroed (and its dropped layers dropped)."""
    ref = apply_spec(model, SubnetworkSpec(keep_layers=spec.keep_layers)).eval()
    a = ref.adapter
    layers, hd = a.layers(ref.encoder), a.head_dim(ref.encoder)
    pos = {src: i for i, src in enumerate(spec.keep_layers)}
    with torch.no_grad():
        for src, keep in spec.heads.items():
            o = a.attention_linears(layers[pos[int(src)]])[3]
            for h in set(range(o.in_features // hd)) - set(keep):
                o.weight[:, h * hd:(h + 1) * hd] = 0
        for src, keep in spec.ffn.items():
            fo = a.ffn_linears(layers[pos[int(src)]])[1]
            fo.weight[:, sorted(set(range(fo.in_features)) - set(keep))] = 0
    return ref


def test_table_and_rows_agree():
    assert set(BertAdapter.model_types) | set(BertLayoutNoTokenTypesAdapter.model_types) == set(FIRST_FIVE) | set(ROWS)
    assert all(isinstance(get_adapter(mt), BertAdapter) for mt in ROWS)
    assert get_adapter("bert-generation").input_names() == ["input_ids", "attention_mask"]


@pytest.mark.parametrize("model_type", list(ROWS))
def test_family_prune_reload_export(model_type, tmp_path, minilm_dir):
    import onnxruntime as ort

    from probscale_edge.converters.onnx_export import ExportConfig, export_onnx
    from probscale_edge.modeling import tokenize

    src = make_family(model_type, tmp_path / "src", minilm_dir)
    enc, tok, _ = load_encoder(str(src))
    model = EncoderClassifier(enc, 3).eval()
    adapter = model.adapter
    assert len(adapter.layers(enc)) == 4

    # a forward without token_type_ids; with them they reach the model where the family has token types
    e = tokenize(tok, TEXTS, None, 64)
    ids, mask = e["input_ids"], e["attention_mask"]
    types = getattr(enc.config, "type_vocab_size", None) if adapter.uses_token_type_ids else None
    with torch.no_grad():
        none = model(ids, mask)
        zeros = model(ids, mask, torch.zeros_like(ids))
        ones = model(ids, mask, torch.ones_like(ids) * (mask > 0)) if types != 1 else zeros
        states = model.hidden_states(ids, mask)
    assert (none - zeros).abs().max().item() <= 1e-6
    if types is None:  # no token-type embedding: the classifier does not pass them on
        assert (ones - zeros).abs().max().item() == 0
    elif types > 1:  # they reach the model
        assert (ones - zeros).abs().max().item() > 1e-4
    assert len(states) == 5

    before = model.param_counts()
    pruned = apply_spec(model, SPEC).eval()
    shapes = pruned.layer_shapes()
    assert [s["heads"] for s in shapes] == [3, 1, 4]
    assert [s["ffn"] for s in shapes] == [32, 64, 3]
    after = pruned.param_counts()
    assert after["embedding"] == before["embedding"]
    assert after["total"] == sum(p.numel() for p in pruned.parameters()) < before["total"]
    with torch.no_grad():
        got, want = pruned(ids, mask), _zeroed(model, SPEC)(ids, mask)
        assert (got - want).abs().max().item() <= 1e-5  # the cut units are the ones the spec names
        assert (got - model(ids, mask)).abs().max().item() > 1e-4

    folder = save_classifier(pruned, tok, tmp_path / "pruned", ["a", "b", "c"])
    reloaded, tok2, meta = load_classifier(folder)
    assert meta["layer_shapes"] == shapes
    reload_diff = float(np.abs(predict_logits(pruned, tok, TEXTS) - predict_logits(reloaded, tok2, TEXTS)).max())
    assert reload_diff <= 1e-5

    rep = export_onnx(reloaded, tok2, tmp_path / "m.onnx", ExportConfig(), parity_texts=TEXTS)
    names = [i.name for i in ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).get_inputs()]
    print(f"{model_type}: reload max|diff| {reload_diff:.2e}, onnx max|logit diff| {rep['parity_max_abs']:.2e}, "
          f"inputs {names}")
    assert names == adapter.input_names() == rep["inputs"]
    assert rep["parity_max_abs"] <= 1e-4, rep
