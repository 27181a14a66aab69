"""T5: the encoder (for classification, ``encoder.block``) and, for text-to-text, the decoder's
self-attention and cross-attention (``decoder.block``). Block 0 of each stack owns its relative-position bias.

The first block computes the bias [1, H, L, L] for all H heads and returns it; ``T5Stack`` passes
it on to every later block. A head-pruned block holds the source indices of its heads (buffer
``HEAD_IDS`` on its ``SelfAttention``); a forward pre-hook gives the attention only those rows of
the bias (computing the full bias first when the block owns ``relative_attention_bias``) and a
forward hook returns the *full* bias, so later blocks still see every head. In the decoder the full
bias is computed for the cached positions too (the keys are past + new tokens).

Cross-attention has no position bias: block 0 hands a zero bias of *its* head count to every later
block, which breaks as soon as blocks keep different numbers of cross-attention heads. Once any
cross-attention is head-pruned, every block's cross-attention drops the bias it is handed, so each
makes zeros of its own head count.
"""

from probscale_edge.adapters.base import HEAD_IDS, Adapter, register

_FULL_BIAS = "probscale_full_position_bias"  # private kwarg from the pre-hook to the forward hook


def _as_keywords(args, kwargs):
    """T5Attention(hidden_states, mask, key_value_states, position_bias, cache): position_bias and cache as keywords."""
    args, kwargs = tuple(args), dict(kwargs)
    if len(args) > 3:
        kwargs.update(zip(("position_bias", "cache"), args[3:]))
        args = args[:3]
    return args, kwargs


def _select_bias_heads(attn, args, kwargs):
    """Forward pre-hook of T5Attention(hidden_states, mask=None, key_value_states=None, position_bias=None, ...)."""
    ids = getattr(attn, HEAD_IDS, None)
    if ids is None:
        return None
    args, kwargs = _as_keywords(args, kwargs)
    full = kwargs.get("position_bias")
    if full is None:
        if not attn.has_relative_attention_bias:
            return None  # no bias anywhere (not a T5 encoder layout): nothing to select
        hs = kwargs.get("hidden_states", args[0] if args else None)
        n = hs.shape[1]
        cache = kwargs.get("cache")
        past = cache.get_seq_length(attn.layer_idx) if cache is not None and attn.is_decoder else 0
        past = past.clone() if hasattr(past, "clone") else past  # as T5Attention does (a static cache's tensor)
        full = attn.compute_bias(n, past + n, device=hs.device, past_seen_tokens=past)
    kwargs["position_bias"] = full.index_select(1, ids)
    kwargs[_FULL_BIAS] = full
    return args, kwargs


def _return_full_bias(attn, args, kwargs, output):
    """Forward hook: hand the bias of all heads (not this block's rows) on to the next block."""
    full = kwargs.get(_FULL_BIAS)
    if full is None:
        return None
    return (output[0], full) + tuple(output[2:])


