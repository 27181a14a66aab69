"""The README's default build on the real all-MiniLM-L6-v2 and the real rotten_tomatoes data.

This is the accuracy claim of the project's main command: at a budget that keeps at most a third of
the non-embedding parameters, the int8 arm64 bundle keeps >= 95% of the full fine-tuned model's
accuracy on the same eval split (both trained with the same recipe)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def manifest(real_bundle):
    return json.loads((real_bundle / "manifest.json").read_text())


def test_accuracy_retention_at_a_third_of_the_parameters(manifest):
    v = manifest["validation"]["accuracy"]
    full, bundle = v["full_finetuned_torch_fp32"], v["bundle"]
    assert full > 0.80  # the real fine-tuned MiniLM-L6 on rotten_tomatoes (published recipe: ~0.83)
    assert bundle >= 0.95 * full, (bundle, full)
    assert manifest["subnetwork"]["kept_fraction_non_embedding"] <= 1 / 3 + 1e-9
    p = manifest["parameters"]
    assert p["pruned"]["non_embedding"] <= p["original"]["non_embedding"] / 3 + 1000  # + the 2-class head


def test_arm64_preset_recorded(manifest):
    q = manifest["quantization"]
    assert manifest["target"] == "arm64"
    assert q["preset"]["activation_type"] == "QUInt8" and q["preset"]["weight_type"] == "QInt8"
    assert q["preset"]["per_channel"] is True
    assert q["precision"] == "int8"
    assert manifest["sizes"]["bundle_model_bytes"] * 3.5 <= manifest["sizes"]["pruned_onnx_fp32_bytes"]


def test_parity_and_reload(manifest):
    assert manifest["validation"]["onnx_parity_max_abs"] <= 1e-4
    assert manifest["validation"]["reload_max_abs"] <= 1e-5


def test_bench_cli_on_the_real_bundle(real_bundle, tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "probscale_edge", "bench", str(real_bundle), "--json", str(out),
                           "--num-runs", "30", "--threads", "1"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-1500:]
    r = json.loads(out.read_text())
    m = json.loads((real_bundle / "manifest.json").read_text())
    # the torch-free runtime reproduces the build's accuracy on the same eval split
    assert r["accuracy"] == pytest.approx(m["validation"]["accuracy"]["bundle"], abs=1e-9)
    assert r["eval_examples"] == m["validation"]["eval_examples"]
    assert r["latency"]["p50_ms"] > 0 and r["peak_rss_bytes"] > 0
    assert "p99 ms" in proc.stdout
