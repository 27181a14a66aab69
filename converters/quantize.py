"""ONNX Runtime int8 quantization (dynamic, or static QDQ calibrated on task data) with target
presets and an accuracy gate with fallbacks.

Presets follow ONNX Runtime's advice (and Optimum's presets): u8 activations (dynamic), s8
weights, per-channel; ``reduce_range`` only for AVX2/AVX-512 without VNNI, whose u8*s8 kernels can
saturate. If the int8 model loses more than ``max_accuracy_drop`` points against fp32 on the eval
split, the gate tries the next setting of the chain and records every decision.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path


from probscale_edge.config import TARGETS, QuantizeConfig
from probscale_edge.errors import ProbscaleError

PRESETS = {
    # name: per_channel, reduce_range (weights s8, activations u8 dynamic)
    "arm64": {"per_channel": True, "reduce_range": False, "weight_type": "QInt8", "activation_type": "QUInt8"},
    "android": {"per_channel": True, "reduce_range": False, "weight_type": "QInt8", "activation_type": "QUInt8"},
    "x86_64": {"per_channel": True, "reduce_range": False, "weight_type": "QInt8", "activation_type": "QUInt8"},
    "avx512_vnni": {"per_channel": True, "reduce_range": False, "weight_type": "QInt8", "activation_type": "QUInt8"},
    "avx512": {"per_channel": True, "reduce_range": True, "weight_type": "QInt8", "activation_type": "QUInt8"},
    "avx2": {"per_channel": True, "reduce_range": True, "weight_type": "QInt8", "activation_type": "QUInt8"},
}
__all__ = ["PRESETS", "QuantizeConfig", "check_target", "quantize_dynamic_int8", "quantize_static_int8",
           "quantize_with_gate"]


def check_target(target: str) -> None:
    if target not in TARGETS:
        raise ProbscaleError(f"unknown target {target!r}", f"use --target {'|'.join(TARGETS)}")


def _matmul_nodes(path) -> list[str]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return [n.name for n in m.graph.node if n.op_type in ("MatMul", "Gemm")]


def quantize_dynamic_int8(src, dst, preset: dict, exclude_nodes=()) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    t0 = time.time()
    tmp = Path(str(dst) + ".part")
    quantize_dynamic(str(src), str(tmp), weight_type=getattr(QuantType, preset["weight_type"]),
                     per_channel=preset["per_channel"], reduce_range=preset["reduce_range"],
                     nodes_to_exclude=list(exclude_nodes), op_types_to_quantize=["MatMul", "Gemm", "Gather"],
                     extra_options={"MatMulConstBOnly": True})
    os.replace(tmp, dst)
    return {"seconds": round(time.time() - t0, 2), "bytes": Path(dst).stat().st_size}


def quantize_static_int8(src, dst, preset: dict, calibration_feeds, exclude_nodes=(), method: str = "MinMax") -> dict:
    """Static QDQ int8: weights s8 (per-channel per the preset), activations u8 with ranges
    calibrated on ``calibration_feeds`` (a list of input dicts, e.g. tokenized training text)."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Feeds(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calibration_feeds)

        def get_next(self):
            return next(self.it, None)

    t0 = time.time()
    tmp = Path(str(dst) + ".part")
    quantize_static(str(src), str(tmp), Feeds(), quant_format=QuantFormat.QDQ, per_channel=preset["per_channel"],
                    reduce_range=preset["reduce_range"], activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
                    nodes_to_exclude=list(exclude_nodes), calibrate_method=getattr(CalibrationMethod, method),
                    extra_options={"MatMulConstBOnly": True, "WeightSymmetric": True, "ActivationSymmetric": False})
    os.replace(tmp, dst)
    return {"seconds": round(time.time() - t0, 2), "bytes": Path(dst).stat().st_size, "calibration": method,
            "calibration_examples": len(calibration_feeds)}


