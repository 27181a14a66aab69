"""Prune: physically cut a model to a :class:`SubnetworkSpec` (layers, heads, FFN neurons).

Surgery is separate from scoring: :mod:`probscale_edge.select` decides *what* to keep and writes
a spec (plain data); this module only applies a spec. The result is a smaller ``nn.Module`` whose
weight tensors are really smaller, saved and reloaded by :mod:`probscale_edge.modeling`.
"""

from __future__ import annotations

import copy
import torch
import torch.nn as nn

from probscale_edge.errors import ProbscaleError
from probscale_edge.specs import SubnetworkSpec

__all__ = ["SubnetworkSpec", "apply_spec", "cut_units", "resize_layer"]


def slice_linear(lin: nn.Linear, idx: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping ``idx`` along its output (dim=0) or input (dim=1) features."""
    w = lin.weight.detach().index_select(dim, idx).clone()
    b = None
    if lin.bias is not None:
        b = lin.bias.detach().clone() if dim == 1 else lin.bias.detach().index_select(0, idx).clone()
    new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype)
    new.weight.data.copy_(w)
    if b is not None:
        new.bias.data.copy_(b)
    return new


def prune_heads(encoder, adapter, layer, keep_heads: list[int]) -> None:
    if not keep_heads:
        raise ProbscaleError("a layer must keep at least one attention head", "drop the whole layer instead")
    if not adapter.supports_head_pruning:
        raise ProbscaleError(f"head pruning is not supported for {encoder.config.model_type}",
                             "prune whole layers and FFN neurons for this family")
    hd = adapter.head_dim(encoder)
    idx = torch.tensor([h * hd + j for h in sorted(keep_heads) for j in range(hd)], dtype=torch.long)
    adapter.cut_heads(encoder, layer, idx)
    adapter.set_heads(layer, len(keep_heads), hd)
    # shared-position-bias families (T5, MPNet): the layer records which source heads it kept
    adapter.on_heads_pruned(encoder, layer, sorted(keep_heads))


def prune_ffn(encoder, adapter, layer, keep: list[int]) -> None:
    if not keep:
        raise ProbscaleError("a layer must keep at least one FFN neuron", "drop the whole layer instead")
    adapter.cut_ffn(encoder, layer, torch.tensor(sorted(keep), dtype=torch.long))


def resize_layer(encoder, adapter, layer, shape: dict) -> None:
    """Give a fresh layer ``shape`` ({heads, ffn[, head_ids]}) before its weights load.

    Heads: the source heads ``head_ids`` where recorded (shared-position-bias families, whose
    layers must select the same rows of the bias), else the first ``heads``; FFN: the first ``ffn``."""
    cur = adapter.layer_shape(encoder, layer)
    if shape["heads"] != cur["heads"] or shape.get("head_ids") != cur.get("head_ids"):
        keep = shape.get("head_ids") or list(range(shape["heads"]))
        if len(keep) != shape["heads"]:
            raise ProbscaleError(f"layer shape {shape} is inconsistent (head_ids vs heads)", "rebuild the model folder")
        prune_heads(encoder, adapter, layer, [int(h) for h in keep])
    if shape["ffn"] != cur["ffn"]:
        prune_ffn(encoder, adapter, layer, list(range(shape["ffn"])))
    adapter.restore_layer(encoder, layer, shape)  # family extras (ModernBERT: attention type, attention norm)


def apply_spec(model, spec: SubnetworkSpec, inplace: bool = False):
    """Return a physically pruned copy of an :class:`EncoderClassifier` (or prune in place)."""
    m = model if inplace else copy.deepcopy(model)
    enc, adapter = m.encoder, m.adapter
    n = adapter.num_layers(enc)
    bad = [i for i in spec.keep_layers if not 0 <= int(i) < n]
    if bad or len(set(spec.keep_layers)) != len(spec.keep_layers):
        raise ProbscaleError(f"subnetwork spec keeps invalid layers {spec.keep_layers} for a {n}-layer model",
                             "regenerate the spec with `probscale-edge select` for this model")
    shapes = m.layer_shapes() if hasattr(m, "layer_shapes") else None
    if shapes is not None:  # indices the model does not have: one line, not an index error mid-surgery
        spec.check_shape(n, [s["heads"] for s in shapes], [s["ffn"] for s in shapes])
    cut_units(enc, adapter, spec)
    adapter.keep_layers(enc, [int(i) for i in spec.keep_layers])
    return m


def cut_units(root, adapter, spec: SubnetworkSpec) -> None:
    """Cut the heads and FFN neurons ``spec`` lists in its kept layers (``root`` is what ``adapter`` navigates);
    the layers themselves are dropped afterwards by ``adapter.keep_layers``."""
    layers = adapter.layers(root)
    for src in spec.keep_layers:
        layer = layers[int(src)]
        if str(src) in spec.heads:
            prune_heads(root, adapter, layer, [int(h) for h in spec.heads[str(src)]])
        if str(src) in spec.ffn:
            prune_ffn(root, adapter, layer, [int(j) for j in spec.ffn[str(src)]])
