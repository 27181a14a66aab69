"""DistilBERT: ``transformer.layer`` with q_lin/k_lin/v_lin/out_lin and ffn.lin1/lin2."""

from probscale_edge.adapters.base import Adapter, register


@register
class DistilBertAdapter(Adapter):
    model_types = ("distilbert",)
    layers_path = "transformer.layer"
    num_layers_key = "n_layers"
    hidden_key = "dim"
    heads_key = "n_heads"
    ffn_key = "hidden_dim"
    uses_token_type_ids = False
    q = "attention.q_lin"
    k = "attention.k_lin"
    v = "attention.v_lin"
    o = "attention.out_lin"
    attn_module = "attention"
    ffn_in = "ffn.lin1"
    ffn_out = "ffn.lin2"

    def set_heads(self, layer, num_heads, head_dim):
        attn = self.get_module(layer, self.attn_module)
        attn.n_heads = num_heads
        if hasattr(attn, "dim"):
            attn.dim = num_heads * head_dim
        if hasattr(attn, "attention_head_size"):
            attn.attention_head_size = head_dim
