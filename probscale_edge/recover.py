"""Recover: fine-tune a (pruned) classifier on the task, optionally distilling from a teacher.

The same recipe trains the full model (the teacher and the reference accuracy) and the pruned
student, so their accuracies compare like for like. Batches are grouped by length (shuffled
buckets), which keeps padding low on CPUs.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from probscale_edge.errors import ProbscaleError

MODES = ("none", "head", "finetune", "distill")


@dataclass
class RecoverConfig:
    mode: str = "distill"  # none | head | finetune | distill
    epochs: float = 3.0
    lr: float = 5e-5
    student_lr: float = 1e-4  # pruned models recover faster with a larger step
    batch_size: int = 32
    warmup: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 128
    freeze_word_embeddings: bool = True  # saves a third of the step time; see README
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the hard-label loss when distilling
    seed: int = 0


def _batches(lengths, batch_size, rng):
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    chunk = batch_size * 50
    batches = []
    for s in range(0, len(idx), chunk):
        part = sorted(idx[s:s + chunk], key=lambda i: lengths[i])
        batches += [part[j:j + batch_size] for j in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def train_classifier(model, tokenizer, split, cfg: RecoverConfig, teacher_logits: np.ndarray | None = None,
                     lr: float | None = None, progress_desc: str = "fine-tune", head_only: bool = False) -> dict:
    """Train ``model`` in place on ``split``; returns a small report (steps, final loss)."""
    from probscale_edge.modeling import tokenize
    from probscale_edge.progress import progress_bar

    if len(split) == 0:
        raise ProbscaleError("the training split is empty", "give training data")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    lr = lr or cfg.lr
    model.train()
    for p in model.parameters():
        p.requires_grad = not head_only
    for p in model.classifier.parameters():
        p.requires_grad = True
    if cfg.freeze_word_embeddings and not head_only:
        model.adapter.word_embeddings(model.encoder).weight.requires_grad = False
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    lengths = [len(t) + (len(split.pairs[i]) if split.pairs else 0) for i, t in enumerate(split.texts)]
    steps_per_epoch = math.ceil(len(split) / cfg.batch_size)
    total = max(1, int(round(steps_per_epoch * cfg.epochs)))
    warm = int(cfg.warmup * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, warm) if s < warm else max(0.0, (total - s) / max(1, total - warm)))
    labels = torch.tensor(split.labels, dtype=torch.long)
    tl = torch.tensor(teacher_logits) if teacher_logits is not None else None
    step, losses = 0, []
    with progress_bar(total, progress_desc) as bar:
        while step < total:
            for b in _batches(lengths, cfg.batch_size, rng):
                if step >= total:
                    break
                enc = tokenize(tokenizer, [split.texts[i] for i in b],
                               [split.pairs[i] for i in b] if split.pairs else None, cfg.max_length)
                logits = model(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))
                y = labels[b]
                loss = F.cross_entropy(logits, y)
                if tl is not None:
                    T = cfg.temperature
                    kd = F.kl_div(F.log_softmax(logits / T, -1), F.softmax(tl[b] / T, -1), reduction="batchmean") * T * T
                    loss = cfg.alpha * loss + (1 - cfg.alpha) * kd
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                losses.append(loss.item())
                step += 1
                bar.update(1, loss=sum(losses[-20:]) / len(losses[-20:]))
    model.eval()
    for p in model.parameters():
        p.requires_grad = True
    return {"steps": step, "final_loss": float(np.mean(losses[-20:])), "lr": lr, "examples": len(split),
            "epochs": cfg.epochs, "distilled": tl is not None, "head_only": head_only}


def recover(student, tokenizer, split, cfg: RecoverConfig, teacher_logits=None) -> dict:
    """Apply the recovery mode to a pruned student."""
    if cfg.mode not in MODES:
        raise ProbscaleError(f"unknown recovery mode {cfg.mode!r}", f"use --recover {'|'.join(MODES)}")
    if cfg.mode == "none":
        return {"mode": "none"}
    if cfg.mode == "head":
        rep = train_classifier(student, tokenizer, split, cfg, lr=1e-3, progress_desc="recover (head)", head_only=True)
    elif cfg.mode == "finetune":
        rep = train_classifier(student, tokenizer, split, cfg, lr=cfg.student_lr, progress_desc="recover (fine-tune)")
    else:
        if teacher_logits is None:
            raise ProbscaleError("distillation needs the teacher's logits", "use --recover finetune")
        rep = train_classifier(student, tokenizer, split, cfg, teacher_logits=teacher_logits, lr=cfg.student_lr,
                               progress_desc="recover (distill)")
    rep["mode"] = cfg.mode
    rep["config"] = asdict(cfg)
    return rep
