"""The text2text build (``--kind text2text``): a T5 encoder-decoder, source text -> target text.

    prepare -> teacher (fine-tune, cached) -> probe (encoder + decoder) -> select (blocks of both stacks under the
    budget, then self/cross heads and FFN neurons) -> student (surgery, reload check, token-level distillation
    with early stopping on a dev split scored by the task metric) -> export (encoder, decoder, decoder-with-past
    ONNX; greedy parity) -> quantize (int8 behind the task-metric gate) -> mobile (.ort) -> bundle

Every metric here after the export is measured through the runtime's own generator (runtime/generate.py), so it
is what `probscale-edge bench` reports. The budget is the fraction of the blocks' parameters kept (the
non-embedding parameters but the two final layer norms); ``--max-accuracy-drop`` is in points of the task metric.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from probscale_edge.errors import ProbscaleError
from probscale_edge.faults import fault
from probscale_edge.pipeline.run import Run, check_cache, check_inputs, default_output

DEFAULT_BUDGET = 1 / 3
GRAPHS = ("encoder", "decoder", "decoder_with_past")


@dataclass
class T5Model:
    """A teacher or student: the model, its tokenizer, its eval metric (PyTorch, greedy) and what made it."""

    model: object
    tokenizer: object
    metric: float
    report: dict


@dataclass
class T5Export:
    folder: Path  # fp32 graphs + seq2seq.json
    tokenizer_json: Path
    metric: float  # the fp32 graphs' eval metric through the runtime


def build_text2text(cfg, log) -> dict:
    """The whole text2text build; returns the manifest (see the module docstring for the stages)."""
    from probscale_edge.pipeline.store import Staging

    run = prepare(cfg, log)
    with Staging(run.out, cfg.bundle.force) as staging:
        teacher = teacher_stage(run)
        spec = select_stage(run, teacher)
        student = student_stage(run, teacher, spec, staging.work)
        exported = export_stage(run, student, staging.work)
        gate = quantize_stage(run, exported, staging.work)
        mobile_stage(run, exported, gate, staging.work)
        return bundle_stage(run, teacher, student, spec, exported, gate, staging)


# ---------------------------------------------------------------------------------------------- prepare
def budget_of(cfg) -> float:
    """The fraction of block parameters kept: --budget, else 1 / --compression, else a third."""
    s = cfg.select
    if getattr(s, "budget", None) is not None:
        return float(s.budget)
    if s.compression is not None:
        return 1.0 / float(s.compression)
    return DEFAULT_BUDGET


def _check_options(cfg) -> None:
    s, r, q = cfg.select, cfg.recover, cfg.quantize
    refuse = [("--spec", s.spec is not None, "cut a T5 to a spec with `probscale-edge prune-seq2seq --spec`"),
              ("--max-latency-ms", s.max_latency_ms is not None, "pass --budget (a fraction of the block parameters)"),
              ("--recover-mode head", r.recover_mode == "head", "use --recover-mode distill, finetune or none"),
              ("--quant-mode static", q.quant_mode == "static", "use --quant-mode dynamic, or --precision fp32"),
              ("--tflite", cfg.bundle.tflite, "leave out --tflite (ONNX Runtime runs the three graphs)"),
              ("--distill-hidden", (r.distill_hidden or 0) > 0, "leave it out (token-level logits distillation only)"),
              ("--augment", (r.augment or 0) > 0, "leave it out"),
              ("--trim-vocab", bool(cfg.prune.trim_vocab), "leave it out (the vocabulary is kept whole)"),
              ("--embedding-rank", bool(cfg.prune.embedding_rank), "leave it out (the embedding is kept whole)")]
    for flag, bad, fix in refuse:
        if bad:
            raise ProbscaleError(f"{flag} is not supported for --kind text2text", fix)


def _check_t5_folder(src) -> None:
    if not isinstance(src, Path):
        raise ProbscaleError(f"--kind text2text needs a local T5 folder, got {src!r}",
                             "pass --model FOLDER holding a T5 (config.json with model_type t5)")
    c = json.loads((src / "config.json").read_text(encoding="utf-8"))
    if c.get("model_type") != "t5" or not c.get("is_encoder_decoder", True):
        raise ProbscaleError(f"--kind text2text needs a T5 encoder-decoder, but {src} holds model_type "
                             f"{c.get('model_type')!r}", "pass a T5 / Flan-T5 folder, or build a classifier without "
                             "--kind text2text")


def prepare(cfg, log) -> Run:
    """Cheap checks first: options, output, cache, the model folder (a T5), the data (pairs or a framed task)."""
    from probscale_edge.text2text import load_pairs_task

    _check_options(cfg)
    out = Path(cfg.bundle.output) if cfg.bundle.output else default_output(cfg)
    check_cache()
    src = check_inputs(cfg, out, log)
    _check_t5_folder(src)
    run = Run(cfg, log, out, src=src)
    d = cfg.data
    for i, ts in enumerate(d.tasks):
        t = load_pairs_task(ts.spec, ts.eval, d.text_column, d.target_column, d.max_train,
                            d.max_eval if i == 0 else None, log)
        t.weight = ts.weight
        run.tasks.append(t)
    run.lengths = {"cap": cfg.source.max_length, "used": cfg.source.max_length}
    run.dev = _hold_out_dev(run)
    t = run.task
    log(f"task {t.name} (text2text, metric {t.metric}): {len(t.train)} train / {len(run.dev) if run.dev else 0} dev "
        f"(held out of the teacher's and the student's training, for early stopping) / {len(t.eval)} eval pairs")
    return run


# ---------------------------------------------------------------------------------------------- teacher
def _train_cfg(run: Run, student: bool):
    from probscale_edge.text2text import Seq2SeqTrain

    f, r = run.cfg.finetune, run.cfg.recover
    epochs = (r.student_epochs or f.epochs) if student else f.epochs
    distil = student and r.recover_mode == "distill"
    return Seq2SeqTrain(epochs=epochs, lr=r.student_lr if student else f.lr, batch_size=f.batch_size,
                        warmup=f.warmup, weight_decay=f.weight_decay, max_length=run.max_length,
                        max_target=run.stages["lengths"]["target_tokens"], seed=run.cfg.seed,
                        temperature=r.temperature, alpha=r.alpha if distil else 1.0, eval_every=r.eval_every,
                        patience=r.patience)


def _load_source(run: Run):
    from probscale_edge.seq2seq import _load_t5
    from probscale_edge.text2text import target_length

    model, tok = _load_t5(Path(run.src))
    if tok is None:
        raise ProbscaleError(f"{run.src} has no tokenizer", "save the tokenizer into the model folder "
                             "(tokenizer.json and tokenizer_config.json)")
    n = target_length(tok, run.task.train.targets)
    run.stages["lengths"] = {"source_tokens_cap": run.max_length, "target_tokens": n, "max_new_tokens": n + 2,
                             "clean_up": bool(getattr(tok, "clean_up_tokenization_spaces", False))}
    return model, tok


def teacher_stage(run: Run) -> T5Model:
    """The source T5 fine-tuned on the task (cached by content: model, data, recipe, length, seed)."""
    from transformers import AutoTokenizer

    from probscale_edge.pipeline.store import content_key, model_fingerprint
    from probscale_edge.seq2seq import load_seq2seq, param_counts, save_seq2seq, stack_block_costs, check_block_budget
    from probscale_edge.text2text import evaluate, train_seq2seq

    fault("teacher")
    cfg, t0 = run.cfg, time.time()
    model, tok = _load_source(run)
    check_block_budget(stack_block_costs(model), budget_of(cfg))  # before the fine-tune, not after it
    key = content_key("text2text-teacher-v1", model_fingerprint(run.src), run.task.fingerprint(),
                      cfg.finetune.to_dict(), run.max_length, cfg.seed)
    store = run.store("teachers")
    d = store.get_dir(key) if cfg.use_cache else None
    if d is not None:
        model, tok = load_seq2seq(d / "model"), AutoTokenizer.from_pretrained(str(d / "model"))
        rec = json.loads((d / "teacher.json").read_text())
        run.log(f"teacher: cached fine-tune {key} ({run.task.metric} {rec['metric']:.4f})")
    else:
        run.log(f"teacher: fine-tuning {Path(str(run.src)).name} on {run.task.name} ({cfg.finetune.epochs:g} epochs)")
        rec = {"train": train_seq2seq(model, tok, run.task.train, _train_cfg(run, False), log=run.log)}
        rec["metric"] = evaluate(model, tok, run.task.eval, run.task.metric, run.stages["lengths"]["max_new_tokens"],
                                 run.max_length)
        if cfg.use_cache:
            store.put_dir(key, lambda f: (save_seq2seq(model, tok, f / "model"),
                                          (f / "teacher.json").write_text(json.dumps(rec))))
    run.log(f"teacher: eval {run.task.metric} {rec['metric']:.4f}")
    run.stages["finetune"] = {"key": key, "parameters": param_counts(model), "metric": rec["metric"],
                              "train": rec.get("train"), "seconds": round(time.time() - t0, 1)}
    return T5Model(model, tok, rec["metric"], rec)


# ---------------------------------------------------------------------------------------------- probe, select
def probe_stage(run: Run, teacher: T5Model) -> dict:
    from probscale_edge.text2text import probe_curves, weighted_curves

    t0, p = time.time(), run.cfg.probe
    curves = [probe_curves(teacher.model, teacher.tokenizer, t.train, p.probe_examples, p.probe_folds, run.cfg.seed,
                           run.max_length) for t in run.tasks]
    w = weighted_curves(curves, [t.weight for t in run.tasks])
    run.stages["probe"] = {"weighted": w, "tasks": {t.name: c for t, c in zip(run.tasks, curves)},
                           "target": "the target's first token", "seconds": round(time.time() - t0, 1)}
    run.log("probe (first target token): encoder " + " ".join(f"{a:.3f}" for a in w["encoder"])
            + " | decoder " + " ".join(f"{a:.3f}" for a in w["decoder"]))
    return w


def select_stage(run: Run, teacher: T5Model):
    """Blocks of both stacks under the layer budget (exact search), then heads and neurons to the budget."""
    from probscale_edge.seq2seq import (apply_seq2seq_spec, block_params, choose_blocks, compose_spec, select_seq2seq,
                                        stack_block_costs, unit_scores)

    fault("select")
    cfg, s = run.cfg, run.cfg.select
    b = budget_of(cfg)
    lb = b if s.granularity == "layer" else (s.layer_budget or min(1.0, s.layer_factor * b))
    curves = probe_stage(run, teacher) if s.strategy in ("probscale", "top") else None
    costs = stack_block_costs(teacher.model)
    enc, dec = choose_blocks(costs, curves, max(lb, b), s.strategy, s.max_enumerate, cfg.seed)
    spec = compose_spec(enc, dec)
    total = sum(costs["encoder"]) + sum(costs["decoder"])
    kept = sum(costs["encoder"][i] for i in enc) + sum(costs["decoder"][i] for i in dec)
    if s.granularity == "unit" and kept > b * total * (1 + 1e-9):
        m1 = apply_seq2seq_spec(teacher.model, spec)
        tr = run.task.train
        scores = unit_scores(m1, teacher.tokenizer, tr.sources, tr.targets, max_length=run.max_length, seed=cfg.seed)
        spec = compose_spec(enc, dec, select_seq2seq(m1, scores, b * total / block_params(m1)))
    run.stages["select"] = {"budget": b, "layer_budget": lb, "strategy": s.strategy, "granularity": s.granularity,
                            "encoder_blocks": list(enc), "decoder_blocks": list(dec), "block_costs": costs,
                            "spec": spec.to_dict()}
    run.log(f"select ({s.strategy}, budget {b:.3f}, blocks under {lb:.3f}): encoder blocks {list(enc)}, "
            f"decoder blocks {list(dec)}")
    return spec


def _hold_out_dev(run: Run):
    """``--dev-fraction`` of the training pairs (seeded) moved into a dev split that neither the teacher nor the
    student trains on: the student's early stopping scores it (a teacher that had seen it would make the cut
    model's first scores look best). None when the fraction is 0 or there are fewer than 20 training pairs."""
    tr, frac = run.task.train, run.cfg.recover.dev_fraction
    if not frac or len(tr) < 20:
        return None
    idx = list(range(len(tr)))
    random.Random(run.cfg.seed).shuffle(idx)
    n = max(10, int(round(frac * len(tr))))
    run.task.train = tr.subset(sorted(idx[n:]))
    return tr.subset(sorted(idx[:n]))


