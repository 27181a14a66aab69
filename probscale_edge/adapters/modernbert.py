"""ModernBERT (transformers ``ModernBertModel``): fused QKV, gated FFN, alternating local/global attention.

Layout of one ``layers[i]`` (``ModernBertEncoderLayer``):

- ``attn.Wqkv``: ONE linear, hidden -> 3 x heads x head_dim; the forward views its output as
  [3, heads, head_dim] (q rows first, then k, then v) with ``heads`` inferred (``view(..., 3, -1, head_dim)``),
  so a head-pruned layer needs no head-count attribute: cutting the same head rows in each third and the same
  columns of ``attn.Wo`` is the whole surgery. Rotary embeddings act per head (head_dim unchanged).
- ``mlp.Wi``: ONE linear, hidden -> 2 x intermediate (``chunk(2)``: input half, then gate half);
  ``mlp.Wo``: intermediate -> hidden. Neuron j is row j of the input half, row I + j of the gate half and
  column j of ``Wo``.
- attention type: ``layer.attention_type`` ("full_attention" or "sliding_attention") picks the layer's mask
  and rotary table in ``ModernBertModel.forward``; ``attn.sliding_window`` (flash attention's window) goes with
  it. Both are set at construction from ``config.layer_types[layer_idx]`` (stock configs: every
  ``global_attn_every_n_layers``-th layer is global), never re-derived from ``layer_idx`` later.
- ``attn_norm``: ``nn.Identity`` in layer 0 only (the embeddings end in a norm), a LayerNorm elsewhere.

Dropping layers keeps each kept layer's own modules, so its type and its attention norm stay; ``keep_layers``
writes the kept layers' types to ``config.layer_types`` (saved in config.json: a reload constructs the same
types, and the rotary tables / masks of exactly those types). ``layer_shape`` also records ``attention`` and
``attn_norm`` per layer, and :meth:`ModernBertAdapter.restore_layer` re-applies them on reload (a fresh layer
0 has no attention norm, but a kept layer that was not the source's layer 0 has one).
"""

from __future__ import annotations

from probscale_edge.adapters.base import Adapter, register
from probscale_edge.errors import ProbscaleError

TYPES = ("full_attention", "sliding_attention")


@register
class ModernBertAdapter(Adapter):
    model_types = ("modernbert",)
    layers_path = "layers"
    embeddings_path = "embeddings"
    word_embeddings_path = "embeddings.tok_embeddings"
    uses_token_type_ids = False
    q = k = v = "attn.Wqkv"  # one fused projection; attention_linears returns it three times
    o = "attn.Wo"
    attn_module = "attn"
    ffn_in = "mlp.Wi"  # fused input + gate halves
    ffn_out = "mlp.Wo"

    # ------------------------------------------------------------------ shapes
    def _heads(self, encoder, layer) -> int:
        return self.get_module(layer, self.q).out_features // (3 * self.head_dim(encoder))

    def ffn_width(self, layer) -> int:
        return self.get_module(layer, self.ffn_out).in_features

    def layer_shape(self, encoder, layer) -> dict:
        import torch.nn as nn

        return {"heads": self._heads(encoder, layer), "ffn": self.ffn_width(layer),
                "attention": layer.attention_type, "attn_norm": not isinstance(layer.attn_norm, nn.Identity)}

    def unit_costs(self, encoder, layer) -> dict:
        qkv, wo = self.get_module(layer, self.q), self.get_module(layer, self.o)
        wi = self.get_module(layer, self.ffn_in)
        hd, hidden = self.head_dim(encoder), qkv.in_features
        head = 3 * (hidden * hd + (hd if qkv.bias is not None else 0)) + hidden * hd
        neuron = 2 * (hidden + (1 if wi.bias is not None else 0)) + wo.out_features
        return {"head": head, "neuron": neuron}

    # ------------------------------------------------------------------ surgery
    def cut_heads(self, encoder, layer, idx) -> None:
        """``idx``: the kept heads' dimensions (into one third); the same rows of q, k and v, columns of Wo."""
        import torch

        from probscale_edge.prune import slice_linear

        qkv = self.get_module(layer, self.q)
        third = qkv.out_features // 3
        rows = torch.cat([idx, idx + third, idx + 2 * third])
        self.set_module(layer, self.q, slice_linear(qkv, rows, 0))
        self.set_module(layer, self.o, slice_linear(self.get_module(layer, self.o), idx, 1))

    def set_heads(self, layer, num_heads, head_dim) -> None:
        # the forward infers the head count from Wqkv; these are for readers (and kernels that look)
        attn = self.get_module(layer, self.attn_module)
        attn.num_heads = num_heads
        attn.num_attention_heads = num_heads
        attn.head_dim = head_dim

    def cut_ffn(self, encoder, layer, idx) -> None:
        """Neuron j: row j of Wi's input half and row I + j of its gate half; column j of Wo."""
        import torch

        from probscale_edge.prune import slice_linear

        width = self.ffn_width(layer)
        self.set_module(layer, self.ffn_in, slice_linear(self.get_module(layer, self.ffn_in),
                                                         torch.cat([idx, idx + width]), 0))
        self.set_module(layer, self.ffn_out, slice_linear(self.get_module(layer, self.ffn_out), idx, 1))

    def keep_layers(self, encoder, keep) -> None:
        """The kept layers keep their modules (attention type, window, attention norm); the config lists
        their types, so that config.json rebuilds them and the model computes only the types it uses."""
        types = [layer.attention_type for layer in self.layers(encoder)]
        super().keep_layers(encoder, keep)
        encoder.config.layer_types = [types[i] for i in keep]

    def restore_layer(self, encoder, layer, shape: dict) -> None:
        """Re-apply a saved layer's attention type, window and attention norm to a freshly built layer."""
        import torch.nn as nn

        kind = shape.get("attention")
        if kind is not None and kind != layer.attention_type:
            if kind not in TYPES:
                raise ProbscaleError(f"layer shape {shape} has an unknown attention type", "rebuild the model folder")
            if kind not in set(encoder.config.layer_types):  # no rotary table / mask of that type was built
                raise ProbscaleError(f"layer shape {shape} needs {kind}, which config.json's layer_types lacks",
                                     "rebuild the model folder")
            layer.attention_type = kind
            c = encoder.config
            layer.attn.sliding_window = c.sliding_window + 1 if kind == "sliding_attention" else None
        want = shape.get("attn_norm")
        if want is not None and want != (not isinstance(layer.attn_norm, nn.Identity)):
            if want:
                c = encoder.config
                ref = layer.mlp_norm
                norm = nn.LayerNorm(c.hidden_size, eps=c.norm_eps, bias=c.norm_bias,
                                    device=ref.weight.device, dtype=ref.weight.dtype)
                layer.attn_norm = norm
            else:
                layer.attn_norm = nn.Identity()
