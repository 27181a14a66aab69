"""The int8 accuracy gate at work: a deliberately bad setting (per-tensor weights on a layer with an
outlier row) loses accuracy; the gate rejects it, takes the next step of the fallback chain, and
records every decision."""

from __future__ import annotations

import torch

from probscale_edge.converters.onnx_export import ExportConfig, export_onnx, onnx_logits
from probscale_edge.converters.quantize import QuantizeConfig, quantize_with_gate
from probscale_edge.modeling import EncoderClassifier, load_encoder

TEXTS = [f"{a} {b} {c}" for a in ("good", "bad", "dull", "great", "odd") for b in ("film", "plot", "cast", "song")
         for c in ("today", "again", "overall", "mostly", "", "😀")]


def _fp32_model(tiny_bert, tmp_path, outlier: bool):
    """A 3-class head on a tiny random encoder. Classes 0/1 split the texts along their main direction of
    variation (so fp32 predictions are diverse); with ``outlier``, class 2 is a dead class (huge negative
    bias) whose weights are 1e5 times larger: per-tensor weight scales then round classes 0/1 to zero."""
    from probscale_edge.modeling import tokenize

    torch.manual_seed(0)
    enc, tok, _ = load_encoder(str(tiny_bert))
    m = EncoderClassifier(enc, 3).eval()
    with torch.no_grad():
        e = tokenize(tok, TEXTS, None, 128)
        pooled = m.pool(m.encoder(input_ids=e["input_ids"], attention_mask=e["attention_mask"]).last_hidden_state,
                        e["attention_mask"])
        mean = pooled.mean(0)
        v = torch.linalg.svd(pooled - mean, full_matrices=False).Vh[0]
        v = v / v.norm()
        w = m.classifier.weight
        w[0], w[1] = 10 * v, -10 * v
        b = m.classifier.bias
        b[0], b[1] = -(10 * v) @ mean, (10 * v) @ mean
        w[2] = torch.randn_like(v) * (1e5 if outlier else 1.0)
        b[2] = -1e9 if outlier else -1e3
    path = tmp_path / ("out.onnx" if outlier else "ok.onnx")
    export_onnx(m, tok, path, ExportConfig(), parity_texts=TEXTS[:8])
    return path, tok


def test_gate_falls_back_from_a_bad_setting_and_records_it(tiny_bert, tmp_path):
    path, tok = _fp32_model(tiny_bert, tmp_path, outlier=True)
    ref = onnx_logits(path, tok, TEXTS).argmax(-1)  # fp32 predictions are the labels: fp32 accuracy = 1
    assert 0.2 < (ref == 0).mean() < 0.8  # diverse predictions, so a crushed head is visible

    def evaluate(p):
        return float((onnx_logits(p, tok, TEXTS).argmax(-1) == ref).mean())

    bad = QuantizeConfig(per_channel=False, max_accuracy_drop=1.0)
    rec = quantize_with_gate(path, tmp_path / "q.onnx", bad, evaluate, fp32_accuracy=1.0, target="x86_64")
    first, *rest = rec["attempts"]
    assert first["setting"] == "preset" and first["params"]["per_channel"] is False
    assert first["pass"] is False and first["drop_points"] > 1.0  # the bad setting really loses accuracy
    assert rec["chosen"] != "preset"
    assert rec["precision"] in ("int8", "fp32")
    if rec["precision"] == "int8":
        assert rest and rest[-1]["pass"] and rest[-1]["drop_points"] <= 1.0
        assert evaluate(tmp_path / "q.onnx") >= 0.99
    else:  # fp32 fallback: the shipped file is the fp32 model
        assert (tmp_path / "q.onnx").read_bytes() == path.read_bytes()


def test_impossible_gate_ships_fp32(tiny_bert, tmp_path):
    path, tok = _fp32_model(tiny_bert, tmp_path, outlier=False)
    rec = quantize_with_gate(path, tmp_path / "q.onnx", QuantizeConfig(max_accuracy_drop=-1.0),
                             lambda p: 0.5, fp32_accuracy=0.5)
    assert rec["precision"] == "fp32" and "fallback" in rec["chosen"]
    assert len(rec["attempts"]) >= 3 and not any(a["pass"] for a in rec["attempts"])
    assert (tmp_path / "q.onnx").read_bytes() == path.read_bytes()


def test_good_setting_passes_first_time(tiny_bert, tmp_path):
    path, tok = _fp32_model(tiny_bert, tmp_path, outlier=False)
    ref = onnx_logits(path, tok, TEXTS).argmax(-1)
    rec = quantize_with_gate(path, tmp_path / "q.onnx", QuantizeConfig(max_accuracy_drop=5.0),
                             lambda p: float((onnx_logits(p, tok, TEXTS).argmax(-1) == ref).mean()), 1.0)
    assert rec["precision"] == "int8" and rec["chosen"] == "preset"
    assert (tmp_path / "q.onnx").stat().st_size < path.stat().st_size


def test_static_qdq_is_calibrated_gated_and_recorded(tiny_bert, tmp_path):
    import numpy as np
    import onnx
    import pytest

    from probscale_edge.errors import ProbscaleError

    path, tok = _fp32_model(tiny_bert, tmp_path, outlier=False)
    ref = onnx_logits(path, tok, TEXTS).argmax(-1)
    names = [i.name for i in onnx.load(str(path)).graph.input]
    feeds = [{k: np.asarray(v, dtype=np.int64) for k, v in tok([t], return_tensors="np").items() if k in names}
             for t in TEXTS[::3]]
    calls = []

    def calibration():
        calls.append(1)
        return feeds

    def evaluate(p):
        return float((onnx_logits(p, tok, TEXTS).argmax(-1) == ref).mean())

    rec = quantize_with_gate(path, tmp_path / "q.onnx", QuantizeConfig(quant_mode="static", max_accuracy_drop=5.0),
                             evaluate, 1.0, calibration=calibration)
    first = rec["attempts"][0]
    assert rec["mode"] == "static" and first["setting"] == "static QDQ"
    assert first["calibration_examples"] == len(feeds) and len(calls) == 1  # calibrated once, on the data given
    ops = {n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    if rec["chosen"].startswith("static"):
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert rec["precision"] == "int8" and evaluate(tmp_path / "q.onnx") >= 0.95
    with pytest.raises(ProbscaleError, match="calibration"):
        quantize_with_gate(path, tmp_path / "q2.onnx", QuantizeConfig(quant_mode="static"), evaluate, 1.0)