# ---------------------------------------------------------------------------------------------- student
def _dev_split(run: Run):
    return run.task.train, run.dev


def student_stage(run: Run, teacher: T5Model, spec, work: Path) -> T5Model:
    """Cut the teacher to ``spec``, check that the cut folder reloads to the same outputs, then recover."""
    from probscale_edge.seq2seq import _check_reload, apply_seq2seq_spec, layer_shapes, param_counts, save_seq2seq
    from probscale_edge.text2text import evaluate, train_seq2seq

    fault("prune")
    t0, r = time.time(), run.cfg.recover
    model = apply_seq2seq_spec(teacher.model, spec)
    rep = {"shapes": layer_shapes(model)}
    save_seq2seq(model, teacher.tokenizer, work / "student_cut")
    _check_reload(model, work / "student_cut", rep, run.log)
    run.stages["prune"] = {"reload_max_abs": rep["reload_max_abs"], "layer_shapes": rep["shapes"],
                           "parameters": param_counts(model)}
    fault("recover")
    train_rep = None
    if r.recover_mode != "none":
        train, dev = _dev_split(run)
        run.log(f"recover ({r.recover_mode}): {len(train)} train / {len(dev) if dev else 0} dev pairs")
        train_rep = train_seq2seq(model, teacher.tokenizer, train, _train_cfg(run, True),
                                  teacher=teacher.model if r.recover_mode == "distill" else None, dev=dev,
                                  metric=run.task.metric, log=run.log)
    metric = evaluate(model, teacher.tokenizer, run.task.eval, run.task.metric,
                      run.stages["lengths"]["max_new_tokens"], run.max_length)
    run.log(f"student: eval {run.task.metric} {metric:.4f} (teacher {teacher.metric:.4f})")
    run.stages["recover"] = {"mode": r.recover_mode, "train": train_rep, "metric": metric,
                             "seconds": round(time.time() - t0, 1)}
    return T5Model(model, teacher.tokenizer, metric, {"parameters": param_counts(model)})


