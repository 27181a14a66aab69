"""BERT-layout encoders: every family whose layers are BERT's modules (``encoder.layer[i]``:
``attention.self.query/key/value``, ``attention.output.dense``, ``intermediate.dense``, ``output.dense``;
``embeddings.word_embeddings``) and whose forward needs nothing beyond input_ids, attention_mask and
token_type_ids. A family is a row of ``model_types``, not a class; each row is checked by
tests/stages/test_families_bert_layout.py (non-uniform prune equal to zeroed units, reload, ONNX).

Pre-LayerNorm variants (roberta-prelayernorm, xlm-roberta-xl, megatron-bert: a final norm after the layers),
factorized embeddings (rembert, roformer: a projection to the hidden size) and rotary positions
(roformer: the same rotation for every head) need nothing else. Families checked and left out, and why:
the docstring of that test file."""

from probscale_edge.adapters.base import Adapter, register


@register
class BertAdapter(Adapter):
    model_types = ("bert", "roberta", "xlm-roberta", "electra", "camembert",
                   "data2vec-text", "roberta-prelayernorm", "xlm-roberta-xl", "ernie", "megatron-bert",
                   "rembert", "roformer", "splinter", "visual_bert")
    layers_path = "encoder.layer"
    q = "attention.self.query"
    k = "attention.self.key"
    v = "attention.self.value"
    o = "attention.output.dense"
    attn_module = "attention.self"
    ffn_in = "intermediate.dense"
    ffn_out = "output.dense"


@register
class BertLayoutNoTokenTypesAdapter(BertAdapter):
    """The BERT layout without token-type embeddings: the forward ignores token_type_ids, so the exported
    graph has no such input (and the runtime must not feed one)."""

    model_types = ("bert-generation",)
    uses_token_type_ids = False
