"""One adapter per model family: where the layers, heads, FFN and embeddings of a model live.

Everything architecture-specific is here; the stages (probe, select, prune, export) only talk
to an :class:`~probscale_edge.adapters.base.Adapter`. A new family is one new adapter.
"""

from probscale_edge.adapters.base import Adapter, get_adapter, supported_model_types

__all__ = ["Adapter", "get_adapter", "supported_model_types"]