# ---------------------------------------------------------------------------------------------- export, gate
def runtime_metric(run: Run, folder: Path, tokenizer_json: Path, sources=None, files: dict | None = None):
    """The task metric of the graphs in ``folder`` through the runtime's generator (and its outputs)."""
    from probscale_edge.runtime.generate import Generator
    from probscale_edge.runtime.predictor import _load_tokenizer
    from probscale_edge.text2text import score

    spec = json.loads((folder / "seq2seq.json").read_text())
    files = files or {g: folder / spec["files"][g] for g in GRAPHS}
    g = Generator(files, spec, _load_tokenizer(tokenizer_json, run.max_length), run.max_length,
                  max_new_tokens=run.stages["lengths"]["max_new_tokens"], clean_up_spaces=run.stages["lengths"]["clean_up"])
    e = run.task.eval
    outs = g.generate(list(sources if sources is not None else e.sources))
    return (score(run.task.metric, outs, e.targets) if sources is None else None), outs


def _parity(run: Run, s: T5Model, folder: Path) -> dict:
    """Greedy tokens of the ONNX graphs vs transformers' generate on up to ``parity_examples`` eval sources."""
    import numpy as np

    from probscale_edge.converters.seq2seq import OrtSeq2Seq, seq2seq_parity

    ort, tok, n_new = OrtSeq2Seq(folder), s.tokenizer, run.stages["lengths"]["max_new_tokens"]
    src = run.task.eval.sources[:run.cfg.export.parity_examples]
    equal, first, worst = 0, 0.0, 0.0
    for b in range(0, len(src), 16):
        enc = tok(src[b:b + 16], truncation=True, max_length=run.max_length, padding=True, return_tensors="np")
        r = seq2seq_parity(s.model, folder, enc["input_ids"], enc["attention_mask"].astype(np.int64), n_new,
                           eos_token_id=s.model.config.eos_token_id, ort_model=ort)
        equal += sum(a == b_ for a, b_ in zip(r["ort_tokens"], r["torch_tokens"]))
        first = max(first, r["first_step_max_abs_logit"])
        worst = max(worst, r["all_steps_max_abs_logit"] if r["all_steps_max_abs_logit"] is not None else float("inf"))
    return {"examples": len(src), "greedy_equal": int(equal), "first_step_max_abs_logit": first,
            "all_steps_max_abs_logit": worst}


