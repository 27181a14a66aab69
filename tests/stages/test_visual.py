"""The bundle's report (report.html, pareto.png): every rung shown, self-contained, escaped, plain tick labels,
labels that do not overlap; older single-budget manifests and best-effort ladders too. Hand-written manifests
following the ladder contract (issue 18), no model needed."""

from __future__ import annotations

import copy
import re
import subprocess
import sys

import pytest

from probscale_edge import visual

RUNGS = [  # (target, measured, total, non-emb, bytes, p50, dev, eval, action, width-only)
    (2.0, 2.04, 11_050_000, 5_300_000, 11_900_000, 4.10, 0.856, 0.822, "width", None),
    (3.0, 3.02, 7_470_000, 3_400_000, 7_600_000, 3.05, 0.853, 0.820, "width", None),
    (5.0, 5.10, 4_420_000, 2_100_000, 4_480_000, 2.20, 0.850, 0.818, "drop layer 5", 0.846),
    (8.0, 8.05, 2_800_000, 1_300_000, 2_900_000, 1.55, 0.845, 0.812, "drop layer 4", 0.843),
    (12.0, 12.2, 1_850_000, 850_000, 1_950_000, 1.30, 0.838, 0.806, "width", 0.838),
    (16.0, 16.3, 1_380_000, 600_000, 1_450_000, 1.20, 0.821, 0.790, "drop layer 3", 0.815),
]
FULL_DEV = 0.858


def ladder_manifest(task="rotten_tomatoes", chosen=3, best_effort=False, min_retention=0.98) -> dict:
    rungs = []
    for i, (t, rt, tot, ne, b, p50, dev, ev, act, wo) in enumerate(RUNGS, 1):
        ret = dev / FULL_DEV
        rungs.append({"rung": i, "target_ratio": t, "ratio_total": rt, "total_params": tot, "non_embedding_params": ne,
                      "bytes": b, "p50_ms": p50, "dev_accuracy": dev, "eval_accuracy": ev, "retention": ret,
                      "action": act, "width_only_dev_accuracy": wo,
                      "meets": {"retention": ret >= min_retention, "size": b / 1e6 <= 5.0, "latency": None},
                      "seconds": 40.0 + i})
    c = rungs[chosen] if chosen is not None else rungs[-1]
    return {
        "task": {"name": task}, "source_model": {"name": "all-MiniLM-L6-v2", "num_layers": 6, "num_heads": 12,
                                                 "ffn_size": 1536},
        "target": "arm64",
        "validation": {"accuracy": {"full_finetuned_torch_fp32": 0.826, "bundle": c["eval_accuracy"]},
                       "retention": c["eval_accuracy"] / 0.826},
        "sizes": {"bundle_model_bytes": c["bytes"], "full_fp32_weights_bytes": 90_264_584},
        "latency": {"bundle_p50_ms": c["p50_ms"], "full_torch_fp32_p50_ms": 9.27},
        "parameters": {"ratio_total": c["ratio_total"]},
        "ladder": {"constraints": {"min_retention": min_retention, "max_size_mb": 5.0, "max_latency_ms": None},
                   "best_effort": best_effort, "stopped": "rung 5 fell below the floor (97.7% < 98%)",
                   "chosen": chosen,
                   "full": {"dev_accuracy": FULL_DEV, "eval_accuracy": 0.826, "total_params": 22_566_146,
                            "bytes": 90_264_584, "p50_ms": 9.27},
                   "uncut_int8": {"eval_accuracy": 0.8197, "bytes": 23_000_000, "p50_ms": 3.4},
                   "rungs": rungs},
        "subnetwork": {"spec": {"keep_layers": [0, 1, 2, 3], "heads": {str(i): list(range(12 - 2 * i)) for i in range(4)},
                                "ffn": {str(i): list(range(0, 1536, 2 + i)) for i in range(4)}}},
        "stages": {"probe": {"weighted": [0.68, 0.69, 0.74, 0.82, 0.86, 0.877, 0.893]}},
        "quantization": {"max_accuracy_drop": 1.0, "chosen": "preset",
                         "attempts": [{"setting": "preset", "excluded_nodes": 0, "accuracy": 0.80, "drop_points": 1.4,
                                       "pass": False, "bytes": 2_900_000},
                                      {"setting": "exclude-sensitive", "excluded_nodes": ["/layer.0/ffn/MatMul"],
                                       "accuracy": 0.812, "drop_points": 0.2, "pass": True, "bytes": 3_100_000}]},
    }


