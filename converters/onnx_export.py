"""PyTorch classifier -> ONNX, with dynamic batch/sequence axes and a parity check against PyTorch."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from probscale_edge.config import ExportConfig
from probscale_edge.errors import ProbscaleError


__all__ = ["ExportConfig", "export_onnx", "onnx_logits", "parity"]


@contextlib.contextmanager
def eager_attention(model):
    """Switch the encoder to eager attention (plain matmul + softmax, which exports and converts exactly:
    SDPA blocks ONNX Runtime's attention fusions) and restore its previous setting afterwards."""
    enc = model.encoder
    prev = getattr(enc.config, "_attn_implementation", None)
    try:
        enc.set_attn_implementation("eager")
    except Exception:  # noqa: BLE001 - families without the switch export as they are
        pass
    model.eval()
    try:
        yield
    finally:
        if prev:
            try:
                enc.set_attn_implementation(prev)
            except Exception:  # noqa: BLE001
                pass


def positional(model, as_dict: bool = False):
    """``model`` as a module taking (input_ids, attention_mask, token_type_ids) -> logits (or {"logits": ...})."""
    import torch

    class Wrapped(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            logits = self.m(input_ids, attention_mask, token_type_ids)
            return {"logits": logits} if as_dict else logits

    return Wrapped(model).eval()


def export_onnx(model, tokenizer, out_path, cfg: ExportConfig | None = None, parity_texts=None, parity_pairs=None,
                log=None, max_length: int = 128) -> dict:
    """Export an EncoderClassifier; returns {"path", "bytes", "parity_max_abs", "parity_pass", ...}.
    ``max_length``: the longest input the parity check feeds (the graph itself takes any length)."""
    import torch

    from probscale_edge.modeling import tokenize

    cfg = cfg or ExportConfig()
    log = log or (lambda *_: None)
    out_path = Path(out_path)
    names = model.adapter.input_names()
    w = positional(model)
    sample = tokenize(tokenizer, ["probscale edge export sample", "a second, longer sample sentence for shapes"],
                      None, max_length)
    args = tuple(sample[n] if n in sample else torch.zeros_like(sample["input_ids"]) for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    t0 = time.time()
    tmp = out_path.with_suffix(".onnx.part")
    try:
        with torch.no_grad(), eager_attention(model):
            torch.onnx.export(w, args, str(tmp), input_names=names, output_names=["logits"], dynamic_axes=axes,
                              opset_version=cfg.opset, dynamo=cfg.dynamo, do_constant_folding=True)
        os.replace(tmp, out_path)
    except Exception as e:  # noqa: BLE001
        if tmp.exists():
            tmp.unlink()
        raise ProbscaleError(f"ONNX export failed ({type(e).__name__}: {str(e).splitlines()[0][:160]})",
                             "report the model family; try --opset 18") from e
    report = {"path": out_path.name, "bytes": out_path.stat().st_size, "opset": cfg.opset, "exporter":
              "dynamo" if cfg.dynamo else "torchscript", "export_seconds": round(time.time() - t0, 2),
              "inputs": names, "config": asdict(cfg), "max_length": max_length}
    if parity_texts:
        diff = parity(model, tokenizer, out_path, parity_texts[: cfg.parity_examples],
                      parity_pairs[: cfg.parity_examples] if parity_pairs else None, max_length)
        report["parity_max_abs"] = diff
        report["parity_tolerance"] = cfg.parity_tolerance
        report["parity_pass"] = bool(diff <= cfg.parity_tolerance)
        log(f"[{'PASS' if report['parity_pass'] else 'FAIL'}] ONNX fp32 vs PyTorch: max |Δlogit| = {diff:.2e} "
            f"(tolerance {cfg.parity_tolerance:.0e}, {min(len(parity_texts), cfg.parity_examples)} examples)")
    return report


def onnx_logits(path, tokenizer, texts, pairs=None, max_length=128, batch_size=32, threads=None, input_names=None):
    import onnxruntime as ort

    from probscale_edge.modeling import tokenize

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = input_names or [i.name for i in sess.get_inputs()]
    out = []
    for s in range(0, len(texts), batch_size):
        enc = tokenize(tokenizer, texts[s:s + batch_size], pairs[s:s + batch_size] if pairs else None, max_length)
        feed = {n: enc[n].numpy().astype(np.int64) if n in enc else np.zeros_like(enc["input_ids"].numpy())
                for n in names}
        out.append(sess.run(["logits"], feed)[0])
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def parity(model, tokenizer, onnx_path, texts, pairs=None, max_length=128) -> float:
    from probscale_edge.modeling import predict_logits

    ref = predict_logits(model, tokenizer, texts, pairs, batch_size=32, max_length=max_length)
    got = onnx_logits(onnx_path, tokenizer, texts, pairs, max_length)
    # predict_logits sorts by length (different padding per batch); padding must not change logits
    return float(np.abs(ref - got).max())