def export_stage(run: Run, s: T5Model, work: Path) -> T5Export:
    from probscale_edge.converters.seq2seq import export_t5_seq2seq

    fault("export")
    t0, folder = time.time(), work / "fp32"
    rep = export_t5_seq2seq(s.model, folder, opset=run.cfg.export.opset)
    par = _parity(run, s, folder)
    ok = par["greedy_equal"] == par["examples"]
    run.log(f"[{'PASS' if ok else 'FAIL'}] ONNX greedy generation (key/value cache): {par['greedy_equal']}/"
            f"{par['examples']} eval inputs give PyTorch's tokens, first-step max |Δlogit| {par['first_step_max_abs_logit']:.1e}")
    if not ok:
        raise ProbscaleError(f"the ONNX export generates other tokens than PyTorch on {par['examples'] - par['greedy_equal']}"
                             f" of {par['examples']} eval inputs", "try --opset 18, or report the model")
    s.tokenizer.save_pretrained(str(work / "tok"))
    tj = work / "tok" / "tokenizer.json"
    if not tj.exists():
        raise ProbscaleError("the tokenizer has no fast (tokenizer.json) form, which the runtime reads",
                             "save the model with a fast tokenizer (T5TokenizerFast)")
    metric, _ = runtime_metric(run, folder, tj)
    run.stages["export"] = {**rep, "parity": par, "metric": metric, "seconds": round(time.time() - t0, 1)}
    run.log(f"ONNX fp32 (runtime generator): eval {run.task.metric} {metric:.4f}")
    return T5Export(folder, tj, metric)


