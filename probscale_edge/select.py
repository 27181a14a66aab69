"""Select: the layer subset that maximises task-weighted probe performance under a parameter budget.

Input: a :class:`~probscale_edge.probe.ProbeReport` and the model (for unit costs). Output: a
:class:`Selection` with the :class:`~probscale_edge.prune.SubnetworkSpec`, its cost and the
candidates considered (plain data).

``probscale`` (default): every layer subset that fits the budget is ranked by the sum of its
layers' probe *gains* (how much task information a layer adds over the one below it); the best
``max_candidates`` of them, plus the bottom-k and top-k baselines, are then checked by probing the
composed subnetwork itself, and the best composed score wins (ties: fewer parameters).
Baselines: ``bottom`` (first k layers), ``top`` (k layers with the best probe accuracy),
``random`` (a random subset that fits).
"""

from __future__ import annotations

import itertools
import random

from probscale_edge.config import STRATEGIES, SelectConfig
from probscale_edge.errors import ProbscaleError
from probscale_edge.specs import LatencyTable, Selection, SubnetworkSpec

__all__ = ["SelectConfig", "Selection", "select", "select_layers", "layer_costs", "check_budget"]


def layer_costs(model) -> list[int]:
    a = model.adapter
    return [sum(p.numel() for p in layer.parameters()) for layer in a.layers(model.encoder)]


def check_budget(budget: float, costs: list[int], granularity: str = "layer") -> None:
    total = sum(costs)
    if not (0 < budget <= 1):
        raise ProbscaleError(f"--budget {budget} is not a fraction in (0, 1]",
                             "pass the fraction of non-embedding parameters to keep, e.g. --budget 0.33")
    if granularity == "unit":  # heads and neurons can go below one layer; allocate() keeps one of each
        return
    smallest = min(costs) / total
    if budget * total < min(costs) * (1 - 1e-9):
        raise ProbscaleError(
            f"--budget {budget:g} is below the smallest possible subnetwork (one layer = {smallest:.3f} of the non-embedding parameters)",
            f"use --budget {smallest:.3f} or more",
        )


def _fits(subset, costs, limit):
    return sum(costs[i] for i in subset) <= limit * (1 + 1e-9)


def _enumerate(costs, limit, max_n):
    n = len(costs)
    out = []
    for k in range(1, n + 1):
        if sum(sorted(costs)[:k]) > limit * (1 + 1e-9):
            break
        for sub in itertools.combinations(range(n), k):
            if _fits(sub, costs, limit):
                out.append(sub)
                if len(out) > max_n:
                    raise ProbscaleError(f"more than {max_n} layer subsets fit the budget",
                                         "lower --budget, or use --strategy top")
    return out


def gains(weighted_acc: list[float]) -> list[float]:
    """Per layer: weighted probe accuracy of its output minus that of its input."""
    return [weighted_acc[i + 1] - weighted_acc[i] for i in range(len(weighted_acc) - 1)]


def select(model, report, cfg: SelectConfig, tokenizer=None, tasks=None, weights=None, probe_cfg=None,
           log=None, *, budget: float | None = None, table: LatencyTable | None = None, seed: int = 0) -> Selection:
    """Layers (probe-guided), then, with unit granularity, heads and FFN neurons (Fisher) to the budget.

    ``budget``: the parameter budget (default ``cfg.budget``; the build passes the one a compression ratio
    implies). ``table``: the latency table, needed with ``cfg.max_latency_ms``; the budget then comes from it."""
    log = log or (lambda *_: None)
    costs = layer_costs(model)
    budget = cfg.budget if budget is None else budget
    if cfg.max_latency_ms is not None:
        budget = latency_budget(cfg, table)
    check_budget(budget, costs, cfg.granularity)
    if cfg.granularity == "layer":
        return select_layers(model, report, cfg, tokenizer, tasks, weights, probe_cfg, log, budget=budget, seed=seed)
    # layers are chosen under a looser budget (at least one whole layer), then cut to the budget by units
    layer_budget = min(1.0, max(cfg.layer_budget or cfg.layer_factor * budget, min(costs) / sum(costs)))
    sel = select_layers(model, report, cfg, tokenizer, tasks, weights, probe_cfg, log, budget=layer_budget, seed=seed)
    if tokenizer is None or not tasks:
        raise ProbscaleError("unit granularity needs task data to score heads and neurons", "use --granularity layer")
    from probscale_edge.importance import iterative_allocate

    keep = sel.spec.keep_layers
    total = sum(costs)
    target, cost_model = int(budget * total), None
    if table is not None:
        keep = _layers_within_latency(table, cfg.max_latency_ms, keep, report, log)
        target, cost_model = cfg.max_latency_ms - table.base_ms, table.cost_model()
    iterations = cfg.prune_iterations or 1  # None (the recipe's) outside a build: one-shot
    steps = f" in {iterations} re-scored steps" if iterations > 1 else ""
    log(f"  scoring heads and FFN neurons of layers {keep} (Fisher){steps} ...")
    icfg = None
    if probe_cfg is not None:  # score units at the build's input length and seed
        from probscale_edge.importance import ImportanceConfig

        icfg = ImportanceConfig(max_length=probe_cfg.max_length, seed=probe_cfg.seed)
    al = iterative_allocate(model, tokenizer, tasks, weights, keep, target, iterations, cfg=icfg, log=log,
                            cost_model=cost_model)
    spec = SubnetworkSpec(list(keep), al["heads"], al["ffn"])
    predicted = None
    if table is not None:
        predicted = table.base_ms + al["cost"]
        log(f"  predicted latency {predicted:.2f} ms (budget {cfg.max_latency_ms:g} ms, sequence {table.seq}, "
            f"{table.threads} thread(s))")
    return Selection(spec, al["params"] / total, al["params"], sel.candidates, cfg.strategy, budget, predicted)


