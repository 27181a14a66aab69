"""The bundle: the files, then the manifest (written by the one writer, runtime.bundle.write_manifest),
then the latency lines measured on the staged bundle, then the rename into place."""

from __future__ import annotations

import json
import platform
import shutil
import time
from pathlib import Path

from probscale_edge.errors import ProbscaleError
from probscale_edge.faults import fault
from probscale_edge.pipeline.convert import Exported
from probscale_edge.pipeline.run import Run
from probscale_edge.pipeline.stages import Teacher
from probscale_edge.pipeline.student import Student
from probscale_edge.specs import Selection


def tool_versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("probscale-edge", "torch", "transformers", "onnx", "onnxruntime", "tokenizers", "scikit-learn", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def write_wordpiece_vocab(tokenizer_json: Path, out: Path) -> bool:
    """vocab.txt (one token per line, by id) for WordPiece tokenizers: what mobile tokenizers read."""
    tj = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    model = tj.get("model", {})
    if model.get("type") != "WordPiece":
        return False
    by_id = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise ProbscaleError("the tokenizer's WordPiece ids are not contiguous", "report this tokenizer")
    out.write_text("".join(t + "\n" for t, _ in by_id), encoding="utf-8")
    return True


def stage_files(run: Run, s: Student, work: Path) -> tuple[Path, str]:
    """Copy what ships into ``work/bundle``; returns the folder and the model file's name."""
    stage, target = work / "bundle", run.cfg.target
    stage.mkdir()
    model_file = "model.ort" if target == "android" else "model.onnx"
    if target != "android":
        shutil.copyfile(work / "model.onnx", stage / "model.onnx")
    if "mobile" in run.stages:
        shutil.copyfile(work / "mobile" / "model.ort", stage / "model.ort")
        shutil.copyfile(work / "mobile" / "required_operators.config", stage / "required_operators.config")
    if (run.stages.get("tflite") or {}).get("included"):
        shutil.copyfile(work / "model.tflite", stage / "model.tflite")
    s.tokenizer.save_pretrained(str(work / "tok"))
    shutil.copyfile(work / "tok" / "tokenizer.json", stage / "tokenizer.json")
    write_wordpiece_vocab(stage / "tokenizer.json", stage / "vocab.txt")
    (stage / "labels.json").write_text(json.dumps(run.task.label_names, indent=1))
    return stage, model_file


def manifest(run: Run, t: Teacher, sel: Selection, s: Student, x: Exported, q: dict, stage: Path,
             model_file: str, layer_budget: float) -> dict:
    """Everything a reader of the bundle needs: what it is, how it was made, how it was checked."""
    cfg, st = run.cfg, run.stages
    full = st["finetune"]["parameters"]
    int8_acc = q.get("accuracy", x.accuracy)
    tj = json.loads((stage / "tokenizer.json").read_text(encoding="utf-8"))
    return {
        "created_by": "probscale-edge",
        "created_unix": int(time.time()),
        "source_model": {"name": str(cfg.source.model), "path": str(run.src),
                         "model_type": t.model.encoder.config.model_type,
                         "stored_dtype": (run.lengths or {}).get("stored_dtype"), "trained_dtype": "float32",
                         "max_length": {k: v for k, v in (run.lengths or {}).items() if k != "stored_dtype"},
                         # ALBERT: one layer shared by all depths, copied per depth so depths can differ
                         "layers_untied": getattr(t.model.encoder.config, "probscale_shared_layout", None)
                         if getattr(t.model.encoder.config, "probscale_untied", False) else None,
                         **_original_shape(t.model)},
        "task": run.task.summary(),
        "target": cfg.target,
        "labels": run.task.label_names,
        "model": {"file": model_file, "format": "ort" if model_file.endswith(".ort") else "onnx",
                  "precision": q["precision"], "inputs": x.inputs, "outputs": ["logits"],
                  "pooling": s.model.pooling, "opset": st["export"]["opset"]},
        "tokenizer": {"file": "tokenizer.json", "vocab_file": "vocab.txt" if (stage / "vocab.txt").exists() else None,
                      "max_length": run.max_length, "pad_id": int(s.tokenizer.pad_token_id or 0),
                      "do_lower_case": bool((tj.get("normalizer") or {}).get("lowercase", False)),
                      "class": type(s.tokenizer).__name__},
        "parameters": {"original": full, "pruned": s.parameters, "ratio_total": full["total"] / s.parameters["total"],
                       "ratio_non_embedding": full["non_embedding"] / s.parameters["non_embedding"]},
        "vocabulary": st.get("vocab"),
        "subnetwork": {"spec": sel.spec.to_dict(), "kept_fraction_non_embedding": sel.kept_fraction,
                       "budget": layer_budget, "strategy": sel.strategy, "layer_shapes": st["prune"]["layer_shapes"]},
        "validation": {
            "eval_examples": len(run.task.eval),
            "accuracy": {"full_finetuned_torch_fp32": t.accuracy, "pruned_torch_fp32": s.accuracy,
                         "pruned_onnx_fp32": x.accuracy, "bundle": int8_acc},
            "retention": int8_acc / t.accuracy if t.accuracy else None,
            "reload_max_abs": st["prune"]["reload_max_abs"],
            "onnx_parity_max_abs": st["export"]["parity_max_abs"],
            "onnx_parity_pass": st["export"]["parity_pass"],
            "int8_max_abs_vs_fp32": q.get("max_abs_vs_fp32"),
        },
        "quantization": {k: v for k, v in q.items() if k != "excluded_nodes"} | {"excluded_nodes": q.get("excluded_nodes", [])},
        "mobile": st.get("mobile"),
        "tflite": st.get("tflite"),
        "sizes": {"full_fp32_weights_bytes": sum(p.numel() * p.element_size() for p in t.model.parameters()),
                  "pruned_onnx_fp32_bytes": x.fp32_path.stat().st_size,
                  "bundle_model_bytes": (stage / model_file).stat().st_size},
        "stages": _stage_reports(st),
        "recipe": run.recipe,
        "ladder": run.ladder,
        "build_config": cfg.to_dict(),
        "tool_versions": tool_versions(),
        "build_seconds": None,
    }


def _original_shape(model) -> dict:
    shapes = model.layer_shapes()
    return {"num_layers": len(shapes), "num_heads": shapes[0]["heads"], "ffn_size": shapes[0]["ffn"]}


def _stage_reports(st: dict) -> dict:
    out = {k: {kk: vv for kk, vv in v.items() if kk != "tasks"} if isinstance(v, dict) else v
           for k, v in st.items() if k not in ("quantize", "mobile", "vocab", "tflite")}
    if "probe" in st:
        out["probe"]["tasks"] = st["probe"]["tasks"]
    return out


def latency_lines(run: Run, t: Teacher, stage: Path, sel: Selection) -> dict:
    """Latency of the full model (PyTorch fp32) and of the staged bundle, batch 1, the same sentence; with a
    latency budget and a table of this machine, the bundle timed at the table's setting too."""
    from probscale_edge.runtime.bench import DEFAULT_TEXT, BenchConfig, bench_bundle

    cfg, runs = run.cfg, run.cfg.bundle.latency_runs
    run.log("measuring latency (batch 1) ...")
    full_ms = torch_latency_ms(t.model, t.tokenizer, DEFAULT_TEXT, runs=runs, max_length=run.max_length)
    b = bench_bundle(stage, BenchConfig(warmup_runs=5, num_runs=runs), public_key=False)  # not signed yet
    out = {"latency": {"text": DEFAULT_TEXT, "full_torch_fp32_p50_ms": full_ms, "bundle_p50_ms": b["latency"]["p50_ms"],
                       "threads": "default", "note": "measured on the build machine, batch 1"}}
    if sel.predicted_latency_ms is None:
        return out
    lt, goal = run.stages["latency_table"], cfg.select.max_latency_ms
    lb = {"max_ms": goal, "predicted_ms": sel.predicted_latency_ms, "sequence_length": lt["seq"],
          "threads": lt["threads"], "table_device": lt.get("device", {}), "calibration": run.stages.get("latency_calibration"),
          **({"criterion": "the p50 of every timing pass of the selected subnetwork within max_ms"}
             if run.stages.get("latency_calibration") else {})}
    if (lt.get("device") or {}).get("transport") == "local":  # the table is this machine's: check it here
        m = bench_bundle(stage, BenchConfig(warmup_runs=10, num_runs=max(50, runs), threads=lt["threads"],
                                            sequence_length=lt["seq"]), public_key=False)
        lb["measured_p50_ms"] = m["latency"]["p50_ms"]
        ok = lb["measured_p50_ms"] <= goal
        run.log(f"[{'PASS' if ok else 'OVER'}] latency budget {goal:g} ms: predicted {lb['predicted_ms']:.2f} ms, "
                f"measured p50 {lb['measured_p50_ms']:.2f} ms (sequence {lt['seq']}, {lt['threads']} thread(s))"
                + ("" if ok else "; this machine may be busy: bench the bundle again, or build with a lower "
                   "--max-latency-ms"))
    else:
        run.log(f"  latency budget {goal:g} ms: predicted {lb['predicted_ms']:.2f} ms on the table's device; check "
                "it there with `probscale-edge profile --ssh`")
    out["latency_budget"] = lb
    return out


def torch_latency_ms(model, tokenizer, text, runs=50, warmup=5, max_length: int = 128) -> float:
    import numpy as np
    import torch

    from probscale_edge.modeling import tokenize

    enc = tokenize(tokenizer, [text], None, max_length)
    args = (enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))
    ts = []
    with torch.no_grad():
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            model(*args)
            if i >= warmup:
                ts.append((time.perf_counter() - t0) * 1000)
    return float(np.median(ts))


def write_bundle(run: Run, t: Teacher, sel: Selection, s: Student, x: Exported, q: dict, work: Path,
                 layer_budget: float, staging) -> dict:
    from probscale_edge.runtime.bundle import write_manifest

    fault("bundle")
    stage, model_file = stage_files(run, s, work)
    m = write_manifest(stage, manifest(run, t, sel, s, x, q, stage, model_file, layer_budget))
    m.update(latency_lines(run, t, stage, sel))
    m["build_seconds"] = round(time.time() - run.t_start, 1)
    from probscale_edge.visual import write_report

    write_report(m, stage)  # report.html and pareto.png, listed and checksummed by the manifest below
    m = write_manifest(stage, m)
    staging.publish(stage)
    run.log(f"bundle written to {run.out}")
    m["bundle_path"] = str(run.out)  # not part of the on-disk manifest (a bundle can be moved)
    return m