def _lm_head_nodes(path: Path) -> list[str]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return [n.name for n in m.graph.node if n.op_type in ("MatMul", "Gemm") and "lm_head" in n.name]


def _int8_attempts(folder: Path):
    """Settings the gate tries in order: every graph int8; the LM head in fp32; the encoder alone int8."""
    excl = {g: _lm_head_nodes(folder / f"{g}.onnx") for g in ("decoder", "decoder_with_past")}
    return [("preset, all three graphs", GRAPHS, {}),
            ("preset, LM head in fp32", GRAPHS, excl),
            ("preset, encoder only", ("encoder",), {})]


def quantize_stage(run: Run, x: T5Export, work: Path) -> dict:
    """int8 (dynamic, the target's preset) for the graphs, kept only if the task metric drops at most
    ``--max-accuracy-drop`` points; else the next setting, else fp32. Returns the gate's record (folder in it)."""
    from probscale_edge.converters.quantize import PRESETS, quantize_dynamic_int8

    fault("quantize")
    cfg, t0 = run.cfg.quantize, time.time()
    preset = dict(PRESETS[run.cfg.target])
    for k in ("per_channel", "reduce_range"):
        if getattr(cfg, k) is not None:
            preset[k] = getattr(cfg, k)
    rec = {"target": run.cfg.target, "preset": preset, "max_accuracy_drop": cfg.max_accuracy_drop,
           "metric": run.task.metric, "fp32_accuracy": x.metric, "attempts": [], "folder": str(x.folder)}
    if cfg.precision != "fp32":
        for i, (name, graphs, excl) in enumerate(_int8_attempts(x.folder)):
            out = work / f"int8_{i}"
            shutil.copytree(x.folder, out)
            info = {g: quantize_dynamic_int8(x.folder / f"{g}.onnx", out / f"{g}.onnx", preset, excl.get(g, ()))
                    for g in graphs}
            metric, _ = runtime_metric(run, out, x.tokenizer_json)
            drop = 100 * (x.metric - metric)
            ok = drop <= cfg.max_accuracy_drop
            rec["attempts"].append({"setting": name, "int8_graphs": list(graphs), "accuracy": metric,
                                    "drop_points": round(drop, 3), "pass": ok,
                                    "bytes": {g: v["bytes"] for g, v in info.items()}})
            run.log(f"[{'PASS' if ok else 'FAIL'}] int8 ({name}): {run.task.metric} {metric:.4f} vs fp32 "
                    f"{x.metric:.4f} (drop {drop:+.2f} points, gate {cfg.max_accuracy_drop:g})")
            if ok:
                rec.update(precision="int8", chosen=name, accuracy=metric, folder=str(out), int8_graphs=list(graphs))
                break
    if "precision" not in rec:
        rec.update(precision="fp32", accuracy=x.metric, chosen="fp32 (requested)" if cfg.precision == "fp32"
                   else "fp32 (fallback: every int8 setting failed the gate)")
    rec["seconds"] = round(time.time() - t0, 1)
    run.stages["quantize"] = rec
    return rec


