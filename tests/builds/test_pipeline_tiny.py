"""The whole build on a tiny random-init BERT and a synthetic CSV task (fast): every stage runs,
the bundle is complete and verifiable, and the torch-free runtime reproduces the build's numbers.
(Accuracy claims are in test_real_build.py, on the real model.)"""

from __future__ import annotations

import json

import pytest



def test_bundle_layout_and_manifest(tiny_bundle):
    out, m = tiny_bundle
    assert sorted(p.name for p in out.iterdir()) == ["labels.json", "manifest.json", "manifest.sha256", "model.onnx", "model.ort",
                                                     "pareto.png", "report.html", "required_operators.config",
                                                     "tokenizer.json", "vocab.txt"]
    disk = json.loads((out / "manifest.json").read_text())
    assert disk["format_version"] == 1
    assert disk["target"] == "arm64"
    q = disk["quantization"]
    assert q["preset"] == {"per_channel": True, "reduce_range": False, "weight_type": "QInt8", "activation_type": "QUInt8"}
    p = disk["parameters"]
    assert p["original"]["total"] > p["pruned"]["total"] > p["pruned"]["embedding"]
    assert p["pruned"]["non_embedding"] < p["original"]["non_embedding"]
    assert disk["subnetwork"]["kept_fraction_non_embedding"] <= 0.5 + 1e-9
    spec = disk["subnetwork"]["spec"]
    # unit granularity (default): layers chosen under 2 x budget (all 4 here), then heads/FFN cut to the budget
    assert len(spec["keep_layers"]) == 4 and (spec["heads"] or spec["ffn"])
    shapes = disk["subnetwork"]["layer_shapes"]
    assert sum(s["ffn"] for s in shapes) < 4 * 64 or sum(s["heads"] for s in shapes) < 4 * 4
    v = disk["validation"]
    assert v["onnx_parity_max_abs"] <= 1e-4
    assert v["reload_max_abs"] <= 1e-5
    for k in ("full_finetuned_torch_fp32", "pruned_torch_fp32", "pruned_onnx_fp32", "bundle"):
        assert 0.0 <= v["accuracy"][k] <= 1.0
    for name, meta in disk["files"].items():
        assert (out / name).stat().st_size == meta["bytes"]
    assert disk["mobile"]["matches_onnx"] is True
    assert "com.microsoft;1;" in (out / "required_operators.config").read_text()
    assert set(disk["tool_versions"]) >= {"torch", "transformers", "onnxruntime", "python"}


def test_runtime_reproduces_build_accuracy(tiny_bundle, toy_csv):
    from probscale_edge.data import load_local
    from probscale_edge.runtime import Predictor

    out, m = tiny_bundle
    t = load_local(toy_csv)
    p = Predictor(out)
    acc = p.accuracy(t.eval.texts, t.eval.labels)
    assert acc == pytest.approx(m["validation"]["accuracy"]["bundle"], abs=1e-9)
    preds = p.predict(["great film", ""])
    assert len(preds) == 2 and all(abs(sum(r.probabilities) - 1) < 1e-5 for r in preds)


def test_tampered_bundle_is_refused(tiny_bundle, tmp_path):
    import shutil

    from probscale_edge.errors import BundleError
    from probscale_edge.runtime import Predictor

    out, _ = tiny_bundle
    for action, match in [("alter", "does not match its checksum"), ("remove", "is missing"),
                          ("extra", "not in its manifest"), ("newer", "newer than this runtime")]:
        b = tmp_path / action
        shutil.copytree(out, b)
        if action == "alter":
            with open(b / "model.onnx", "r+b") as f:
                f.seek(100)
                f.write(b"\x00\x01\x02")
        elif action == "remove":
            (b / "vocab.txt").unlink()
        elif action == "extra":
            (b / "notes.txt").write_text("x")
        else:
            mm = json.loads((b / "manifest.json").read_text())
            mm["format_version"] = 99
            (b / "manifest.json").write_text(json.dumps(mm))
        with pytest.raises(BundleError, match=match):
            Predictor(b)


def test_bench_reports_the_conventions(tiny_bundle):
    from probscale_edge.runtime.bench import BenchConfig, bench_bundle

    out, _ = tiny_bundle
    r = bench_bundle(out, BenchConfig(warmup_runs=2, num_runs=20, threads=1))
    for k in ("init_ms", "first_inference_ms", "warmup_mean_ms", "model_bytes", "peak_rss_bytes"):
        assert r[k] > 0
    lat = r["latency"]
    assert lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert r["schema"] == "probscale-edge.bench/1" and r["num_runs"] == 20


def test_int8_is_smaller(tiny_bundle):
    out, m = tiny_bundle
    if m["quantization"]["precision"] == "int8":
        assert m["sizes"]["bundle_model_bytes"] < m["sizes"]["pruned_onnx_fp32_bytes"] / 3


def test_android_bundle_with_trimmed_vocabulary(tmp_path, tiny_bert, toy_csv):
    from probscale_edge.data import load_local
    from probscale_edge.pipeline import BuildConfig, TaskSpec, build
    from probscale_edge.runtime import Predictor

    out = tmp_path / "android"
    m = build(BuildConfig.create(model=str(tiny_bert), tasks=[TaskSpec(str(toy_csv))], output=str(out), target="android",
                          budget=0.5, trim_vocab=True, epochs=1, lr=1e-3, student_lr=1e-3,
                          use_cache=False, latency_runs=3), log=lambda *_: None)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["labels.json", "manifest.json", "manifest.sha256", "model.ort", "pareto.png", "report.html",
                     "required_operators.config", "tokenizer.json", "vocab.txt"]
    assert m["model"]["file"] == "model.ort" and m["model"]["format"] == "ort"
    v = m["vocabulary"]
    assert v["kept"] < v["original"] / 3
    assert len((out / "vocab.txt").read_text(encoding="utf-8").splitlines()) == v["kept"]
    assert m["parameters"]["pruned"]["embedding"] < m["parameters"]["original"]["embedding"] / 3
    t = load_local(toy_csv)
    assert Predictor(out).accuracy(t.eval.texts, t.eval.labels) == pytest.approx(m["validation"]["accuracy"]["bundle"])
