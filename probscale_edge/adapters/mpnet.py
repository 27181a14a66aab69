"""MPNet: BERT-like layers, but one relative-position bias shared by all layers (sized by heads).

``MPNetEncoder`` computes the bias [B, H, L, L] once for all H heads and passes it to every layer.
A head-pruned layer holds the source indices of its heads (buffer ``HEAD_IDS``) and a forward
pre-hook on its self-attention keeps only those rows of the bias (``index_select``: traces to an
ONNX Gather). The shared ``relative_attention_bias`` embedding itself is never cut.
"""

from probscale_edge.adapters.base import HEAD_IDS, Adapter, register


def _select_bias_heads(attn, args, kwargs):
    """Forward pre-hook of MPNetSelfAttention(hidden_states, attention_mask, position_bias, ...)."""
    ids = getattr(attn, HEAD_IDS, None)
    if ids is None:
        return None
    if len(args) > 2:
        if args[2] is not None:
            args = args[:2] + (args[2].index_select(1, ids),) + tuple(args[3:])
    elif kwargs.get("position_bias") is not None:
        kwargs = dict(kwargs, position_bias=kwargs["position_bias"].index_select(1, ids))
    return args, kwargs


@register
class MPNetAdapter(Adapter):
    model_types = ("mpnet",)
    layers_path = "encoder.layer"
    uses_token_type_ids = False
    shared_position_bias = True
    q = "attention.attn.q"
    k = "attention.attn.k"
    v = "attention.attn.v"
    o = "attention.attn.o"
    attn_module = "attention.attn"
    ffn_in = "intermediate.dense"
    ffn_out = "output.dense"

    def shared_bias_heads(self, encoder):
        return encoder.encoder.relative_attention_bias

    def install_head_map(self, attn):
        attn.register_forward_pre_hook(_select_bias_heads, with_kwargs=True)
