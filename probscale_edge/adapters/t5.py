"""T5 encoder (for classification): ``encoder.block``; block 0 owns the relative-position bias."""

from probscale_edge.adapters.base import Adapter, register


@register
class T5EncoderAdapter(Adapter):
    model_types = ("t5",)
    layers_path = "encoder.block"
    embeddings_path = "shared"
    word_embeddings_path = "shared"
    num_layers_key = "num_layers"
    hidden_key = "d_model"
    heads_key = "num_heads"
    ffn_key = "d_ff"
    uses_token_type_ids = False
    supports_head_pruning = False
    q = "layer.0.SelfAttention.q"
    k = "layer.0.SelfAttention.k"
    v = "layer.0.SelfAttention.v"
    o = "layer.0.SelfAttention.o"
    attn_module = "layer.0.SelfAttention"
    ffn_in = "layer.1.DenseReluDense.wi"
    ffn_out = "layer.1.DenseReluDense.wo"

    def head_dim(self, encoder):
        return encoder.config.d_kv

    def keep_layers(self, encoder, keep):
        blocks = self.layers(encoder)
        bias = blocks[0].layer[0].SelfAttention.relative_attention_bias
        super().keep_layers(encoder, keep)
        first = self.layers(encoder)[0].layer[0].SelfAttention
        if not first.has_relative_attention_bias:
            first.has_relative_attention_bias = True
            first.relative_attention_bias = bias
        for blk in list(self.layers(encoder))[1:]:
            att = blk.layer[0].SelfAttention
            if att.has_relative_attention_bias:
                att.has_relative_attention_bias = False
                att.relative_attention_bias = None
        encoder.config.num_layers = len(keep)

    def set_heads(self, layer, num_heads, head_dim):
        attn = self._get(layer, self.attn_module)
        attn.n_heads = num_heads
        attn.inner_dim = num_heads * head_dim
