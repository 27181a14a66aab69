"""TFLite (LiteRT) conversion of a tiny random-init BERT classifier: fp32 parity with PyTorch, dynamic
int8 size, and the runtime Predictor's LiteRT backend against the raw interpreter.

The converter (litert-torch + ai-edge-quantizer, which pin typing-extensions<4.13 through xdsl) lives in
``.venv-tflite`` (``scripts/install-tflite.sh``) and is run here as a subprocess, exactly as a user runs
the CLI: the interpreter the build picks (``converter_python``), from outside the project (so the checkout
is not on its sys.path by accident). The checks run in this process and need only ``ai-edge-litert`` (the
runtime's interpreter).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SEQ = 64  # fixed sequence length of the test graphs (short: faster conversion and inference)
TEXTS = [
    "a great film",
    "terrible plot and a boring cast",
    "I loved every minute of it, the score is brilliant but the story drags in the middle",
    "meh",
    "not good, not bad",
    "the film is a quiet, patient character study that rewards attention",
    "",
    "word " * 200,  # longer than SEQ: truncated the same way in every path
]

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert not installed: run scripts/install-tflite.sh")


def _converter_python() -> str:
    """The interpreter the build uses. Skips only where no converter is installed at all; one that is
    installed but does not work (e.g. it does not see this environment's probscale-edge) fails."""
    from probscale_edge.converters.tflite_env import ENV_VAR, converter_python, venv_candidates
    from probscale_edge.errors import ProbscaleError

    try:
        return converter_python()
    except ProbscaleError as e:
        if os.environ.get(ENV_VAR) or any(os.path.lexists(p) for p in venv_candidates()):
            raise
        pytest.skip(str(e))


def _convert(folder, out, *args, expect_rc=0):
    cmd = [_converter_python(), "-m", "probscale_edge.converters.tflite", str(folder), str(out), "--seq-len", str(SEQ),
           *args]
    env = dict(os.environ, PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=Path(out).parent)
    if proc.returncode != expect_rc:
        print(proc.stdout[-4000:])
        print(proc.stderr[-4000:], file=sys.stderr)
    assert proc.returncode == expect_rc, f"rc {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}"
    return proc


@pytest.fixture(scope="module")
def tiny_cls(tmp_path_factory, minilm_dir):
    """A 2-layer, hidden-64 random-init BERT classifier folder (MiniLM's tokenizer and 30,522-row
    vocabulary: ~2.1M parameters, mostly embedding, so int8 weights shrink the file measurably)."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from probscale_edge.adapters import get_adapter
    from probscale_edge.modeling import EncoderClassifier, save_classifier

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(minilm_dir))
    cfg = AutoConfig.for_model("bert", vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2,
                               num_attention_heads=4, intermediate_size=256, max_position_embeddings=160,
                               pad_token_id=0)
    enc = AutoModel.from_config(cfg)
    get_adapter("bert").drop_pooler(enc)
    model = EncoderClassifier(enc, 3).eval()
    with torch.no_grad():  # spread the random head so the logits (and their argmax) are not all ~0
        model.classifier.weight.mul_(20.0)
    folder = tmp_path_factory.mktemp("tfl") / "tiny-cls"
    save_classifier(model, tok, folder, ["a", "b", "c"])
    return folder


@pytest.fixture(scope="module")
def converted(tiny_cls, tmp_path_factory):
    """One CLI run: fp32 (kept) + dynamic int8 -> (fp32 path, int8 path, report, stdout)."""
    out = tmp_path_factory.mktemp("tflout")
    texts = out / "parity.txt"
    texts.write_text("\n".join(t for t in TEXTS if t.strip()), encoding="utf-8")
    proc = _convert(tiny_cls, out / "model_int8.tflite", "--quantize", "dynamic_wi8_afp32", "--keep-fp32",
                    str(out / "model_fp32.tflite"), "--parity-texts", str(texts), "--json", str(out / "report.json"))
    report = json.loads((out / "report.json").read_text())
    return out / "model_fp32.tflite", out / "model_int8.tflite", report, proc.stdout


def _torch_logits(folder, texts):
    """PyTorch reference, one text at a time, unpadded (truncated to SEQ like the graph)."""
    import torch

    from probscale_edge.modeling import load_classifier

    model, tok, _ = load_classifier(folder)
    rows = []
    with torch.no_grad():
        for t in texts:
            enc = tok([t], truncation=True, max_length=SEQ, return_tensors="pt")
            rows.append(model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])[0].numpy())
    return np.stack(rows)


def _raw_interpreter_logits(path, folder, texts):
    """The LiteRT interpreter driven by hand (independent of the converter's and the runtime's code)."""
    from ai_edge_litert.interpreter import Interpreter
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    ins = {d["name"].split(":")[0]: d for d in it.get_input_details()}
    out = it.get_output_details()[0]
    rows = []
    for t in texts:
        enc = tok([t], padding="max_length", truncation=True, max_length=SEQ, return_tensors="np")
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            it.set_tensor(ins[f"serving_default_{name}"]["index"], enc[name].astype(np.int32))
        it.invoke()
        rows.append(it.get_tensor(out["index"])[0].copy())
    return np.stack(rows)


def test_graph_interface(converted):
    from ai_edge_litert.interpreter import Interpreter

    fp32, _, report, _ = converted
    it = Interpreter(model_path=str(fp32))
    ins = {d["name"].split(":")[0]: d for d in it.get_input_details()}
    assert set(ins) == {"serving_default_input_ids", "serving_default_attention_mask", "serving_default_token_type_ids"}
    for d in ins.values():
        assert list(d["shape"]) == [1, SEQ] and d["dtype"] == np.int32
    (out,) = it.get_output_details()
    assert list(out["shape"]) == [1, 3] and out["dtype"] == np.float32
    assert report["fixed_sequence_length"] == SEQ and report["batch"] == 1
    assert report["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]


def test_fp32_parity_with_pytorch(converted, tiny_cls):
    fp32, _, report, stdout = converted
    ref = _torch_logits(tiny_cls, TEXTS)
    got = _raw_interpreter_logits(fp32, tiny_cls, TEXTS)
    diff = float(np.abs(ref - got).max())
    assert diff <= 1e-4, diff
    assert np.abs(ref).max() > 0.1  # the check compares real signal, not zeros
    assert report["fp32"]["parity_pass"] and report["fp32"]["parity_max_abs"] <= 1e-4
    assert "[PASS] TFLite fp32 vs PyTorch" in stdout


def test_dynamic_int8_smaller_and_close(converted, tiny_cls):
    fp32, int8, report, stdout = converted
    assert int8.stat().st_size * 3 <= fp32.stat().st_size, (int8.stat().st_size, fp32.stat().st_size)
    assert report["int8"]["recipe"] == "dynamic_wi8_afp32" and report["int8"]["bytes"] == int8.stat().st_size
    ref = _torch_logits(tiny_cls, TEXTS)
    got = _raw_interpreter_logits(int8, tiny_cls, TEXTS)
    rel = float(np.abs(ref - got).max() / np.abs(ref).max())
    assert rel < 0.05, rel
    assert report["int8"]["quality"] == "ok" and "[PASS] TFLite int8 (dynamic_wi8_afp32)" in stdout


@pytest.mark.parametrize("which", ["fp32", "int8"])
def test_predictor_litert_backend_matches_interpreter(converted, tiny_cls, tmp_path, which):
    """A bundle holding the .tflite, loaded by the runtime Predictor (LiteRT backend)."""
    from probscale_edge.runtime.bundle import write_manifest
    from probscale_edge.runtime.predictor import Predictor

    fp32, int8, report, _ = converted
    src = fp32 if which == "fp32" else int8
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.tflite").write_bytes(src.read_bytes())
    (bundle / "tokenizer.json").write_bytes((tiny_cls / "tokenizer.json").read_bytes())
    write_manifest(bundle, {"labels": ["a", "b", "c"],
                            "model": {"file": "model.tflite", "format": "tflite", "precision": which,
                                      "inputs": report["inputs"], "outputs": ["logits"], "fixed_sequence_length": SEQ},
                            "tokenizer": {"file": "tokenizer.json", "max_length": SEQ, "pad_id": 0}})
    pred = Predictor(bundle, threads=1)
    assert pred.backend_name == "litert"
    got = pred.logits(TEXTS, batch_size=3)
    raw = _raw_interpreter_logits(src, tiny_cls, TEXTS)
    assert got.shape == (len(TEXTS), 3)
    np.testing.assert_allclose(got, raw, rtol=0, atol=1e-6)
    assert [p.index for p in pred.predict(TEXTS)] == list(raw.argmax(-1))


def test_static_int8_without_calibration_is_refused(tiny_cls, tmp_path):
    proc = _convert(tiny_cls, tmp_path / "m.tflite", "--quantize", "static_wi8_ai8", expect_rc=2)
    assert "needs calibration texts" in proc.stderr
    assert not (tmp_path / "m.tflite").exists()


@pytest.mark.parametrize("embedding", [{}, {"trim_vocab": True, "embedding_rank": 8, "embedding_dense_rows": 20}],
                         ids=["dense-embedding", "factorized-with-exact-rows"])
def test_build_ships_a_gated_tflite_model(tiny_bert, toy_csv, tmp_path, embedding):
    """`build --tflite`: model.tflite in the bundle, checksummed, gated, and what the LiteRT backend runs (also
    with a factorized word embedding whose most used rows are exact: two gathers and a sum in the graph)."""
    _converter_python()  # skips without the converter toolchain
    from probscale_edge.data import load_task
    from probscale_edge.pipeline import BuildConfig, TaskSpec, build
    from probscale_edge.runtime.bundle import verify_bundle
    from probscale_edge.runtime.predictor import Predictor

    out = tmp_path / "bundle"
    m = build(BuildConfig.create(model=str(tiny_bert), tasks=[TaskSpec(str(toy_csv))], output=str(out), target="arm64",
                          budget=0.5, epochs=2, lr=1e-3, student_lr=1e-3, use_cache=False,
                          latency_runs=5, tflite=True, **embedding))
    t = m["tflite"]
    assert t["included"], t
    assert t["fp32_parity_max_abs"] <= 1e-4
    assert (out / "model.tflite").stat().st_size == t["bytes"]
    assert "model.tflite" in verify_bundle(out)["files"]
    task = load_task(str(toy_csv))
    lite = Predictor(out, backend="litert", threads=1)
    assert lite.backend_name == "litert" and lite.fixed_length == 128
    assert lite.accuracy(task.eval.texts, task.eval.labels) == pytest.approx(t["accuracy"], abs=1e-12)
    ort = Predictor(out)
    a, b = ort.logits(task.eval.texts).argmax(-1), lite.logits(task.eval.texts).argmax(-1)
    assert (a == b).mean() >= 0.95
    assert m["validation"]["accuracy"]["pruned_onnx_fp32"] - t["accuracy"] <= 0.01  # the gate: at most 1 point lost