def latency_budget(cfg: SelectConfig, table: LatencyTable | None) -> float:
    """The parameter budget the layer search starts from under the latency budget; refuses budgets no
    subnetwork meets."""
    if cfg.granularity != "unit":
        raise ProbscaleError("--max-latency-ms cuts heads and neurons", "use --granularity unit (the default)")
    if table is None:
        raise ProbscaleError("--max-latency-ms needs a latency table", "pass --latency-table FILE, or let the build measure one")
    if cfg.max_latency_ms < table.fastest():
        raise ProbscaleError(f"--max-latency-ms {cfg.max_latency_ms:g} is below the fastest subnetwork of this model on "
                             f"the table's machine ({table.fastest():.2f} ms: one layer, one head, 16 neurons)",
                             f"use --max-latency-ms {table.fastest():.2f} or more, or a table measured at a shorter "
                             "sequence (latency-table --max-length)")
    return max(1e-6, table.uniform_fraction(cfg.max_latency_ms))


def _layers_within_latency(table, max_ms: float, keep, report, log):
    """Drop the layers with the least probe gain until the narrowest form of the rest fits ``max_ms``."""
    keep = list(keep)
    g = gains(report.weighted)
    floor = lambda ks: table.predict([{"heads": 1, "ffn": 16}] * len(ks))  # noqa: E731
    while len(keep) > 1 and floor(keep) > max_ms:
        worst = min(keep, key=lambda i: g[i])
        keep.remove(worst)
        log(f"  layer {worst} dropped: {max_ms:g} ms cannot hold {len(keep) + 1} layers")
    return keep


def layer_subsets(costs: list[int], weighted: list[float], cfg: SelectConfig, budget: float,
                  seed: int = 0) -> list[tuple]:
    """Pure data (no model): the layer subsets worth checking under ``budget``, best first.

    ``costs``: parameters per layer; ``weighted``: the probe's task-weighted accuracy per hidden state (index 0
    the embeddings). ``bottom``/``top``/``random`` give their one subset; ``probscale`` the maximal subsets
    ranked by the sum of their layers' probe gains (the best ``max_candidates``), then bottom-k and top-k."""
    check_budget(budget, costs)
    n, limit = len(costs), budget * sum(costs)
    g = gains(weighted)
    k_max = max(k for k in range(1, n + 1) if sum(sorted(costs)[:k]) <= limit * (1 + 1e-9))

    def bottom():
        sub = []
        for i in range(n):
            if not _fits(sub + [i], costs, limit):
                break
            sub.append(i)
        return tuple(sub)

    def top():
        sub = []
        for i in sorted(range(n), key=lambda i: -weighted[i + 1]):
            if _fits(sub + [i], costs, limit):
                sub.append(i)
        return tuple(sorted(sub))

    if cfg.strategy == "bottom":
        return [bottom()]
    if cfg.strategy == "top":
        return [top()]
    if cfg.strategy == "random":
        return [random.Random(seed).choice([s for s in _enumerate(costs, limit, cfg.max_enumerate) if len(s) == k_max])]
    subs = _enumerate(costs, limit, cfg.max_enumerate)
    # only maximal subsets: a layer that still fits the budget is worth keeping
    subs = [s for s in subs if not any(i not in s and _fits(s + (i,), costs, limit) for i in range(n))]
    ranked = sorted(subs, key=lambda s: (-sum(g[i] for i in s), sum(costs[i] for i in s), s))
    shortlist = []
    for s in [*ranked[: cfg.max_candidates], bottom(), top()]:
        if s not in shortlist:
            shortlist.append(s)
    return shortlist


def select_layers(model, report, cfg: SelectConfig, tokenizer=None, tasks=None, weights=None, probe_cfg=None,
                  log=None, budget: float | None = None, seed: int = 0) -> Selection:
    """The layer subset: :func:`layer_subsets`, and for ``probscale`` with task data, the shortlist checked by
    probing each composed subnetwork (the best composed score wins; ties: fewer parameters)."""
    log = log or (lambda *_: None)
    costs = layer_costs(model)
    budget = cfg.budget if budget is None else budget
    shortlist = layer_subsets(costs, report.weighted, cfg, budget, seed)
    chosen, candidates = shortlist[0], []
    if cfg.strategy == "probscale" and tokenizer is not None and tasks:
        from probscale_edge.probe import ProbeSettings, probe_sample, probe_subnetwork

        g = gains(report.weighted)
        pcfg = probe_cfg or ProbeSettings()
        samples = [probe_sample(t, pcfg) for t in tasks]
        for s in shortlist:
            sc = probe_subnetwork(model, tokenizer, tasks, weights, list(s), pcfg, samples=samples)
            candidates.append({"layers": list(s), "additive": sum(g[i] for i in s), "composed": sc,
                               "non_embedding": sum(costs[i] for i in s)})
            log(f"  candidate layers {list(s)}: composed probe {sc:.4f}")
        chosen = tuple(max(candidates, key=lambda c: (c["composed"], -c["non_embedding"]))["layers"])
    kept, total = sum(costs[i] for i in chosen), sum(costs)
    return Selection(SubnetworkSpec(list(chosen)), kept / total, kept, candidates, cfg.strategy, budget)
