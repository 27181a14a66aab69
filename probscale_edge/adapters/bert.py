"""BERT-style encoders: BERT, RoBERTa, XLM-RoBERTa, ELECTRA (same layer layout)."""

from probscale_edge.adapters.base import Adapter, register


@register
class BertAdapter(Adapter):
    model_types = ("bert", "roberta", "xlm-roberta", "electra", "camembert")
    layers_path = "encoder.layer"
    q = "attention.self.query"
    k = "attention.self.key"
    v = "attention.self.value"
    o = "attention.output.dense"
    attn_module = "attention.self"
    ffn_in = "intermediate.dense"
    ffn_out = "output.dense"
