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
    from probscale_edge.adapters import bert, distilbert, mpnet, t5  # noqa: F401


def get_adapter(model_type: str) -> "Adapter":
    _load_all()
    if model_type not in _REGISTRY:
        raise ProbscaleError(
            f"unsupported architecture {model_type!r}",
            f"use a model of a supported family ({', '.join(sorted(_REGISTRY))}) or add an adapter in probscale_edge/adapters/",
        )
    return _REGISTRY[model_type]


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
    # families whose attention bias is shared across layers (T5, MPNet) need per-layer head maps
    # to prune heads; not implemented yet, so head pruning is refused for them with a clear error
    supports_head_pruning: bool = True
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
    def _get(obj, path: str):
        for part in path.split("."):
            obj = getattr(obj, part)
        return obj

    @staticmethod
    def _set(obj, path: str, value):
        parts = path.split(".")
        for part in parts[:-1]:
            obj = getattr(obj, part)
        setattr(obj, parts[-1], value)

    def layers(self, encoder):
        return self._get(encoder, self.layers_path)

    def num_layers(self, encoder) -> int:
        return len(self.layers(encoder))

    def embeddings(self, encoder):
        return self._get(encoder, self.embeddings_path)

    def word_embeddings(self, encoder):
        return self._get(encoder, self.word_embeddings_path)

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
        self._set(encoder, self.layers_path, new)
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

    # roles for head/FFN surgery (used by prune.py)
    def attention_linears(self, layer):
        g = self._get
        return g(layer, self.q), g(layer, self.k), g(layer, self.v), g(layer, self.o)

    def ffn_linears(self, layer):
        return self._get(layer, self.ffn_in), self._get(layer, self.ffn_out)

    def set_heads(self, layer, num_heads: int, head_dim: int) -> None:
        attn = self._get(layer, self.attn_module)
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
        q, _, _, _ = self.attention_linears(layer)
        fi, _ = self.ffn_linears(layer)
        return {"heads": q.out_features // self.head_dim(encoder), "ffn": fi.out_features}

    def shared_bias_heads(self, encoder):
        """A module whose output dimension is the head count and is shared by all layers, or None."""
        return None

    # ------------------------------------------------------------------ counting
    def count_params(self, module) -> dict:
        """Total and non-embedding parameter counts of an encoder (plus anything attached)."""
        total = sum(p.numel() for p in module.parameters())
        emb = sum(p.numel() for p in self.embeddings(module).parameters())
        return {"total": int(total), "embedding": int(emb), "non_embedding": int(total - emb)}
