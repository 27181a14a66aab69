"""A realistic-size arm64 int8 bundle without fine-tuning: the real all-MiniLM-L6-v2 encoder (frozen) with a
logistic-regression head fitted on mean-pooled features of rotten_tomatoes training texts.

For the emulated-aarch64 parity check when no `probscale-edge build` bundle is at hand (minutes of CPU less).
    PROBSCALE_EDGE_CACHE=/tmp/pcache python benchmarks/arm64/make_minilm_head_bundle.py OUT_DIR [N_TRAIN]
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path


def main(argv):
    import numpy as np
    import torch

    from probscale_edge.assets import fetch
    from probscale_edge.converters.onnx_export import ExportConfig, export_onnx
    from probscale_edge.converters.quantize import PRESETS, quantize_dynamic_int8
    from probscale_edge.data import load_task
    from probscale_edge.modeling import EncoderClassifier, load_encoder, tokenize
    from probscale_edge.runtime.bundle import write_manifest

    out = Path(argv[0])
    n_train = int(argv[1]) if len(argv) > 1 else 1000
    torch.manual_seed(0)
    torch.set_num_threads(1)
    task = load_task("rotten_tomatoes", max_train=n_train)
    enc, tok, _ = load_encoder(str(fetch("all-MiniLM-L6-v2")))
    model = EncoderClassifier(enc, 2).eval()
    feats = []
    with torch.no_grad():
        for s in range(0, len(task.train.texts), 64):
            b = tokenize(tok, task.train.texts[s:s + 64], None, 128)
            h = model.encoder(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
            feats.append(model.pool(h, b["attention_mask"]).numpy())
    x = np.concatenate(feats).astype(np.float64)
    y = np.asarray(task.train.labels, dtype=np.float64)
    w = np.zeros(x.shape[1])
    b0 = 0.0
    for _ in range(2000):  # plain gradient descent on the logistic loss, L2 1e-3
        p = 1 / (1 + np.exp(-(x @ w + b0)))
        g = p - y
        w -= 2.0 * (x.T @ g / len(y) + 1e-3 * w)
        b0 -= 2.0 * g.mean()
    print("train accuracy", float(((x @ w + b0 > 0) == (y > 0.5)).mean()))
    with torch.no_grad():
        model.classifier.weight.copy_(torch.tensor(np.stack([-w / 2, w / 2]), dtype=torch.float32))
        model.classifier.bias.copy_(torch.tensor([-b0 / 2, b0 / 2], dtype=torch.float32))
    work = out.parent / f".{out.name}.work"
    shutil.rmtree(work, ignore_errors=True)
    stage = work / "bundle"
    stage.mkdir(parents=True)
    rep = export_onnx(model, tok, work / "fp32.onnx", ExportConfig())
    quantize_dynamic_int8(work / "fp32.onnx", stage / "model.onnx", PRESETS["arm64"])
    tok.save_pretrained(str(work / "tok"))
    src = fetch("all-MiniLM-L6-v2")
    for f in ("tokenizer.json", "vocab.txt"):
        shutil.copyfile(work / "tok" / f if (work / "tok" / f).exists() else src / f, stage / f)
    labels = task.label_names
    (stage / "labels.json").write_text(json.dumps(labels))
    write_manifest(stage, {"created_by": "benchmarks/arm64/make_minilm_head_bundle.py", "target": "arm64",
                "labels": labels,
                "model": {"file": "model.onnx", "format": "onnx", "precision": "int8", "inputs": rep["inputs"],
                          "outputs": ["logits"], "pooling": "mean"},
                "tokenizer": {"file": "tokenizer.json", "vocab_file": "vocab.txt", "max_length": 128,
                              "pad_id": int(tok.pad_token_id or 0)},
                "task": task.summary(),
                "quantization": {"precision": "int8", "target": "arm64", "params": dict(PRESETS["arm64"])}})
    if out.exists():
        shutil.rmtree(out)
    os.replace(stage, out)
    shutil.rmtree(work, ignore_errors=True)
    print("wrote", out)


if __name__ == "__main__":
    main(sys.argv[1:])
