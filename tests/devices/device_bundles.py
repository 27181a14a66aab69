"""Bundles for the device tests: a tiny random-init BERT exported, quantized and checksummed (no build pipeline)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def build_tiny_bundle(folder: Path, model_dir: Path, labels=("negative", "positive"), seed: int = 0,
                      preset: str = "arm64") -> Path:
    """An int8 (``preset``; "fp32" for no quantization) bundle of a tiny random-init BERT with the MiniLM tokenizer.

    For shapes and parity only. The classifier weights are scaled up so that the logit margins are
    large enough for an argmax comparison to mean something."""
    import torch

    from probscale_edge.converters.onnx_export import ExportConfig, export_onnx
    from probscale_edge.converters.quantize import PRESETS, quantize_dynamic_int8
    from probscale_edge.modeling import EncoderClassifier, load_encoder
    from probscale_edge.runtime.bundle import write_manifest

    torch.manual_seed(seed)
    enc, tok, _ = load_encoder(str(model_dir))
    model = EncoderClassifier(enc, len(labels)).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(20.0)
    folder = Path(folder)
    work = folder.parent / f".{folder.name}.work"
    shutil.rmtree(work, ignore_errors=True)
    stage = work / "bundle"
    stage.mkdir(parents=True)
    rep = export_onnx(model, tok, work / "fp32.onnx", ExportConfig())  # parity inputs of up to 128 tokens (default)
    if preset == "fp32":
        shutil.copyfile(work / "fp32.onnx", stage / "model.onnx")
        quant = {"precision": "fp32"}
    else:
        quantize_dynamic_int8(work / "fp32.onnx", stage / "model.onnx", PRESETS[preset])
        quant = {"precision": "int8", "target": preset, "params": dict(PRESETS[preset])}
    tok.save_pretrained(str(work / "tok"))
    shutil.copyfile(work / "tok" / "tokenizer.json", stage / "tokenizer.json")
    if (work / "tok" / "vocab.txt").exists():
        shutil.copyfile(work / "tok" / "vocab.txt", stage / "vocab.txt")
    (stage / "labels.json").write_text(json.dumps(list(labels)))
    write_manifest(stage, {  # the one manifest writer: file list, checksums, format version, digest
        "created_by": "probscale-edge tests (tiny random-init bundle)",
        "target": preset,
        "labels": list(labels),
        "model": {"file": "model.onnx", "format": "onnx", "precision": quant["precision"], "inputs": rep["inputs"],
                  "outputs": ["logits"], "pooling": "mean"},
        "tokenizer": {"file": "tokenizer.json", "max_length": 128,
                      "vocab_file": "vocab.txt" if (stage / "vocab.txt").exists() else None,
                      "pad_id": int(tok.pad_token_id or 0)},
        "task": {"name": "tiny-random"},
        "quantization": quant,
    })
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(stage, folder)
    shutil.rmtree(work, ignore_errors=True)
    return folder
