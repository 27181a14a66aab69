"""DeBERTa-v2 / DeBERTa-v3 (``model_type`` "deberta-v2" for both): disentangled attention.

Layout (transformers ``DebertaV2Model``): ``encoder.layer[i].attention.self`` (DisentangledSelfAttention)
holds ``query_proj``/``key_proj``/``value_proj``; ``attention.output.dense``, ``intermediate.dense``,
``output.dense`` as in BERT. The relative-position embeddings ``encoder.rel_embeddings`` (and the
optional ``encoder.LayerNorm`` on them) are hidden-sized and shared by all layers; each layer projects
them itself, per head:

- ``share_att_key=True`` (the v3 default): through its own ``key_proj``/``query_proj``, so cutting those
  rows already cuts the position keys/queries of the dropped heads;
- ``share_att_key=False``: through ``pos_key_proj`` (c2p) / ``pos_query_proj`` (p2c), whose rows are cut
  with the same head indices.

The c2p/p2c scores of a head are computed from that head's rows only, so a head-pruned layer needs no
head map (unlike T5 / MPNet, whose bias is one tensor for all heads): the shared embeddings stay whole.
The attention reshapes by ``num_attention_heads`` (``transpose_for_scores``, the ``view`` of the
scores and the ``repeat`` of the position projections over the batch), which ``set_heads`` updates.

Layer dropping keeps ``rel_embeddings`` in the encoder. The optional ConvLayer (``conv_kernel_size`` > 0,
DeBERTa-v2 xlarge/xxlarge) is applied by the encoder after whichever layer is first; dropping layer 0
leaves it with the new first layer (the reloaded config builds the same), as transformers runs it.

DeBERTa-v2/v3 checkpoints have ``type_vocab_size`` 0 (no token-type embedding), so the family takes no
``token_type_ids``.
"""

from probscale_edge.adapters.base import Adapter, register

# optional per-head position projections of DisentangledSelfAttention (share_att_key=False)
POS_PROJ = ("pos_key_proj", "pos_query_proj")


@register
class DebertaV2Adapter(Adapter):
    model_types = ("deberta-v2",)
    layers_path = "encoder.layer"
    uses_token_type_ids = False  # type_vocab_size is 0 in every DeBERTa-v2/v3 checkpoint
    q = "attention.self.query_proj"
    k = "attention.self.key_proj"
    v = "attention.self.value_proj"
    o = "attention.output.dense"
    attn_module = "attention.self"
    ffn_in = "intermediate.dense"
    ffn_out = "output.dense"

    def head_dim(self, encoder) -> int:
        c = encoder.config  # DisentangledSelfAttention honours an explicit attention_head_size
        return int(getattr(c, "attention_head_size", None) or c.hidden_size // c.num_attention_heads)

    def pos_linears(self, layer) -> list:
        """(name, Linear) of the layer's own position projections (none when share_att_key)."""
        attn = self.get_module(layer, self.attn_module)
        return [(n, getattr(attn, n)) for n in POS_PROJ if getattr(attn, n, None) is not None]

    def cut_heads(self, encoder, layer, idx) -> None:
        from probscale_edge.prune import slice_linear

        super().cut_heads(encoder, layer, idx)
        attn = self.get_module(layer, self.attn_module)
        for name, lin in self.pos_linears(layer):
            setattr(attn, name, slice_linear(lin, idx, 0))

    def unit_costs(self, encoder, layer) -> dict:
        costs = super().unit_costs(encoder, layer)
        hd = self.head_dim(encoder)
        for _, lin in self.pos_linears(layer):
            costs["head"] += lin.in_features * hd + (hd if lin.bias is not None else 0)
        return costs
