"""Importance of attention heads and FFN neurons for the weighted tasks (Fisher information).

For each unit u with activation a_u (a head's context vector, an FFN neuron's output) the score is
the empirical Fisher of a mask on it, sum over examples of (sum over tokens of a_u * dL/da_u)^2,
with L the task loss through the fine-tuned task head (Kwon et al. 2022, as a criterion only).
Scores are gathered with forward hooks on the attention output and FFN output projections, so the
same code works for every family through its adapter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from probscale_edge import distributed as dist


@dataclass
class ImportanceConfig:
    max_examples: int = 512
    batch_size: int = 32
    max_length: int = 128
    seed: int = 0


def fisher(x, mask, head_dim: int | None = None) -> np.ndarray:
    """Fisher importance of the units of a captured projection input ``x`` ([B, L, units], its gradient
    retained) over one batch: per example, (sum over real tokens of activation x gradient)^2, summed over the
    batch. ``head_dim``: the units are heads of that width (their features are summed first)."""
    per = x.detach() * (x.grad * mask.unsqueeze(-1).to(x.dtype))
    if head_dim:
        B, L, D = per.shape
        per = per.view(B, L, D // head_dim, head_dim).sum(-1)
    return (per.sum(1) ** 2).sum(0).cpu().numpy()


def relative(s: np.ndarray) -> np.ndarray:
    """Scores over the mean of a layer's live scores (masked units score 0 and do not lower the mean), so that
    units of different layers compare on one scale."""
    live = s[s > 0]
    return s / ((live.mean() if live.size else 0.0) + 1e-12)


def mask_units(model, keep: dict, layer_ids=None) -> list:
    """Zero the heads and FFN neurons that ``keep`` ({"heads"|"ffn": {layer: [kept ids]}}) leaves out, with
    forward pre-hooks on the output projections: the same function as cutting them (apply_spec), without
    surgery. Returns the hook handles (``.remove()`` each to undo)."""
    adapter = model.adapter
    layers = adapter.layers(model.encoder)
    hd = adapter.head_dim(model.encoder)

    def masker(m):
        def fn(mod, inp):
            return (inp[0] * m.to(inp[0].device, inp[0].dtype), *inp[1:])
        return fn

    handles = []
    for li in (range(len(layers)) if layer_ids is None else layer_ids):
        _, _, _, o = adapter.attention_linears(layers[li])
        _, fo = adapter.ffn_linears(layers[li])
        for kind, lin, rep in (("heads", o, hd), ("ffn", fo, 1)):
            kept = keep.get(kind, {}).get(str(li))
            if kept is not None:
                m = torch.zeros(lin.in_features // rep)
                m[list(kept)] = 1.0
                handles.append(lin.register_forward_pre_hook(masker(m.repeat_interleave(rep))))
    return handles


def unit_importance(model, tokenizer, tasks, weights, cfg: ImportanceConfig | None = None, layer_ids=None,
                    keep: dict | None = None) -> dict:
    """-> {"heads": {layer: np.array(num_heads)}, "ffn": {layer: np.array(ffn)}} (task-weighted).

    ``keep`` (an :func:`allocate` result) masks the heads and neurons it leaves out: the scores are
    then those of the network without them (masked units score 0), as iterative pruning needs.
    """
    from probscale_edge.data import stratified_sample
    from probscale_edge.modeling import tokenize

    cfg = cfg or ImportanceConfig()
    adapter = model.adapter
    layers = adapter.layers(model.encoder)
    layer_ids = list(range(len(layers))) if layer_ids is None else list(layer_ids)
    hd = adapter.head_dim(model.encoder)
    captured = {}

    def hook(key):
        def fn(mod, inp):
            x = inp[0]
            x.retain_grad()
            captured[key] = x
        return fn

    handles = mask_units(model, keep or {}, layer_ids)  # masks first: the capture hooks see masked input
    for li in layer_ids:
        _, _, _, o = adapter.attention_linears(layers[li])
        _, fo = adapter.ffn_linears(layers[li])
        handles.append(o.register_forward_pre_hook(hook(("h", li))))
        handles.append(fo.register_forward_pre_hook(hook(("f", li))))
    heads = {li: 0.0 for li in layer_ids}
    ffn = {li: 0.0 for li in layer_ids}
    was_training = model.training
    model.eval()  # no dropout: scores of the deterministic network
    wsum = float(sum(weights))
    # on the accelerator when there is one (backward passes of the full model: on a GPU machine's CPU
    # they took minutes per re-scored step on long texts)
    with dist.on_device(model) as dev:  # back on the CPU afterwards
        try:
            for task, w in zip(tasks, weights):
                idx = stratified_sample(task.train.labels, cfg.max_examples, seed=cfg.seed)
                s = task.train.subset(idx)
                # a multi-task model has one head; for secondary tasks the loss uses the model's own predictions
                for b in range(0, len(s), cfg.batch_size):
                    enc = tokenize(tokenizer, s.texts[b:b + cfg.batch_size],
                                   s.pairs[b:b + cfg.batch_size] if s.pairs else None, cfg.max_length)
                    model.zero_grad(set_to_none=True)
                    enc = {k: v.to(dev) for k, v in enc.items()}
                    logits = model(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))
                    if task is tasks[0]:
                        y = torch.tensor(s.labels[b:b + cfg.batch_size], device=dev)
                    else:
                        y = logits.argmax(-1).detach()
                    F.cross_entropy(logits, y, reduction="sum").backward()
                    for li in layer_ids:
                        heads[li] = heads[li] + (w / wsum) * fisher(captured[("h", li)], enc["attention_mask"], hd)
                        ffn[li] = ffn[li] + (w / wsum) * fisher(captured[("f", li)], enc["attention_mask"])
        finally:
            for h in handles:
                h.remove()
            model.zero_grad(set_to_none=True)
            model.train(was_training)
    return {"heads": {li: np.asarray(heads[li], dtype=np.float64) for li in layer_ids},
            "ffn": {li: np.asarray(ffn[li], dtype=np.float64) for li in layer_ids}}


def unit_costs(model) -> dict:
    """Parameters removed with one head / one FFN neuron (the family's adapter knows its projections)."""
    a = model.adapter
    return a.unit_costs(model.encoder, a.layers(model.encoder)[0])


def layer_costs_in(model, keep_layers, cost_model: dict | None = None) -> dict:
    """Cost of each kept layer as it is now: parameters, or with ``cost_model`` ({"layer", "head",
    "neuron"}, e.g. milliseconds from a latency table) layer + heads x head + neurons x neuron."""
    a = model.adapter
    layers = a.layers(model.encoder)
    if cost_model is None:
        return {li: sum(p.numel() for p in layers[li].parameters()) for li in keep_layers}
    out = {}
    for li in keep_layers:
        sh = a.layer_shape(model.encoder, layers[li])
        out[li] = cost_model["layer"] + sh["heads"] * cost_model["head"] + sh["ffn"] * cost_model["neuron"]
    return out


def allocate(model, keep_layers, scores, target_params, min_heads: int = 1, min_neurons: int = 16,
             cost_model: dict | None = None, before: dict | None = None) -> dict:
    """Choose heads and neurons in ``keep_layers`` so that those layers cost at most ``target_params``.

    Cost is parameters, or with ``cost_model`` ({"layer", "head", "neuron"}) any linear cost such
    as predicted milliseconds (then ``target_params`` is in those units).
    Heads and neurons are ranked globally, each by its Fisher score divided by the mean score of its
    kind in its layer (so layers compare on one scale), and removed lowest first; attention and
    FFN lose the same fraction of their cost, so neither is emptied. Allocation per layer is
    non-uniform. Returns {"heads": {layer: [kept]}, "ffn": {layer: [kept]}, "params": int, "cost": float}.

    ``before`` (an earlier allocation of the same layers to a larger target): the units it removed are removed
    first, whatever their score, so a unit once gone stays gone; the head budget leaves room for them.
    """
    a = model.adapter
    layers = a.layers(model.encoder)
    pcost = unit_costs(model)
    cost = pcost if cost_model is None else {"head": cost_model["head"], "neuron": cost_model["neuron"]}
    pbase = layer_costs_in(model, keep_layers)
    base = layer_costs_in(model, keep_layers, cost_model)
    total_now = sum(base.values())
    if total_now <= target_params:
        return {"heads": {}, "ffn": {}, "params": sum(pbase.values()), "cost": total_now}
    shapes = {li: a.layer_shape(model.encoder, layers[li]) for li in keep_layers}
    att_params = sum(shapes[li]["heads"] * cost["head"] for li in keep_layers)
    ffn_params = sum(shapes[li]["ffn"] * cost["neuron"] for li in keep_layers)
    to_remove = total_now - target_params
    frac = min(0.999, to_remove / max(1e-12, att_params + ffn_params))

    def ranked(kind):
        items = []
        for li in keep_layers:
            norm = relative(scores[kind][li])
            items += [(float(norm[j]), li, j) for j in range(len(norm))]
        return sorted(items)

    keep = {"heads": {li: set(range(shapes[li]["heads"])) for li in keep_layers},
            "ffn": {li: set(range(shapes[li]["ffn"])) for li in keep_layers}}
    gone = {kind: {li: keep[kind][li] - set((before or {}).get(kind, {}).get(str(li), keep[kind][li]))
                   for li in keep_layers} for kind in keep}
    forced_ffn = sum(map(len, gone["ffn"].values())) * cost["neuron"]  # the heads leave room for these
    removed = 0
    count = {"head": 0, "neuron": 0}
    for kind, unit, floor, budget in (("heads", "head", min_heads, min(frac * att_params, to_remove - forced_ffn)),
                                      ("ffn", "neuron", min_neurons, frac * ffn_params)):
        if not a.supports_head_pruning and kind == "heads":
            continue
        got = 0
        for li in keep_layers:  # what an earlier step removed goes first
            keep[kind][li] -= gone[kind][li]
            got += len(gone[kind][li]) * cost[unit]
            count[unit] += len(gone[kind][li])
        n = _remove_lowest(ranked(kind), keep[kind], floor, cost[unit], budget - got)
        count[unit] += n
        removed += got + n * cost[unit]
    # what whole heads left over (and all of it in families without head pruning) comes from the FFN; when every
    # FFN is at its floor, from the heads, so the target is met whenever the floors allow it
    for kind, unit, floor in (("ffn", "neuron", min_neurons), ("heads", "head", min_heads)):
        if kind == "heads" and not a.supports_head_pruning:
            continue
        n = _remove_lowest(ranked(kind), keep[kind], floor, cost[unit], to_remove - removed, overshoot=True)
        count[unit] += n
        removed += n * cost[unit]
    out = {"heads": {str(li): sorted(v) for li, v in keep["heads"].items() if len(v) < shapes[li]["heads"]},
           "ffn": {str(li): sorted(v) for li, v in keep["ffn"].items() if len(v) < shapes[li]["ffn"]},
           "params": sum(pbase.values()) - count["head"] * pcost["head"] - count["neuron"] * pcost["neuron"],
           "cost": total_now - removed}
    return out


def _remove_lowest(ranked_units, keep: dict, floor: int, unit_cost: float, need: float, overshoot: bool = False) -> int:
    """Remove units of one kind from ``keep`` ({layer: kept ids}), lowest ranked first, no layer below ``floor``,
    while the cost removed stays within ``need`` (``overshoot``: until it reaches ``need``). -> units removed."""
    n = 0
    for _, li, j in ranked_units:
        if (n * unit_cost >= need - 1e-12) if overshoot else ((n + 1) * unit_cost > need + 1e-9):
            break
        if j in keep[li] and len(keep[li]) > floor:
            keep[li].discard(j)
            n += 1
    return n


def iterative_allocate(model, tokenizer, tasks, weights, keep_layers, target_params, iterations: int,
                       cfg: ImportanceConfig | None = None, log=None, cost_model: dict | None = None,
                       min_heads: int = 1, min_neurons: int = 16) -> dict:
    """:func:`allocate` in ``iterations`` equal steps, re-scoring the masked network before each step.

    One-shot Fisher scores every unit in the full network, so two units that carry the same
    information both look important, or both look removable. Re-scoring after each step scores a
    unit given what is already gone (as TextPruner's iterative pruner and Kwon et al.'s mask search do).
    ``iterations=1`` is the one-shot allocation. ``min_heads``/``min_neurons``: the floor of every kept layer.
    """
    log = log or (lambda *_: None)
    start = sum(layer_costs_in(model, keep_layers, cost_model).values())
    kept = None
    for r in range(1, max(1, iterations) + 1):
        step_target = start - (start - target_params) * r / max(1, iterations)
        if cost_model is None:
            step_target = int(round(step_target))
        scores = unit_importance(model, tokenizer, tasks, weights, cfg, layer_ids=keep_layers, keep=kept)
        al = allocate(model, keep_layers, scores, step_target, min_heads, min_neurons, cost_model=cost_model,
                      before=kept)
        if kept is not None:  # a unit once removed stays removed (allocate drops the earlier step's first)
            for kind in ("heads", "ffn"):
                for li, ids in al[kind].items():
                    prev = kept[kind].get(li)
                    if prev is not None and not set(ids) <= set(prev):
                        raise AssertionError(f"iterative pruning revived {kind} in layer {li}")
        kept = al
        if iterations > 1:
            log(f"  pruning step {r}/{iterations}: layers hold {al['params']:,} parameters")
    return kept
