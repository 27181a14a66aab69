"""Latency model and selection under --max-latency-ms.

The fit is checked on exact synthetic points; the measurement on a tiny random-init model (real
ONNX Runtime timings, so only structure and signs are asserted); the selection with a fixed table,
so the budget arithmetic is exact. The real-model figures are in benchmarks/latency_budget/."""

from __future__ import annotations

import json

import pytest

from probscale_edge.data import load_task
from probscale_edge.errors import ProbscaleError
from probscale_edge.latency import LatencyTable, check_table, design_points, fit, measure_table
from probscale_edge.modeling import EncoderClassifier, load_encoder

COEF = {"base_ms": 1.5, "layer_ms": 0.4, "head_ms": 0.2, "neuron_ms": 0.01}


def _table(full, **over):
    return LatencyTable(seq=32, threads=1, precision="int8", target="x86_64", full=full,
                        device={"transport": "local"}, **{**COEF, **over})


def _model(path):
    enc, tok, _ = load_encoder(str(path))
    return EncoderClassifier(enc, 2).eval(), tok


def test_fit_recovers_exact_coefficients():
    pts = [{"layers": nl, "heads": nh, "ffn": nf,
            "p50_ms": COEF["base_ms"] + nl * (COEF["layer_ms"] + nh * COEF["head_ms"] + nf * COEF["neuron_ms"])}
           for nl, nh, nf in design_points(6, 12, 1536)]
    assert len(pts) == 9
    f = fit(pts)
    for k, v in COEF.items():
        assert f[k] == pytest.approx(v, rel=1e-6)
    assert f["max_relative_error"] < 1e-9


def test_measure_table_on_a_tiny_model(tiny_bert, tmp_path):
    model, tok = _model(tiny_bert)
    t = measure_table(model, tok, target="x86_64", seq=32, threads=1, runs=5)
    assert t.full == {"layers": 4, "heads": 4, "ffn": 64}
    assert len(t.points) == len(design_points(4, 4, 64))
    assert all(p["p50_ms"] > 0 and p["session_p50_ms"] > 0 for p in t.points)
    assert min(t.base_ms, t.layer_ms, t.head_ms, t.neuron_ms) >= 0
    assert t.device["transport"] == "local"
    # the table survives JSON and describes this model, not another shape
    path = tmp_path / "t.json"
    path.write_text(json.dumps(t.to_dict()))
    back = LatencyTable.load(path)
    assert back == t
    check_table(back, model, 32)
    with pytest.raises(ProbscaleError, match="measured for a model shaped"):
        check_table(_table({"layers": 6, "heads": 12, "ffn": 1536}), model, 32)


def test_bad_table_files_are_clear_errors(tmp_path):
    with pytest.raises(ProbscaleError, match="does not exist"):
        LatencyTable.load(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ProbscaleError, match="not valid JSON"):
        LatencyTable.load(tmp_path / "bad.json")
    (tmp_path / "partial.json").write_text(json.dumps({"seq": 128}))
    with pytest.raises(ProbscaleError, match="lacks"):
        LatencyTable.load(tmp_path / "partial.json")


def test_selection_meets_the_latency_budget(tiny_bert, toy_csv):
    from probscale_edge.probe import ProbeSettings, probe_layers
    from probscale_edge.prune import apply_spec
    from probscale_edge.select import SelectConfig, select

    model, tok = _model(tiny_bert)
    task = load_task(str(toy_csv))
    pcfg = ProbeSettings(max_examples=120, max_length=32)
    report = probe_layers(model, tok, [task], [1.0], pcfg)
    table = _table({"layers": 4, "heads": 4, "ffn": 64})
    full_ms = table.predict([{"heads": 4, "ffn": 64}] * 4)  # 1.5 + 4 x (0.4 + 0.8 + 0.64) = 8.86
    assert full_ms == pytest.approx(8.86)
    results = {}
    for max_ms in (7.0, 4.5, 2.6):
        cfg = SelectConfig(granularity="unit", layer_factor=100, max_latency_ms=max_ms)
        sel = select(model, report, cfg, tokenizer=tok, tasks=[task], weights=[1.0], probe_cfg=pcfg, table=table)
        shapes = apply_spec(model, sel.spec).layer_shapes()
        predicted = table.predict(shapes)
        assert sel.predicted_latency_ms == pytest.approx(predicted)  # the selection's figure is the table's
        assert predicted <= max_ms + 1e-9
        assert predicted >= max_ms - 0.2 - 16 * 0.01  # spends the budget: within one head and 16 neurons of it
        results[max_ms] = (len(shapes), sel.kept_non_embedding)
    assert results[7.0][1] > results[4.5][1] > results[2.6][1]
    assert results[2.6][0] < 4  # 2.6 ms cannot hold 4 layers even at their narrowest (4 x 0.76 + 1.5 = 4.54)
    with pytest.raises(ProbscaleError, match="below the fastest subnetwork"):
        select(model, report, SelectConfig(granularity="unit", max_latency_ms=1.0),
               tokenizer=tok, tasks=[task], weights=[1.0], probe_cfg=pcfg, table=table)


def test_build_checks_the_selected_subnetwork_against_the_budget(tiny_bert, toy_csv, tmp_path):
    """With a table measured here, the build times the selected subnetwork itself before recovery and
    selects again under a scaled budget while it is over (timings are real, so only the bookkeeping is
    asserted: each round's budget is below the last, and the manifest records every round)."""
    from probscale_edge.pipeline import BuildConfig, TaskSpec, build

    model, tok = _model(tiny_bert)
    table = measure_table(model, tok, target="x86_64", seq=128, threads=1, runs=10)
    path = tmp_path / "table.json"
    path.write_text(json.dumps(table.to_dict()))
    budget = table.predict([{"heads": 2, "ffn": 32}] * 3)
    out = tmp_path / "bundle"
    m = build(BuildConfig.create(model=str(tiny_bert), tasks=[TaskSpec(str(toy_csv))], output=str(out), target="x86_64",
                          epochs=1, lr=1e-3, student_lr=1e-3, use_cache=False, latency_runs=5,
                          max_latency_ms=budget, latency_table=str(path), search="single"))
    lb = m["latency_budget"]
    assert lb["max_ms"] == budget and lb["predicted_ms"] <= budget + 1e-9
    rounds = lb["calibration"]
    assert 1 <= len(rounds) <= 5 and all(r["measured_ms"] > 0 for r in rounds)
    for r in rounds:  # the criterion is the slowest of the timing passes, not only the median
        assert len(r["pass_p50_ms"]) == 5 and r["slowest_pass_ms"] == max(r["pass_p50_ms"]) >= min(r["pass_p50_ms"])
    assert all(r["slowest_pass_ms"] > budget for r in rounds[:-1])  # a round is repeated only when over
    assert all(b["budget_used_ms"] < a["budget_used_ms"] for a, b in zip(rounds, rounds[1:]))
    assert rounds[0]["budget_used_ms"] == budget
    assert lb["measured_p50_ms"] > 0