def single_manifest() -> dict:
    """An older single-budget build: no "ladder", no num_layers/num_heads/ffn_size, excluded_nodes a count."""
    m = ladder_manifest()
    del m["ladder"]
    m["source_model"] = {"name": "all-MiniLM-L6-v2"}
    m["parameters"] = {"ratio_total": 1.4589, "original": {"total": 22_566_146, "non_embedding": 10_647_554},
                       "pruned": {"total": 15_468_284, "non_embedding": 3_549_692}}
    m["sizes"]["bundle_model_bytes"] = 15_702_034
    m["latency"]["bundle_p50_ms"] = 1.246
    m["validation"] = {"accuracy": {"full_finetuned_torch_fp32": 0.8259, "bundle": 0.8201}, "retention": 0.9929}
    return m


def _rung_rows(text: str) -> int:
    return len(re.findall(r'<tr class="rung(?: chosen)?">', text))


def _tick_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()
            + ax.get_xticklabels(minor=True) + ax.get_yticklabels(minor=True)]


def _check_self_contained(text: str):
    assert "http://" not in text and "https://" not in text
    srcs = re.findall(r'src\s*=\s*["\']([^"\']*)', text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs), [s[:40] for s in srcs]
    assert "<link" not in text and "@import" not in text and "url(" not in text


def _check_png(path, min_w=600, min_h=300):
    import matplotlib.image as mpimg

    img = mpimg.imread(str(path))
    h, w = img.shape[:2]
    assert w >= min_w and h >= min_h and w < 4000 and h < 3000, (w, h)
    assert img.std() > 0.01  # something drawn, not a blank canvas


@pytest.mark.parametrize("make, rows", [(ladder_manifest, 6), (single_manifest, 1),
                                        (lambda: ladder_manifest(chosen=None, best_effort=True), 6)])
def test_report_files_hold_every_rung_and_are_self_contained(tmp_path, make, rows):
    out = visual.write_report(make(), tmp_path / "bundle")
    assert set(out) == {"report.html", "pareto.png"} and all(p.exists() for p in out.values())
    text = out["report.html"].read_text()
    assert _rung_rows(text) == rows
    _check_self_contained(text)
    _check_png(out["pareto.png"])
    assert text.count("data:image/png;base64,") == 2  # pareto + probe curve


def test_ladder_report_says_what_was_chosen_and_why():
    text = visual.report_html(ladder_manifest(), b"png")
    chosen = re.findall(r'<tr class="rung chosen">(.*?)</tr>', text)
    assert len(chosen) == 1 and chosen[0].startswith("<td>4</td>")  # index 3 = rung 4
    assert "drop layer 4" in text and "+0.20 points" in text  # probe-guided vs width-only, measured
    assert "rung 5 fell below the floor" in text and "Best effort" not in text
    assert "not met" in text or "met" in text
    assert "single budget (no ladder)" not in text


def test_single_budget_and_best_effort_are_said():
    assert "single budget (no ladder)" in visual.report_html(single_manifest(), b"png")
    text = visual.report_html(ladder_manifest(chosen=None, best_effort=True), b"png")
    assert "Best effort" in text and "none: no rung met every constraint" in text
    assert 'class="rung chosen"' not in text
    assert "shipped (best effort)" in text.split("<h2>Ladder")[1]  # the rung in the bundle, found by its bytes
    constraints = text.split("<h2>Constraints</h2>")[1].split("</table>")[0]
    assert constraints.count("not met") == 1 and "95.7%" in constraints  # its dev retention, under the floor


def test_manifest_strings_are_escaped(tmp_path):
    m = ladder_manifest(task="<script>x</script>")
    m["ladder"]["rungs"][0]["action"] = "<b>drop</b>"
    m["quantization"]["attempts"][0]["setting"] = '"><img src=x>'
    text = visual.write_report(m, tmp_path)["report.html"].read_text()
    assert "<script>" not in text and "&lt;script&gt;x&lt;/script&gt;" in text
    assert "<b>drop</b>" not in text and "<img src=x>" not in text


def test_layer_map_marks_dropped_layers_and_counts():
    text = visual.report_html(ladder_manifest(), b"png")
    table = text.split("What was kept")[1].split("int8 gate")[0]
    assert table.count("dropped") == 2  # layers 4 and 5 of 6
    assert "12 / 12" in table and "6 / 12" in table and "768 / 1536" in table
    single = visual.report_html(single_manifest(), b"png").split("What was kept")[1]
    assert "kept counts only" in single and "dropped" in single  # 6 layers inferred from the 7 probe scores


@pytest.mark.parametrize("make", [ladder_manifest, single_manifest,
                                  lambda: ladder_manifest(chosen=None, best_effort=True)])