def mobile_stage(run: Run, x: T5Export, q: dict, work: Path) -> None:
    """The ORT mobile format (.ort + required operators) of each graph, for arm64 / android; checked through the
    runtime generator against the ONNX graphs."""
    if run.cfg.target not in ("arm64", "android"):
        return
    from probscale_edge.converters.mobile import to_ort

    t0, folder = time.time(), Path(q["folder"])
    files = {}
    for g in GRAPHS:
        r = to_ort(folder / f"{g}.onnx", work / "mobile" / g, target_platform="arm")
        files[g] = r["ort"]
    metric, _ = runtime_metric(run, folder, x.tokenizer_json, files=files)
    ok = abs(metric - q["accuracy"]) < 1e-9
    run.stages["mobile"] = {"files": {g: f"{g}.ort" for g in GRAPHS}, "accuracy": metric, "matches_onnx": ok,
                            "bytes": {g: files[g].stat().st_size for g in GRAPHS}, "seconds": round(time.time() - t0, 1)}
    run.log(f"[{'PASS' if ok else 'FAIL'}] ORT mobile format (.ort, 3 graphs): {run.task.metric} {metric:.4f}")


# ---------------------------------------------------------------------------------------------- bundle
def _stage_files(run: Run, x: T5Export, q: dict, work: Path) -> tuple[Path, dict]:
    """Copy what ships into ``work/bundle``; returns the folder and {graph: file} of the graphs the runtime runs."""
    stage, folder, target = work / "bundle", Path(q["folder"]), run.cfg.target
    stage.mkdir()
    graphs = {}
    for g in GRAPHS:
        if target != "android":
            shutil.copyfile(folder / f"{g}.onnx", stage / f"{g}.onnx")
            graphs[g] = f"{g}.onnx"
        if "mobile" in run.stages:
            shutil.copyfile(work / "mobile" / g / "model.ort", stage / f"{g}.ort")
            shutil.copyfile(work / "mobile" / g / "required_operators.config", stage / f"{g}.required_operators.config")
            graphs.setdefault(g, f"{g}.ort")
    spec = json.loads((folder / "seq2seq.json").read_text())
    spec["files"] = dict(graphs)
    (stage / "seq2seq.json").write_text(json.dumps(spec, indent=2))
    shutil.copyfile(x.tokenizer_json, stage / "tokenizer.json")
    if run.task.label_words:
        (stage / "labels.json").write_text(json.dumps(run.task.label_words, indent=1))
    return stage, graphs