@register
class T5EncoderAdapter(Adapter):
    model_types = ("t5",)
    layers_path = "encoder.block"
    embeddings_path = "shared"
    word_embeddings_path = "shared"
    tied_word_embeddings = True  # encoder.embed_tokens is the same module
    num_layers_key = "num_layers"
    hidden_key = "d_model"
    heads_key = "num_heads"
    ffn_key = "d_ff"
    uses_token_type_ids = False
    shared_position_bias = True
    q = "layer.0.SelfAttention.q"
    k = "layer.0.SelfAttention.k"
    v = "layer.0.SelfAttention.v"
    o = "layer.0.SelfAttention.o"
    attn_module = "layer.0.SelfAttention"
    ffn_in = "layer.1.DenseReluDense.wi"
    ffn_out = "layer.1.DenseReluDense.wo"

    def head_dim(self, encoder):
        return encoder.config.d_kv

    # ------------------------------------------------------------------ gated FFN (T5 v1.1, Flan-T5)
    # ``T5DenseGatedActDense``: act(wi_0 x) * wi_1 x -> wo. Neuron j is row j of wi_0 and of wi_1 and column j
    # of wo. A block is gated when its DenseReluDense has wi_0; otherwise (T5 v1.0, wi) the base methods apply.
    def _dense(self, layer):
        return self.get_module(layer, self.ffn_out.rsplit(".", 1)[0])

    def _gated(self, layer) -> bool:
        return hasattr(self._dense(layer), "wi_0")

    def ffn_linears(self, layer):
        """(input, output) projections; for a gated block (wi_0, wo) (wi_1 has the shape of wi_0)."""
        if not self._gated(layer):
            return super().ffn_linears(layer)
        dense = self._dense(layer)
        return dense.wi_0, dense.wo

    def cut_ffn(self, encoder, layer, idx):
        if not self._gated(layer):
            return super().cut_ffn(encoder, layer, idx)
        from probscale_edge.prune import slice_linear

        dense = self._dense(layer)
        dense.wi_0 = slice_linear(dense.wi_0, idx, 0)
        dense.wi_1 = slice_linear(dense.wi_1, idx, 0)
        dense.wo = slice_linear(dense.wo, idx, 1)

    def ffn_width(self, layer):
        if not self._gated(layer):
            return super().ffn_width(layer)
        return self._dense(layer).wo.in_features

    def unit_costs(self, encoder, layer):
        costs = super().unit_costs(encoder, layer)
        if self._gated(layer):
            dense = self._dense(layer)
            costs["neuron"] = sum(dense.wi_0.in_features + (1 if lin.bias is not None else 0)
                                  for lin in (dense.wi_0, dense.wi_1)) + dense.wo.out_features
        return costs

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
        attn = self.get_module(layer, self.attn_module)
        attn.n_heads = num_heads
        attn.inner_dim = num_heads * head_dim

    def install_head_map(self, attn):
        attn.register_forward_pre_hook(_select_bias_heads, with_kwargs=True)
        attn.register_forward_hook(_return_full_bias, with_kwargs=True)


def _own_zero_bias(attn, args, kwargs):
    """Forward pre-hook of a cross-attention in a decoder with pruned cross heads: drop the zero bias that block 0
    made for its own head count (the attention then makes one of its own)."""
    args, kwargs = _as_keywords(args, kwargs)
    kwargs["position_bias"] = None
    return args, kwargs


class T5DecoderAdapter(T5EncoderAdapter):
    """The decoder stack of a T5ForConditionalGeneration: self-attention heads, FFN neurons, whole blocks.
    Not registered by model type (the registry's "t5" is the encoder); :mod:`probscale_edge.seq2seq` uses it."""

    model_types = ()
    layers_path = "decoder.block"
    num_layers_key = "num_decoder_layers"
    ffn_in = "layer.2.DenseReluDense.wi"
    ffn_out = "layer.2.DenseReluDense.wo"

    def keep_layers(self, model, keep):
        blocks = self.layers(model)
        bias = blocks[0].layer[0].SelfAttention.relative_attention_bias
        Adapter.keep_layers(self, model, keep)
        for i, blk in enumerate(self.layers(model)):
            att = blk.layer[0].SelfAttention
            att.has_relative_attention_bias = i == 0
            att.relative_attention_bias = bias if i == 0 else None
        model.config.num_decoder_layers = model.decoder.config.num_layers = len(keep)


class T5CrossAttentionAdapter(T5DecoderAdapter):
    """The decoder's cross-attention heads (queries from the decoder, keys and values from the encoder)."""

    q = "layer.1.EncDecAttention.q"
    k = "layer.1.EncDecAttention.k"
    v = "layer.1.EncDecAttention.v"
    o = "layer.1.EncDecAttention.o"
    attn_module = "layer.1.EncDecAttention"
    shared_position_bias = False

    def own_zero_bias(self, model) -> None:
        """Every cross-attention makes its own zero bias (needed once blocks differ in cross-attention heads)."""
        for blk in self.layers(model):
            attn = self.get_module(blk, self.attn_module)
            if not getattr(attn, "_probscale_own_bias", False):
                attn.register_forward_pre_hook(_own_zero_bias, with_kwargs=True)
                attn._probscale_own_bias = True