def test_pareto_ticks_are_plain_numbers(make):
    fig = visual.pareto_figure(make())
    fig.canvas.draw()
    axes = fig.axes
    assert len(axes) == 2
    for ax in axes:
        texts = _tick_texts(ax)
        assert not [t for t in texts if "10^" in t or "$" in t or "e+" in t or "\\times" in t], texts
        assert not [t.get_text() for t in ax.get_xticklabels(minor=True) if t.get_text()]
        shown = [t for t in ax.get_xticklabels() if t.get_text() and ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
        assert len(shown) >= 2, [t.get_text() for t in shown]
    assert axes[0].get_xscale() == "log"  # 1.45 MB .. 90 MB
    assert "MB" in axes[0].get_xlabel() and "ms" in axes[1].get_xlabel() and "%" in axes[0].get_ylabel()


def test_pareto_point_labels_do_not_overlap_and_name_every_rung():
    from matplotlib.text import Text

    fig = visual.pareto_figure(ladder_manifest())
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    for ax in fig.axes:
        anns = [c for c in ax.texts if c.get_text()]
        assert {"2x", "3x", "5x", "8x", "12x", "16x", "full fp32", "uncut int8"} == {a.get_text() for a in anns}
        boxes = [Text.get_window_extent(a, r) for a in anns]
        frame = ax.get_window_extent(r)
        for i, a in enumerate(boxes):
            assert frame.x0 <= a.x0 and a.x1 <= frame.x1 and frame.y0 <= a.y0 and a.y1 <= frame.y1
            assert not [j for j, b in enumerate(boxes) if j > i and a.overlaps(b)], (anns[i].get_text(), i)
    legend = fig.legends[0]
    names = [t.get_text() for t in legend.get_texts()]
    assert "chosen rung" in names and "full fine-tuned model (fp32)" in names and "uncut model, int8" in names
    assert any(n.startswith("floor: 98%") for n in names)
    lb = legend.get_window_extent(r)
    assert all(not lb.overlaps(ax.get_window_extent(r)) for ax in fig.axes)  # the legend covers no point


def test_crowded_labels_still_do_not_overlap():
    from matplotlib.text import Text

    """Twelve rungs packed close together: the greedy placement (or its leader lines) keeps the boxes apart."""
    m = ladder_manifest()
    base = m["ladder"]["rungs"][0]
    m["ladder"]["rungs"] = [dict(copy.deepcopy(base), rung=i + 1, target_ratio=2 + 0.25 * i, bytes=12e6 - 0.15e6 * i,
                                 p50_ms=4.0 - 0.02 * i, eval_accuracy=0.822 - 0.0004 * i) for i in range(12)]
    m["ladder"]["chosen"] = 2
    fig = visual.pareto_figure(m)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    for ax in fig.axes:
        texts = [a for a in ax.texts if a.get_text()]
        names = {a.get_text() for a in texts}
        assert {"2.5x", "4.75x", "full fp32", "uncut int8"} <= names  # chosen, last, references
        assert any("see the ladder table" in n for n in names) and len(names) < 15  # thinned, and said so
        boxes = [Text.get_window_extent(a, r) for a in texts]  # the text alone, not its leader line
        assert sum(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:]) == 0


@pytest.mark.parametrize("broken", [{}, {"ladder": {}}, {"ladder": {"rungs": [{}], "chosen": 7}},
                                    {"ladder": None, "task": None, "stages": {"probe": {"weighted": None}}},
                                    {"ladder": {"rungs": [{"bytes": "x", "meets": None, "eval_accuracy": 0.8}],
                                                "full": None, "constraints": None}}])
def test_missing_or_odd_fields_never_crash(tmp_path, broken):
    out = visual.write_report(broken, tmp_path)
    assert out["pareto.png"].stat().st_size > 1000 and "<html" in out["report.html"].read_text()


def test_importing_visual_loads_no_matplotlib():
    code = "import sys, probscale_edge.visual; print('matplotlib' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "False", r.stderr[-500:]


def test_nice_ticks_are_round_and_inside():
    assert visual._nice_ticks(1.2, 95) == [2, 5, 10, 20, 50]
    assert visual._nice_ticks(0.9, 9.5) == [1, 2, 3, 5, 7]
    assert [visual._plain(t) for t in (0.5, 2, 20, 1500)] == ["0.5", "2", "20", "1,500"]


def test_probe_curve_marks_the_dropped_layers_in_the_map_numbering():
    fig = visual.probe_figure(ladder_manifest())
    fig.canvas.draw()
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["emb", "0", "1", "2", "3", "4", "5"]
    dropped = [c for c in ax.collections if c.get_label() == "layer dropped"][0]
    assert [x for x, _ in dropped.get_offsets()] == [5, 6]  # layers 4 and 5: outputs 5 and 6 (0 = embeddings)
    assert visual.probe_figure(single_manifest() | {"stages": {}}) is None
