"""Stages 5 and 6 and the formats: ONNX export with parity, int8 behind the accuracy gate, the ORT mobile
format for ARM targets, and LiteRT (TFLite) alongside. Every accuracy here is measured through the
runtime's own code path (tokenizer, batching), so it is what `probscale-edge bench` will report."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from probscale_edge.errors import ProbscaleError
from probscale_edge.faults import fault
from probscale_edge.pipeline.run import Run
from probscale_edge.pipeline.stages import accuracy
from probscale_edge.pipeline.student import Student


@dataclass
class Exported:
    fp32_path: Path  # the fp32 ONNX model
    inputs: list  # its input names
    accuracy: float  # eval accuracy of the fp32 ONNX model
    eval_logits: object  # its eval logits (the int8 model is compared against them)
    runtime_tokenizer: Path  # the student's tokenizer saved for the runtime (tokenizer.json inside)


def predictor(run: Run, s: Student, model_path, exp_tokenizer: Path):
    from probscale_edge.runtime.predictor import Predictor

    return Predictor.from_files(model_path, exp_tokenizer / "tokenizer.json", run.task.label_names, run.max_length,
                                int(s.tokenizer.pad_token_id or 0))


def runtime_accuracy(run: Run, s: Student, model_path, exp_tokenizer: Path) -> float:
    e = run.task.eval
    return predictor(run, s, model_path, exp_tokenizer).accuracy(e.texts, e.labels, e.pairs)


def export(run: Run, s: Student, work: Path) -> Exported:
    from probscale_edge.converters.onnx_export import export_onnx, onnx_logits

    fault("export")
    t0, e = time.time(), run.task.eval
    fp32 = work / "model_fp32.onnx"
    rep = export_onnx(s.model, s.tokenizer, fp32, run.cfg.export, parity_texts=e.texts, parity_pairs=e.pairs,
                      log=run.log, max_length=run.max_length)
    if not rep.get("parity_pass", True):
        raise ProbscaleError(f"ONNX export does not match PyTorch (max |Δlogit| {rep['parity_max_abs']:.2e})",
                             "try --opset 18, or report the model family")
    logits = onnx_logits(fp32, s.tokenizer, e.texts, e.pairs, run.max_length, input_names=rep["inputs"])
    acc = accuracy(logits, e.labels)
    run.stages["export"] = {**rep, "accuracy": acc, "seconds": round(time.time() - t0, 1)}
    run.log(f"ONNX fp32: eval accuracy {acc:.4f}")
    rt_tok = work / "runtime_tokenizer"
    s.tokenizer.save_pretrained(str(rt_tok))
    return Exported(fp32, rep["inputs"], acc, logits, rt_tok)


def quantize(run: Run, s: Student, x: Exported, work: Path) -> dict:
    """int8 with the target's preset, kept only within the accuracy gate; returns the gate's record."""
    import numpy as np

    from probscale_edge.converters.onnx_export import onnx_logits
    from probscale_edge.converters.quantize import quantize_with_gate

    fault("quantize")
    t0, cfg, model_path = time.time(), run.cfg, work / "model.onnx"

    def calibration():  # static QDQ: activation ranges from training text, encoded by the runtime's tokenizer
        from probscale_edge.data import stratified_sample

        p, tr = predictor(run, s, x.fp32_path, x.runtime_tokenizer), run.task.train
        idx = stratified_sample(tr.labels, min(cfg.quantize.calibration_examples, len(tr)), seed=cfg.seed)
        feeds = [p.encode([tr.texts[i]], [tr.pairs[i]] if tr.pairs else None) for i in idx]
        return [{k: v for k, v in f.items() if k in x.inputs} for f in feeds]

    q = quantize_with_gate(x.fp32_path, model_path, cfg.quantize,
                           lambda path: runtime_accuracy(run, s, path, x.runtime_tokenizer), x.accuracy, log=run.log,
                           calibration=calibration, target=cfg.target)
    e = run.task.eval
    q_logits = onnx_logits(model_path, s.tokenizer, e.texts[:256], e.pairs[:256] if e.pairs else None, run.max_length,
                           input_names=x.inputs)
    q["max_abs_vs_fp32"] = float(np.abs(q_logits - x.eval_logits[:256]).max())
    q["seconds"] = round(time.time() - t0, 1)
    run.stages["quantize"] = q
    return q


def mobile(run: Run, s: Student, x: Exported, q: dict, work: Path) -> None:
    """The ORT mobile format (.ort + required operators) for ARM / Android targets."""
    if run.cfg.target not in ("arm64", "android"):
        return
    from probscale_edge.converters.mobile import to_ort

    t0 = time.time()
    mob = to_ort(work / "model.onnx", work / "mobile", target_platform="arm")
    acc = runtime_accuracy(run, s, mob["ort"], x.runtime_tokenizer)
    run.stages["mobile"] = {"file": "model.ort", "required_operators": "required_operators.config", "accuracy": acc,
                            "bytes": mob["ort"].stat().st_size,
                            "matches_onnx": abs(acc - q.get("accuracy", x.accuracy)) < 1e-9,
                            "seconds": round(time.time() - t0, 1)}
    run.log(f"[{'PASS' if run.stages['mobile']['matches_onnx'] else 'FAIL'}] ORT mobile format (.ort): accuracy {acc:.4f}")


def tflite(run: Run, s: Student, x: Exported, work: Path) -> None:
    """With ``--tflite``: convert the student to LiteRT int8 (dynamic_wi8_afp32) in the converter's own
    interpreter, then measure it with the runtime's LiteRT backend; kept only within the accuracy gate."""
    if not run.cfg.bundle.tflite:
        return
    from probscale_edge.converters.tflite_env import converter_python

    t0 = time.time()
    rep = _convert_tflite(run, s, work, converter_python())
    if "reason" in rep:
        run.stages["tflite"] = {**rep, "seconds": round(time.time() - t0, 1)}
        return
    out = work / "model.tflite"
    acc = runtime_accuracy(run, s, out, x.runtime_tokenizer)
    drop = 100 * (x.accuracy - acc)
    ok = drop <= run.cfg.quantize.max_accuracy_drop and rep.get("fp32", {}).get("parity_pass", False)
    run.log(f"[{'PASS' if ok else 'FAIL'}] TFLite int8: accuracy {acc:.4f} vs ONNX fp32 {x.accuracy:.4f} "
            f"(drop {drop:+.2f} points), fp32 parity {rep['fp32']['parity_max_abs']:.1e}, {out.stat().st_size:,} bytes")
    run.stages["tflite"] = {
        "included": bool(ok), "file": "model.tflite", "precision": "int8", "recipe": "dynamic_wi8_afp32",
        "sequence_length": run.max_length, "accuracy": acc, "drop_points": drop, "bytes": out.stat().st_size,
        "fp32_parity_max_abs": rep["fp32"]["parity_max_abs"], "int8_max_abs_vs_torch": rep["int8"]["max_abs_vs_torch"],
        "argmax_agreement_vs_torch": rep["int8"]["argmax_agreement_vs_torch"], "converter": rep.get("tool_versions"),
        "seconds": round(time.time() - t0, 1),
        **({} if ok else {"reason": "outside the accuracy gate (--max-accuracy-drop) or fp32 parity failed"})}


