"""Layer selection on pure data: costs and probe curves in, subsets out (no model, no torch)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from probscale_edge.config import SelectConfig
from probscale_edge.errors import ProbscaleError
from probscale_edge.select import gains, layer_subsets

COSTS = [10, 10, 10, 10, 10, 10]
# the probe curve jumps at layers 2 and 4 (hidden states 3 and 5): those layers add the task information
CURVE = [0.50, 0.51, 0.52, 0.70, 0.71, 0.90, 0.91]


def test_probscale_ranks_subsets_by_probe_gain():
    subs = layer_subsets(COSTS, CURVE, SelectConfig(strategy="probscale"), budget=0.34)
    assert subs[0] == (2, 4)  # the two layers with the largest gains, exactly two fit 34% of 60
    assert sum(gains(CURVE)[i] for i in subs[0]) == pytest.approx(0.37)
    assert (0, 1) in subs and (4, 5) in subs  # bottom-k and top-k are always checked too
    assert all(sum(COSTS[i] for i in s) <= 0.34 * 60 for s in subs)


def test_baselines_and_budget():
    assert layer_subsets(COSTS, CURVE, SelectConfig(strategy="bottom"), budget=0.5) == [(0, 1, 2)]
    top = layer_subsets(COSTS, CURVE, SelectConfig(strategy="top"), budget=0.5)[0]
    assert sorted(top) == [3, 4, 5]  # the three best probe accuracies: hidden states 4, 5, 6
    a = layer_subsets(COSTS, CURVE, SelectConfig(strategy="random"), budget=0.5, seed=1)
    assert a == layer_subsets(COSTS, CURVE, SelectConfig(strategy="random"), budget=0.5, seed=1) and len(a[0]) == 3
    with pytest.raises(ProbscaleError, match="below the smallest possible subnetwork"):
        layer_subsets(COSTS, CURVE, SelectConfig(strategy="bottom"), budget=0.1)


def test_selection_on_pure_data_loads_no_torch():
    code = ("import sys; from probscale_edge.select import layer_subsets; from probscale_edge.config import SelectConfig; "
            "print(layer_subsets([1, 1, 1], [0.5, 0.6, 0.9, 0.95], SelectConfig(), 0.67)[0]); "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert r.returncode == 0 and r.stdout.strip() == "(0, 1)", (r.stdout, r.stderr[-800:])
