"""The end of the stage route: a model folder that `prune` / `recover` wrote becomes a bundle, through the same
export, gated int8, formats and manifest the build uses (probe -> select -> prune -> recover -> bundle)."""

from __future__ import annotations

from pathlib import Path

from probscale_edge.config import BuildConfig
from probscale_edge.errors import ProbscaleError
from probscale_edge.pipeline.run import log_stderr
from probscale_edge.pipeline.stages import Teacher, accuracy
from probscale_edge.pipeline.student import Student, logits_diff
from probscale_edge.specs import Selection, SubnetworkSpec


def _load(folder, what: str):
    from probscale_edge.modeling import load_classifier

    if not (Path(folder) / "probscale.json").is_file():
        raise ProbscaleError(f"{what} {folder} is not a model folder written by probscale-edge",
                             "pass the folder `probscale-edge prune` or `recover` wrote")
    return load_classifier(folder)


def _reference(run, folder, student_model, tokenizer) -> Teacher:
    """The model the bundle is compared with: ``--teacher`` (the full fine-tuned model), or the folder itself."""
    from probscale_edge.modeling import predict_logits

    model, tok, _ = _load(folder, "--teacher") if folder else (student_model, tokenizer, None)
    e = run.task.eval
    logits = predict_logits(model, tok, e.texts, e.pairs, max_length=run.max_length)
    acc = accuracy(logits, e.labels)
    run.stages["finetune"] = {"accuracy": acc, "cached": False, "reference": str(folder or "the model folder itself"),
                              "parameters": model.param_counts()}
    return Teacher(model, tok, None, logits, acc, "")


def bundle_folder(cfg: BuildConfig, teacher_folder=None, log=log_stderr) -> dict:
    """``cfg.source.model`` is the recovered folder; ``cfg.data`` the task whose eval split gates int8."""
    from probscale_edge import distributed as dist
    from probscale_edge.modeling import load_classifier
    from probscale_edge.pipeline import convert, manifest
    from probscale_edge.pipeline.run import prepare
    from probscale_edge.pipeline.store import Staging

    run = prepare(cfg, log)
    model, tok, meta = _load(cfg.source.model, "--model")
    from probscale_edge.modeling import length_limits

    run.lengths = length_limits(model.encoder, tok, cfg.source.max_length)
    if list(meta.get("labels") or []) != list(run.task.label_names):
        raise ProbscaleError(f"the model's labels {meta.get('labels')} are not the task's {run.task.label_names}",
                             "bundle the model with the task it was recovered on")
    t = _reference(run, teacher_folder, model, tok)
    with Staging(run.out, cfg.bundle.force) as staging:
        reloaded, _, _ = load_classifier(cfg.source.model)
        e = run.task.eval
        s = Student(model, tok, accuracy(t.eval_logits, e.labels) if not teacher_folder else
                    _accuracy(run, model, tok), model.param_counts())
        spec = SubnetworkSpec.from_dict(meta["spec"]) if meta.get("spec") else \
            SubnetworkSpec(list(range(model.adapter.num_layers(model.encoder))))
        kept = s.parameters["non_embedding"] / t.model.param_counts()["non_embedding"]
        sel = Selection(spec, kept, s.parameters["non_embedding"], [], "given", kept)
        run.stages["prune"] = {"reload_max_abs": logits_diff(run, model, reloaded, tok), "parameters": s.parameters,
                               "layer_shapes": model.layer_shapes(), "source": str(cfg.source.model)}
        run.stages["recover"] = {"accuracy": s.accuracy, "mode": meta.get("recover", "none")}
        x = convert.export(run, s, staging.work)
        q = convert.quantize(run, s, x, staging.work)
        convert.mobile(run, s, x, q, staging.work)
        convert.tflite(run, s, x, staging.work)
        if not dist.is_main():
            return {}
        return manifest.write_bundle(run, t, sel, s, x, q, staging.work, kept, staging)


def _accuracy(run, model, tok) -> float:
    from probscale_edge.modeling import predict_logits

    e = run.task.eval
    return accuracy(predict_logits(model, tok, e.texts, e.pairs, max_length=run.max_length), e.labels)