def _convert_tflite(run: Run, s: Student, work: Path, py: str) -> dict:
    """Run the converter (``python -m probscale_edge.converters.tflite``); its JSON report, or a failure record."""
    from probscale_edge.modeling import save_classifier

    src = work / "tflite_src"
    save_classifier(s.model, s.tokenizer, src, run.task.label_names)
    texts = work / "tflite_parity.txt"
    texts.write_text("\n".join(t.replace("\n", " ") for t in run.task.eval.texts[:256] if t.strip()), encoding="utf-8")
    cmd = [py, "-m", "probscale_edge.converters.tflite", str(src), str(work / "model.tflite"), "--quantize",
           "dynamic_wi8_afp32", "--seq-len", str(run.max_length), "--parity-texts", str(texts), "--json",
           str(work / "tflite.json")]
    run.log("converting to TFLite (litert-torch, int8 dynamic_wi8_afp32) ...")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    # exit 1: converted, but the converter's own int8 check (argmax agreement on the parity texts) failed;
    # the build's accuracy gate decides instead, on the whole eval split
    if proc.returncode not in (0, 1) or not (work / "model.tflite").exists() or not (work / "tflite.json").exists():
        lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
        errs = [ln for ln in lines if ln.startswith("error:") or "Error" in ln or "[FAIL]" in ln] or lines[-1:] or ["no output"]
        run.log(f"[FAIL] TFLite conversion (exit {proc.returncode}): {errs[-1][:300]}")
        return {"included": False, "reason": f"conversion failed: {errs[-1][:500]}"}
    return json.loads((work / "tflite.json").read_text())
