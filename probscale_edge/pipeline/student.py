"""Stages 3 and 4: cut the teacher to the selection (plus the embedding side), check it reloads, recover its
accuracy. The pruned and recovered student is one cache entry (content key), reused with ``--resume``."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from probscale_edge import distributed as dist
from probscale_edge.errors import ProbscaleError
from probscale_edge.faults import fault
from probscale_edge.pipeline.run import Run
from probscale_edge.pipeline.stages import Teacher, accuracy
from probscale_edge.pipeline.store import content_key
from probscale_edge.specs import Selection

_KEPT = ("prune", "recover", "vocab", "embedding")  # the reports cached with the student


@dataclass
class Student:
    model: object  # EncoderClassifier, pruned and recovered
    tokenizer: object  # the student's (vocabulary-trimmed when --trim-vocab)
    accuracy: float  # eval accuracy, PyTorch fp32
    parameters: dict  # param_counts()


def student_key(run: Run, select_key: str) -> str:
    cfg = run.cfg
    return content_key("student-v2", select_key, cfg.finetune.to_dict(), cfg.recover.to_dict(), cfg.prune.to_dict(),
                       run.max_length, cfg.seed)


def student(run: Run, t: Teacher, selection: Selection, select_key: str, work: Path) -> Student:
    from probscale_edge.modeling import load_classifier, save_classifier

    cfg, store = run.cfg, run.store("stages")
    key = student_key(run, select_key)
    found = store.get_dir(key) if cfg.resume and dist.is_main() else None
    if dist.broadcast(found is not None):
        run.log("[resume] pruned and recovered student")
        model, tok, _ = load_classifier(store.path(key))
        run.stages.update(json.loads((store.path(key) / "stages.json").read_text()))
        for k in ("prune", "recover"):
            run.stages[k]["resumed"] = True
        return Student(model, tok, run.stages["recover"]["accuracy"], run.stages["prune"]["parameters"])
    model, tok = prune(run, t, selection, work / "pruned")
    acc = recover(run, t, selection, model, tok, store.root / f"{key}.train.pt")
    fault("checkpoint")
    if dist.is_main():
        def fill(d):
            save_classifier(model, tok, d, run.task.label_names,
                            extra={"spec": selection.spec.to_dict(), "recover": cfg.recover.recover_mode})
            (d / "stages.json").write_text(json.dumps({k: run.stages[k] for k in _KEPT if k in run.stages}, default=str))

        store.put_dir(key, fill)
    return Student(model, tok, acc, run.stages["prune"]["parameters"])


def prune(run: Run, t: Teacher, selection: Selection, folder: Path):
    """Physical surgery, the vocabulary and embedding options, and a save/reload check (max |Δlogit|)."""
    from probscale_edge.prune import apply_spec

    cfg = run.cfg
    fault("prune")
    t0 = time.time()
    model, tok = embedding_side(run, t, apply_spec(t.model, selection.spec))
    diff = reload_diff(run, model, tok, selection, folder) if dist.is_main() else 0.0
    run.stages["prune"] = {"reload_max_abs": diff, "parameters": model.param_counts(),
                           "layer_shapes": model.layer_shapes(), "seconds": round(time.time() - t0, 1)}
    run.log(f"[{'PASS' if diff <= 1e-5 else 'FAIL'}] pruned model saves and reloads: max |Δlogit| {diff:.1e}")
    if diff > 1e-5:
        raise ProbscaleError("the pruned model does not reload to the same outputs", "report this model family")
    return model, tok


def task_texts(run: Run) -> list:
    """The task's own text, every training row but the dev split's (the vocabulary and the embedding read it)."""
    return run.task.train.texts + (run.task.train.pairs or []) + run.spare


def factorize(run: Run, model, tok, rank: int):
    """The word embedding factorized to ``rank`` (a factorized one refitted to that lower rank), weighted by how
    often the task's text uses each token."""
    from probscale_edge.embedding import FactorizedEmbedding, factorize_embeddings, refactorize_embeddings, token_weights

    emb = model.adapter.word_embeddings(model.encoder)
    fit = refactorize_embeddings if isinstance(emb, FactorizedEmbedding) else factorize_embeddings
    frep = fit(model, rank, token_weights(tok, task_texts(run), emb.num_embeddings, run.max_length),
               run.cfg.prune.embedding_dense_rows)
    run.stages["embedding"] = {**asdict(frep), "weighted_by": "token counts in the task's training text"}
    return frep


