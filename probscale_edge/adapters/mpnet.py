"""MPNet: BERT-like layers, but one relative-position bias shared by all layers (sized by heads)."""

from probscale_edge.adapters.base import Adapter, register


@register
class MPNetAdapter(Adapter):
    model_types = ("mpnet",)
    layers_path = "encoder.layer"
    uses_token_type_ids = False
    supports_head_pruning = False
    q = "attention.attn.q"
    k = "attention.attn.k"
    v = "attention.attn.v"
    o = "attention.attn.o"
    attn_module = "attention.attn"
    ffn_in = "intermediate.dense"
    ffn_out = "output.dense"

    def shared_bias_heads(self, encoder):
        return encoder.encoder.relative_attention_bias
