"""What users bring: half-precision checkpoints, short position tables, checkpoint weights the architecture does
not use. Tiny random-init models (shapes and code paths only; the real-model fp16/bf16 accuracy is measured by
benchmarks/encoders/precision.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import write_csv


def _tiny(folder, tok_dir, positions=160, dtype=None):
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    cfg = AutoConfig.for_model("bert", vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=4, intermediate_size=64, max_position_embeddings=positions)
    m = AutoModel.from_config(cfg)
    if dtype is not None:
        m = m.to(dtype)
    m.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def _build(model, data, out, *extra):
    cmd = [sys.executable, "-m", "probscale_edge", "build", "--model", str(model), "--data", str(data), "--epochs", "1",
           "--budget", "0.5", "--target", "x86_64", "--no-cache", "-o", str(out), *extra]
    return subprocess.run(cmd, capture_output=True, text=True)


@pytest.fixture(scope="module")
def long_csv(tmp_path_factory):
    words = "great film lovely cast superb plot awful story boring score".split()
    rows = [(" ".join(words[(i + j) % len(words)] for j in range(90)), "pos" if i % 2 else "neg") for i in range(120)]
    return write_csv(tmp_path_factory.mktemp("long") / "long.csv", rows)


def test_a_64_position_model_builds_with_longer_texts(tmp_path, minilm_dir, long_csv):
    model = _tiny(tmp_path / "short", minilm_dir, positions=64)
    r = _build(model, long_csv, tmp_path / "b")
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["tokenizer"]["max_length"] == 64  # the bundle's runtime truncates there too
    assert m["source_model"]["max_length"] == {"cap": 128, "model": 64, "tokenizer": 512, "used": 64}
    assert "inputs truncated to 64 tokens" in r.stderr
    from probscale_edge.runtime import Predictor

    p = Predictor(tmp_path / "b")
    assert p.encode([open(long_csv).read()[:5000]])["input_ids"].shape[1] == 64


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_checkpoint_builds_in_float32(tmp_path, minilm_dir, toy_csv, dtype):
    import torch

    model = _tiny(tmp_path / dtype, minilm_dir, dtype=getattr(torch, dtype))
    r = _build(model, toy_csv, tmp_path / "b")
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["source_model"]["stored_dtype"] == dtype and m["source_model"]["trained_dtype"] == "float32"
    assert m["validation"]["onnx_parity_pass"]


def test_unused_checkpoint_weights_are_an_error_unless_accepted(tmp_path, minilm_dir, toy_csv):
    from safetensors.torch import load_file, save_file

    model = _tiny(tmp_path / "extra", minilm_dir)
    w = load_file(str(model / "model.safetensors"))
    w["encoder.layer.0.attention.self.distance_embedding.weight"] = w["embeddings.position_embeddings.weight"].clone()
    save_file(w, str(model / "model.safetensors"), metadata={"format": "pt"})
    r = _build(model, toy_csv, tmp_path / "b")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "distance_embedding" in err[0] and "--allow-unused-weights" in err[0], r.stderr[-1500:]
    assert not (tmp_path / "b").exists()
    r = _build(model, toy_csv, tmp_path / "b", "--allow-unused-weights")
    assert r.returncode == 0, r.stderr[-2000:]