def embedding_side(run: Run, t: Teacher, model, factorize_now: bool = True):
    """The vocabulary and embedding options on a cut copy of the teacher (in place) -> (model, its tokenizer).
    ``factorize_now=False``: the vocabulary only (the ladder factorizes at the rung that needs it)."""
    cfg, tok = run.cfg, t.tokenizer
    if cfg.prune.trim_vocab:
        from probscale_edge.vocab import trim_vocabulary

        tok, vrep = trim_vocabulary(model, t.tokenizer, task_texts(run), None, cfg.prune.vocab_min_count,
                                    run.max_length)
        run.stages["vocab"] = asdict(vrep)
        run.log(f"  vocabulary trimmed to the task's tokens: {vrep.original:,} -> {vrep.kept:,} "
                f"([UNK] rate {vrep.unk_rate_before:.2%} -> {vrep.unk_rate_after:.2%} on the training text)")
    if cfg.prune.embedding_rank and factorize_now:
        from probscale_edge.embedding import dense_rows_note

        frep = factorize(run, model, tok, cfg.prune.embedding_rank)
        run.log(f"  word embedding factorized to rank {frep.rank}: {frep.params_before:,} -> {frep.params_after:,} "
                f"parameters (relative error {frep.relative_error:.3f}, {frep.energy_kept:.1%} of the energy, "
                "weighted by token use)" + dense_rows_note(frep))
    return model, tok


def reload_diff(run: Run, model, tok, selection: Selection, folder: Path) -> float:
    """Files are rank 0's (transformers saves on rank 0 only, too)."""
    from probscale_edge.modeling import load_classifier, save_classifier

    save_classifier(model, tok, folder, run.task.label_names, extra={"spec": selection.spec.to_dict()})
    reloaded, _, _ = load_classifier(folder)
    return logits_diff(run, model, reloaded, tok)


def logits_diff(run: Run, a, b, tok) -> float:
    """max |Δlogit| between two models on the first 64 eval texts."""
    import numpy as np

    from probscale_edge.modeling import predict_logits

    sample = run.task.eval.texts[:64]
    return float(np.abs(predict_logits(a, tok, sample, max_length=run.max_length)
                        - predict_logits(b, tok, sample, max_length=run.max_length)).max())


def recover(run: Run, t: Teacher, selection: Selection, model, tok, checkpoint: Path) -> float:
    """Recovery as configured (distillation from the teacher's logits by default); returns eval accuracy."""
    from probscale_edge.modeling import predict_logits
    from probscale_edge.recover import HiddenDistill, TrainSettings, recover as run_recovery

    cfg, task = run.cfg, run.task
    fault("recover")
    t0 = time.time()
    run.log(f"recovering accuracy ({cfg.recover.recover_mode}) ...")
    ts = TrainSettings.of(cfg.finetune, cfg.recover, run.max_length, cfg.seed)
    # the teacher side of hidden-state distillation; recover() checks the weight against the mode
    hidden = HiddenDistill(t.model, t.tokenizer, selection.spec.keep_layers) if ts.hidden_weight > 0 else None
    augmenter = None
    if ts.augment > 0:  # the teacher labels perturbed copies of the training text
        from probscale_edge.augment import AugmentConfig, Augmenter

        augmenter = Augmenter(t.model, t.tokenizer, AugmentConfig(copies=ts.augment, seed=cfg.seed), run.max_length,
                              log=run.log)
    rep = run_recovery(model, tok, task.train, ts, teacher_logits=t.train_logits, checkpoint=checkpoint,
                       resume=cfg.resume, hidden_teacher=hidden, augmenter=augmenter)
    with dist.collective():
        logits = predict_logits(model, tok, task.eval.texts, task.eval.pairs, max_length=run.max_length)
    acc = accuracy(logits, task.eval.labels)
    run.stages["recover"] = {**rep, "accuracy": acc, "seconds": round(time.time() - t0, 1)}
    run.log(f"pruned fp32 model: eval accuracy {acc:.4f} ({acc / t.accuracy:.1%} of the full model)")
    return acc
