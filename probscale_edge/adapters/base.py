"""The adapter interface and the registry that maps a config's ``model_type`` to its adapter."""

from __future__ import annotations

from probscale_edge.errors import ProbscaleError

_REGISTRY: dict[str, "Adapter"] = {}


def register(adapter_cls):
    inst = adapter_cls()
    for mt in adapter_cls.model_types:
        _REGISTRY[mt] = inst
    return adapter_cls


def supported_model_types() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def _load_all():
    from probscale_edge.adapters import albert, bert, deberta, distilbert, modernbert, mpnet, t5  # noqa: F401


def get_adapter(model_type: str) -> "Adapter":
    _load_all()
    if model_type not in _REGISTRY:
        raise ProbscaleError(
            f"unsupported architecture {model_type!r}",
            f"use a model of a supported family ({', '.join(sorted(_REGISTRY))}) or add an adapter in probscale_edge/adapters/",
        )
    return _REGISTRY[model_type]


# non-persistent buffer (long, [kept heads]) on the attention module of a head-pruned layer of a
# shared-position-bias family: source head indices, in the layer's head order
HEAD_IDS = "probscale_head_ids"


class Adapter:
    """Maps roles to modules for one family. Subclasses fill in the attribute paths."""

    model_types: tuple = ()
    layers_path: str = ""  # dotted path of the nn.ModuleList of transformer layers
    embeddings_path: str = "embeddings"
    word_embeddings_path: str = "embeddings.word_embeddings"
    num_layers_key: str = "num_hidden_layers"
    hidden_key: str = "hidden_size"
    heads_key: str = "num_attention_heads"
    ffn_key: str = "intermediate_size"
    uses_token_type_ids: bool = True
    supports_head_pruning: bool = True
    # families whose relative-position bias is computed once for all heads and shared by every layer
    # (T5, MPNet): a head-pruned layer keeps the source indices of its heads (buffer HEAD_IDS on its
    # attention module, see on_heads_pruned) and picks only those rows of the shared bias. The indices
    # are part of layer_shape(), so they are saved in probscale.json and a reload rebuilds them.
    shared_position_bias: bool = False
    # roles inside one layer: dotted paths relative to the layer
    q: str = ""
    k: str = ""
    v: str = ""
    o: str = ""
    ffn_in: str = ""
    ffn_out: str = ""
    attn_module: str = ""  # module holding the head count attributes

    # ------------------------------------------------------------------ navigation
    @staticmethod
    def get_module(obj, path: str):
        for part in path.split("."):
            obj = getattr(obj, part)
        return obj

    @staticmethod
    def set_module(obj, path: str, value):
        parts = path.split(".")
        for part in parts[:-1]:
            obj = getattr(obj, part)
        setattr(obj, parts[-1], value)

    def layers(self, encoder):
        return self.get_module(encoder, self.layers_path)

    def num_layers(self, encoder) -> int:
        return len(self.layers(encoder))

    def embeddings(self, encoder):
        return self.get_module(encoder, self.embeddings_path)

    def word_embeddings(self, encoder):
        return self.get_module(encoder, self.word_embeddings_path)

    def input_names(self) -> list[str]:
        return ["input_ids", "attention_mask"] + (["token_type_ids"] if self.uses_token_type_ids else [])

    # ------------------------------------------------------------------ surgery
    def keep_layers(self, encoder, keep: list[int]) -> None:
        """Physically keep only the layers ``keep`` (indices into the current layers), in order."""
        import torch.nn as nn

        old = self.layers(encoder)
        if not keep:
            raise ProbscaleError("a subnetwork needs at least one layer", "raise --budget")
        new = nn.ModuleList([old[i] for i in keep])
        self.set_module(encoder, self.layers_path, new)
        setattr(encoder.config, self.num_layers_key, len(keep))
        self._renumber(encoder)

    def _renumber(self, encoder) -> None:
        for i, layer in enumerate(self.layers(encoder)):
            for m in layer.modules():
                if hasattr(m, "layer_idx"):
                    m.layer_idx = i

    def drop_pooler(self, encoder) -> None:
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None

    def prepare_for_surgery(self, encoder) -> None:
        """Called on every encoder ``modeling.load_encoder`` loads (and ``load_classifier`` reloads), before
        anything counts or cuts its layers. Families whose depths share weights (ALBERT) give each depth its
        own copy here; the outputs must not change. Default: nothing."""

    # roles for head/FFN surgery (used by prune.py)
    def attention_linears(self, layer):
        g = self.get_module
        return g(layer, self.q), g(layer, self.k), g(layer, self.v), g(layer, self.o)

    def ffn_linears(self, layer):
        return self.get_module(layer, self.ffn_in), self.get_module(layer, self.ffn_out)

    def cut_heads(self, encoder, layer, idx) -> None:
        """Keep the rows ``idx`` (a long tensor: the kept heads' dimensions) of the query, key and value
        projections and the same columns of the output projection. Families with fused or extra
        projections override this."""
        from probscale_edge.prune import slice_linear

        q, k, v, o = self.attention_linears(layer)
        for path, lin in ((self.q, q), (self.k, k), (self.v, v)):
            self.set_module(layer, path, slice_linear(lin, idx, 0))
        self.set_module(layer, self.o, slice_linear(o, idx, 1))

    def cut_ffn(self, encoder, layer, idx) -> None:
        """Keep FFN neurons ``idx`` (a long tensor): rows of the input projection, columns of the output one.
        Gated families (input and gate projections, or one fused projection of both) override this."""
        from probscale_edge.prune import slice_linear

        fi, fo = self.ffn_linears(layer)
        self.set_module(layer, self.ffn_in, slice_linear(fi, idx, 0))
        self.set_module(layer, self.ffn_out, slice_linear(fo, idx, 1))

    def unit_costs(self, encoder, layer) -> dict:
        """Parameters removed with one head / one FFN neuron of ``layer`` (weights and biases of the four / two
        linears). Families with other projections (gated FFN: three) override this."""
        q, k, v, o = self.attention_linears(layer)
        hd = self.head_dim(encoder)
        hidden = q.in_features
        head = 3 * (hidden * hd + (hd if q.bias is not None else 0)) + hidden * hd
        fi, fo = self.ffn_linears(layer)
        return {"head": head, "neuron": hidden + (1 if fi.bias is not None else 0) + fo.out_features}

    def ffn_width(self, layer) -> int:
        """FFN neurons of ``layer`` (the output projection's input width: right for gated layouts too)."""
        return self.ffn_linears(layer)[1].in_features

    def set_heads(self, layer, num_heads: int, head_dim: int) -> None:
        attn = self.get_module(layer, self.attn_module)
        attn.num_attention_heads = num_heads
        attn.all_head_size = num_heads * head_dim
        if hasattr(attn, "attention_head_size"):
            attn.attention_head_size = head_dim
        if hasattr(attn, "config") and hasattr(attn.config, self.heads_key):
            pass  # the config stays stock; per-layer shapes live in probscale metadata

    def head_dim(self, encoder) -> int:
        c = encoder.config
        return getattr(c, self.hidden_key) // getattr(c, self.heads_key)

    def layer_shape(self, encoder, layer) -> dict:
        """{"heads", "ffn"} (+ "head_ids": source head indices, for a head-pruned shared-bias layer)."""
        q, _, _, _ = self.attention_linears(layer)
        shape = {"heads": q.out_features // self.head_dim(encoder), "ffn": self.ffn_width(layer)}
        ids = self.kept_head_ids(layer)
        if ids is not None:
            shape["head_ids"] = ids
        return shape

    def restore_layer(self, encoder, layer, shape: dict) -> None:
        """Re-apply what a saved layer shape records beyond heads and FFN width (e.g. ModernBERT: a layer's
        attention type and attention norm) to a freshly built layer; called by ``prune.resize_layer`` on
        reload, after heads and FFN are resized. Default: nothing (heads and FFN are all there is)."""

    # ------------------------------------------------------------------ shared position bias
    def kept_head_ids(self, layer):
        """Source indices of the heads a layer kept (None: all heads, unmapped)."""
        ids = getattr(self.get_module(layer, self.attn_module), HEAD_IDS, None)
        return None if ids is None else [int(i) for i in ids.tolist()]

    def on_heads_pruned(self, encoder, layer, keep: list[int]) -> None:
        """Called by prune_heads after ``layer`` kept heads ``keep`` (indices into its current heads)."""
        if not self.shared_position_bias:
            return
        import torch

        attn = self.get_module(layer, self.attn_module)
        prev = self.kept_head_ids(layer)
        ids = [prev[i] for i in keep] if prev is not None else list(keep)
        if prev is None and ids == list(range(getattr(encoder.config, self.heads_key))):
            return  # all heads kept: the layer uses the whole bias as it is
        dev = next(attn.parameters()).device
        attn.register_buffer(HEAD_IDS, torch.tensor(ids, dtype=torch.long, device=dev), persistent=False)
        if not getattr(attn, "_probscale_head_map", False):
            self.install_head_map(attn)
            attn._probscale_head_map = True

    def install_head_map(self, attn) -> None:
        """Hook ``attn`` so that it adds only the rows HEAD_IDS of the shared position bias."""
        raise NotImplementedError(f"{type(self).__name__} shares a position bias but has no head map")

    def shared_bias_heads(self, encoder):
        """A module whose output dimension is the head count and is shared by all layers, or None."""
        return None

    # ------------------------------------------------------------------ counting
    def count_params(self, module) -> dict:
        """Total and non-embedding parameter counts of an encoder (plus anything attached)."""
        total = sum(p.numel() for p in module.parameters())
        emb = sum(p.numel() for p in self.embeddings(module).parameters())
        return {"total": int(total), "embedding": int(emb), "non_embedding": int(total - emb)}
