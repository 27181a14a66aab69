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


def _finetuned_checkpoint(folder, tok_dir, toy_csv, id2label):
    """A tiny BertForSequenceClassification trained a few steps on the toy task (so its head means something)."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from probscale_edge.data import load_task

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    cfg = AutoConfig.for_model("bert", vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=4, intermediate_size=64, num_labels=2, id2label=id2label,
                               label2id={v: k for k, v in id2label.items()}, architectures=["BertForSequenceClassification"])
    m = AutoModelForSequenceClassification.from_config(cfg)
    task = load_task(str(toy_csv))
    name_to_ckpt = {v: k for k, v in id2label.items()}
    y = torch.tensor([name_to_ckpt[task.label_names[i]] for i in task.train.labels])
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    for step in range(30):
        idx = torch.randint(0, len(y), (32,))
        enc = tok([task.train.texts[i] for i in idx], padding=True, truncation=True, max_length=128, return_tensors="pt")
        loss = torch.nn.functional.cross_entropy(m(**enc).logits, y[idx])
        loss.backward()
        opt.step()
        opt.zero_grad()
    m.eval()
    with torch.no_grad():
        enc = tok(task.eval.texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        pred = m(**enc).logits.argmax(-1).tolist()
    acc = sum(id2label[p] == task.label_names[t] for p, t in zip(pred, task.eval.labels)) / len(pred)
    m.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder, acc


def test_a_finetuned_checkpoint_is_the_teacher_as_it_is(tmp_path, minilm_dir, toy_csv):
    # the checkpoint numbers its labels the other way round from the task (neg, pos): the head is remapped
    model, own_acc = _finetuned_checkpoint(tmp_path / "ft", minilm_dir, toy_csv, {0: "pos", 1: "neg"})
    assert own_acc > 0.6  # it learned something, so a wrong mapping would show
    r = _build(model, toy_csv, tmp_path / "b")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "no fine-tune" in r.stderr and "fine-tuning the full model" not in r.stderr
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["stages"]["finetune"]["skipped"] and m["stages"]["finetune"]["checkpoint"]["labels"] == ["pos", "neg"]
    assert m["validation"]["accuracy"]["full_finetuned_torch_fp32"] == pytest.approx(own_acc, abs=1e-9)


def test_a_checkpoint_with_other_labels_is_refused(tmp_path, minilm_dir, toy_csv):
    model, _ = _finetuned_checkpoint(tmp_path / "ft", minilm_dir, toy_csv, {0: "pos", 1: "neg"})
    cfg = json.loads((model / "config.json").read_text())
    cfg["id2label"], cfg["label2id"] = {"0": "LABEL_0", "1": "LABEL_1"}, {"LABEL_0": 0, "LABEL_1": 1}
    (model / "config.json").write_text(json.dumps(cfg))
    r = _build(model, toy_csv, tmp_path / "b")
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode == 2 and len(err) == 1 and "are not the task's" in err[0], r.stderr[-1500:]
    assert not (tmp_path / "b").exists()