def _manifest(run: Run, t: T5Model, s: T5Model, spec, x: T5Export, q: dict, stage: Path, graphs: dict) -> dict:
    from probscale_edge.pipeline.manifest import tool_versions

    cfg, st = run.cfg, run.stages
    full, pruned = st["finetune"]["parameters"], st["prune"]["parameters"]
    tj = json.loads((stage / "tokenizer.json").read_text(encoding="utf-8"))
    par = st["export"]["parity"]
    sel = st["select"]
    return {
        "created_by": "probscale-edge", "created_unix": int(time.time()), "kind": "text2text",
        "source_model": {"name": str(cfg.source.model), "path": str(run.src), "model_type": "t5",
                         "feed_forward_proj": t.model.config.feed_forward_proj, "max_length": st["lengths"]},
        "task": run.task.summary(), "target": cfg.target, "labels": list(run.task.label_words or []),
        "model": {"file": graphs["encoder"], "graphs": graphs, "spec_file": "seq2seq.json",
                  "format": "ort" if graphs["encoder"].endswith(".ort") else "onnx", "precision": q["precision"],
                  "int8_graphs": q.get("int8_graphs", []), "opset": st["export"]["opset"],
                  "inputs": ["input_ids", "attention_mask"], "outputs": ["tokens"]},
        "generation": {"max_new_tokens": st["lengths"]["max_new_tokens"], "num_beams": 1, "strategy": "greedy"},
        "tokenizer": {"file": "tokenizer.json", "vocab_file": None, "max_length": run.max_length,
                      "pad_id": int(t.tokenizer.pad_token_id or 0), "class": type(t.tokenizer).__name__,
                      "clean_up_tokenization_spaces": st["lengths"]["clean_up"],
                      "do_lower_case": any(n.get("type") == "Lowercase" for n in
                                           ((tj.get("normalizer") or {}).get("normalizers") or [tj.get("normalizer") or {}]))},
        "parameters": {"original": full, "pruned": pruned, "ratio_total": full["total"] / pruned["total"],
                       "ratio_non_embedding": full["non_embedding"] / pruned["non_embedding"]},
        "subnetwork": {"spec": {**spec.to_dict(), "keep_layers": {"encoder": sel["encoder_blocks"],
                                                                  "decoder": sel["decoder_blocks"]}},
                       "budget": sel["budget"], "layer_budget": sel["layer_budget"], "strategy": sel["strategy"],
                       "kept_fraction_non_embedding": pruned["non_embedding"] / full["non_embedding"],
                       "layer_shapes": st["prune"]["layer_shapes"]},
        "validation": {
            "eval_examples": len(run.task.eval), "metric": run.task.metric,
            "accuracy": {"full_finetuned_torch_fp32": t.metric, "pruned_torch_fp32": s.metric,
                         "pruned_onnx_fp32": x.metric, "bundle": q["accuracy"]},
            "retention": q["accuracy"] / t.metric if t.metric else None,
            "reload_max_abs": st["prune"]["reload_max_abs"],
            "onnx_parity_max_abs": par["first_step_max_abs_logit"], "onnx_parity_pass": True,
            "greedy_equal": f"{par['greedy_equal']}/{par['examples']}"},
        "quantization": {k: v for k, v in q.items() if k != "folder"},
        "mobile": st.get("mobile"),
        "sizes": {"full_fp32_weights_bytes": sum(p.numel() * p.element_size() for p in t.model.parameters()),
                  "pruned_onnx_fp32_bytes": sum((x.folder / f"{g}.onnx").stat().st_size for g in GRAPHS),
                  "bundle_model_bytes": sum((stage / f).stat().st_size for f in graphs.values())},
        "stages": {k: v for k, v in st.items() if k not in ("quantize", "mobile")},
        "build_config": cfg.to_dict(), "tool_versions": tool_versions(), "build_seconds": None,
    }


def _latency(run: Run, t: T5Model, stage: Path) -> dict:
    """Per request, batch 1, one text: PyTorch's generate on the full teacher, and the staged bundle (bench)."""
    import numpy as np
    import torch

    from probscale_edge.converters.seq2seq import fresh_cache
    from probscale_edge.runtime.bench import BenchConfig, bench_bundle

    runs, text = run.cfg.bundle.latency_runs, run.task.eval.sources[0]
    b = bench_bundle(stage, BenchConfig(warmup_runs=3, num_runs=runs, texts=[text]), public_key=False)
    enc = t.tokenizer([text], truncation=True, max_length=run.max_length, return_tensors="pt")
    ts = []
    with torch.no_grad():
        for i in range(3 + runs):
            t0 = time.perf_counter()
            t.model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], do_sample=False,
                             num_beams=1, max_new_tokens=run.stages["lengths"]["max_new_tokens"], cache=fresh_cache())
            if i >= 3:
                ts.append((time.perf_counter() - t0) * 1000)
    return {"latency": {"text": text, "full_torch_fp32_p50_ms": float(np.median(ts)),
                        "bundle_p50_ms": b["latency"]["p50_ms"], "bundle_time_to_first_token_p50_ms":
                        b["time_to_first_token"]["p50_ms"], "bundle_tokens_per_second_p50": b["tokens_per_second"]["p50"],
                        "threads": "default", "note": "measured on the build machine, batch 1, per request (greedy)"}}


def bundle_stage(run: Run, t: T5Model, s: T5Model, spec, x: T5Export, q: dict, staging) -> dict:
    from probscale_edge.runtime.bundle import write_manifest

    fault("bundle")
    stage, graphs = _stage_files(run, x, q, staging.work)
    m = write_manifest(stage, _manifest(run, t, s, spec, x, q, stage, graphs))
    m.update(_latency(run, t, stage))
    m["build_seconds"] = round(time.time() - run.t_start, 1)
    m = write_manifest(stage, m)
    staging.publish(stage)
    run.log(f"bundle written to {run.out}")
    m["bundle_path"] = str(run.out)
    return m
