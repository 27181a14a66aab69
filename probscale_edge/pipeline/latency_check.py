"""The latency budget checked by measurement: the selected subnetwork is timed here, and selected again
under a tighter budget while any timing pass is over."""

from __future__ import annotations

import tempfile
from pathlib import Path

from probscale_edge.errors import ProbscaleError


def calibrate_latency(run, t, report, selection, table, layer_budget, rounds: int = 4, passes: int = 5):
    """Time the selected subnetwork itself (int8, before recovery: latency does not depend on the weights)
    with the runtime on this machine, in ``passes`` blocks of 20 predictions; while the p50 of any block is
    over the budget, select again under a budget scaled by budget / slowest block. Holding the budget in
    every block, not only in the median, keeps a quiet moment of a noisy machine from passing a subnetwork
    that is over budget most of the time. The linear table is a guide; this measurement is what the bundle
    will do."""
    from probscale_edge.latency import spec_bundle, time_bundles
    from probscale_edge.pipeline.stages import probe_settings
    from probscale_edge.select import select as select_subnetwork

    cfg, goal = run.cfg, run.cfg.select.max_latency_ms
    effective, history = goal, []
    for r in range(rounds + 1):
        with tempfile.TemporaryDirectory(prefix="probscale-calibrate-") as tmp:
            b = spec_bundle(t.model, selection.spec, t.tokenizer, Path(tmp) / "b", table.seq, "int8", cfg.target,
                            embedding_rank=cfg.prune.embedding_rank)
            med, _, by_pass = time_bundles([b], table.seq, table.threads, runs=20 * passes, passes=passes,
                                           per_pass=True)
        measured, slowest = med[0], max(by_pass[0])
        history.append({"budget_used_ms": effective, "predicted_ms": selection.predicted_latency_ms,
                        "measured_ms": measured, "pass_p50_ms": by_pass[0], "slowest_pass_ms": slowest})
        run.log(f"  latency check {r + 1}: selected under {effective:.2f} ms, predicted "
                f"{selection.predicted_latency_ms:.2f} ms, measured {measured:.2f} ms (slowest of {passes} passes "
                f"{slowest:.2f} ms; budget {goal:g} ms)")
        if slowest <= goal or r == rounds:
            break
        effective *= goal / slowest * 0.98  # aim just under the slowest pass
        try:
            selection = select_subnetwork(t.model, report, cfg.select.replace(max_latency_ms=effective),
                                          tokenizer=t.tokenizer, tasks=run.tasks, weights=run.weights,
                                          probe_cfg=probe_settings(run), log=lambda *_: None, budget=layer_budget,
                                          table=table, seed=cfg.seed)
        except ProbscaleError:
            run.log("  cannot go faster on this model: keeping the last subnetwork")
            break
    run.stages["latency_calibration"] = history
    return selection
