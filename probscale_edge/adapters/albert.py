"""ALBERT: one layer (or a few) shared by every depth, and a factorized embedding.

``AlbertTransformer`` holds ``num_hidden_groups`` groups (``encoder.albert_layer_groups``), each an
``AlbertLayerGroup`` of ``inner_group_num`` ``AlbertLayer``s; its forward runs, for depth
``i in range(num_hidden_layers)``, group ``int(i / (num_hidden_layers / num_hidden_groups))`` (all of
that group's inner layers in turn). Depths that share weights cannot be pruned apart, so the model is
*untied* when it is loaded (:meth:`AlbertAdapter.prepare_for_surgery`, called by ``load_encoder``):
one deep copy of the shared layer per depth, each in a group of its own, and the config set to
``num_hidden_layers = num_hidden_groups = depths * inner_group_num``, ``inner_group_num = 1``, so
depth ``i`` runs group ``int(i / 1.0) == i``. The outputs do not change; the parameter count grows (the
copies are real weights). ``config.probscale_untied`` (bool) and ``config.probscale_shared_layout``
(the checkpoint's layout and parameter counts) record it, and are saved in ``config.json``; a reload
builds the untied layout from that config.

Roles (relative to one group, i.e. one depth): ``albert_layers.0.attention.{query,key,value,dense}``
(heads), ``albert_layers.0.ffn`` / ``ffn_output`` (FFN neurons). The factorized embedding
(``embeddings`` of ``embedding_size``, then ``encoder.embedding_hidden_mapping_in`` to the hidden size)
is kept as it is: the projection counts as non-embedding parameters and is never cut.
"""

from __future__ import annotations

import copy

from probscale_edge.adapters.base import Adapter, register
from probscale_edge.errors import ProbscaleError

UNTIED = "probscale_untied"  # config flag: True once shared layers were copied per depth
LAYOUT = "probscale_shared_layout"  # config: the checkpoint's sharing layout and parameter counts


def is_untied_layout(config) -> bool:
    """One group per depth, one layer per group: every depth has its own weights."""
    return config.inner_group_num == 1 and config.num_hidden_groups == config.num_hidden_layers


@register
class AlbertAdapter(Adapter):
    model_types = ("albert",)
    layers_path = "encoder.albert_layer_groups"  # after untying: one group (of one layer) per depth
    q = "albert_layers.0.attention.query"
    k = "albert_layers.0.attention.key"
    v = "albert_layers.0.attention.value"
    o = "albert_layers.0.attention.dense"
    attn_module = "albert_layers.0.attention"
    ffn_in = "albert_layers.0.ffn"
    ffn_out = "albert_layers.0.ffn_output"

    # ------------------------------------------------------------------ untying
    def prepare_for_surgery(self, encoder) -> None:
        """Give every depth its own copy of the layer it shares (idempotent; outputs unchanged)."""
        import torch.nn as nn

        c = encoder.config
        if is_untied_layout(c):
            if not hasattr(c, UNTIED):  # a checkpoint without sharing: nothing was copied
                setattr(c, UNTIED, False)
            return
        before = self.count_params(encoder)
        L, G, K = c.num_hidden_layers, c.num_hidden_groups, c.inner_group_num
        groups = encoder.encoder.albert_layer_groups
        memo = {id(c): c}  # the copies keep the model's one config object (attention implementation etc.)
        new = []
        for i in range(L):
            g = int(i / (L / G))  # AlbertTransformer.forward's group index for depth i
            for k in range(K):
                grp = copy.deepcopy(groups[g], dict(memo))
                grp.albert_layers = nn.ModuleList([grp.albert_layers[k]])
                new.append(grp)
        encoder.encoder.albert_layer_groups = nn.ModuleList(new)
        c.num_hidden_layers = c.num_hidden_groups = len(new)
        c.inner_group_num = 1
        setattr(c, UNTIED, True)
        setattr(c, LAYOUT, {"num_hidden_layers": L, "num_hidden_groups": G, "inner_group_num": K,
                            "checkpoint_parameters": before, "untied_parameters": self.count_params(encoder)})

    # ------------------------------------------------------------------ surgery
    def keep_layers(self, encoder, keep):
        if not is_untied_layout(encoder.config):  # indices would name shared groups, not depths
            raise ProbscaleError("this ALBERT still shares its layers between depths",
                                 "load it with probscale_edge.modeling.load_encoder (which unties them), or call "
                                 "AlbertAdapter().prepare_for_surgery(encoder) first")
        super().keep_layers(encoder, keep)
        encoder.config.num_hidden_groups = len(keep)  # the forward's group index stays i for depth i