def fallback_chain(fp32_path, preset: dict, user_exclude=(), mode: str = "dynamic"):
    """Settings tried in order until one passes the accuracy gate."""
    nodes = _matmul_nodes(fp32_path)
    head = [n for n in nodes if "classifier" in n or "pooler" in n]
    last = nodes[-max(1, min(6, len(nodes) // 4)):]
    chain = []
    if mode == "static":  # static first, sensitive nodes (head, then last layer) kept in fp32 next,
        # then the dynamic chain: static ranges are the usual suspect when int8 loses accuracy
        chain += [("static QDQ", {**preset, "static": True}, list(user_exclude)),
                  ("static QDQ, classifier in fp32", {**preset, "static": True}, sorted(set(user_exclude) | set(head))),
                  ("static QDQ, last layer in fp32", {**preset, "static": True},
                   sorted(set(user_exclude) | set(head) | set(last)))]
    chain.append(("preset", dict(preset), list(user_exclude)))
    if not preset["per_channel"]:
        chain.append(("per-channel weights", {**preset, "per_channel": True}, list(user_exclude)))
        preset = {**preset, "per_channel": True}
    chain.append(("preset, classifier in fp32", dict(preset), sorted(set(user_exclude) | set(head))))
    chain.append(("preset, last layer in fp32", dict(preset), sorted(set(user_exclude) | set(head) | set(last))))
    if not preset["reduce_range"]:
        chain.append(("reduce_range, last layer in fp32", {**preset, "reduce_range": True},
                      sorted(set(user_exclude) | set(head) | set(last))))
    return chain


def quantize_with_gate(fp32_path, out_path, cfg: QuantizeConfig, evaluate, fp32_accuracy: float, log=None,
                       calibration=None, target: str = "arm64") -> dict:
    """Quantize and gate on accuracy. ``evaluate(path) -> accuracy``. Returns the decision record.
    ``calibration() -> list of input dicts`` is needed for ``cfg.quant_mode == "static"``.

    The result at ``out_path`` is the first setting whose accuracy drop is within the gate, or the
    fp32 model itself when none passes (``precision`` is then ``fp32`` in the record).
    """
    log = log or (lambda *_: None)
    check_target(target)
    preset = dict(PRESETS[target])
    if cfg.per_channel is not None:
        preset["per_channel"] = cfg.per_channel
    if cfg.reduce_range is not None:
        preset["reduce_range"] = cfg.reduce_range
    record = {"target": target, "preset": preset, "max_accuracy_drop": cfg.max_accuracy_drop,
              "fp32_accuracy": fp32_accuracy, "attempts": []}
    if cfg.precision == "fp32":
        import shutil

        shutil.copyfile(fp32_path, out_path)
        record.update(precision="fp32", chosen="fp32 (requested)")
        return record
    if cfg.quant_mode == "static" and calibration is None:
        raise ProbscaleError("static quantization needs calibration data", "pass task data, or use --quant-mode dynamic")
    record["mode"] = cfg.quant_mode
    feeds = None
    for name, p, excl in fallback_chain(fp32_path, preset, cfg.exclude_nodes, cfg.quant_mode):
        if p.get("static"):
            feeds = feeds if feeds is not None else calibration()
            info = quantize_static_int8(fp32_path, out_path, p, feeds, excl)
        else:
            info = quantize_dynamic_int8(fp32_path, out_path, p, excl)
        acc = evaluate(out_path)
        drop = (fp32_accuracy - acc) * 100
        ok = drop <= cfg.max_accuracy_drop
        record["attempts"].append({"setting": name, "params": p, "excluded_nodes": len(excl), "accuracy": acc,
                                   "drop_points": round(drop, 3), "pass": ok, **info})
        log(f"[{'PASS' if ok else 'FAIL'}] int8 ({name}): accuracy {acc:.4f} vs fp32 {fp32_accuracy:.4f} "
            f"(drop {drop:+.2f} points, gate {cfg.max_accuracy_drop:g})")
        if ok:
            record.update(precision="int8", chosen=name, accuracy=acc, params=p, excluded_nodes=excl)
            return record
    import shutil

    shutil.copyfile(fp32_path, out_path)
    log("[FALLBACK] no int8 setting kept accuracy within the gate: the bundle ships the fp32 model")
    record.update(precision="fp32", chosen="fp32 (fallback: every int8 setting failed the gate)",
                  accuracy=fp32_accuracy)
    return record


def describe(cfg: QuantizeConfig) -> dict:
    return asdict(cfg)
