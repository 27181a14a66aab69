"""Recover: fine-tune a (pruned) classifier on the task, optionally distilling from a teacher.

The same recipe trains the full model (the teacher and the reference accuracy) and the pruned
student, so their accuracies compare like for like. Batches are grouped by length (shuffled
buckets), which keeps padding low on CPUs.
"""

from __future__ import annotations

import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from probscale_edge.config import RECOVER_MODES, FinetuneConfig, RecoverConfig
from probscale_edge.errors import ProbscaleError
from probscale_edge.faults import fault

__all__ = ["RecoverConfig", "TrainSettings", "recover", "train_classifier", "HiddenDistill", "TeacherStates"]

MODES = RECOVER_MODES


@dataclass(frozen=True)
class TrainSettings:
    """What the training functions read: the fine-tune's recipe (:class:`~probscale_edge.config.FinetuneConfig`),
    the recovery's (:class:`~probscale_edge.config.RecoverConfig`) and the shared length and seed, derived by
    :meth:`of` (never set twice by hand). The teacher trains with ``lr``/``epochs``, the student with
    ``student_lr``/``student_epochs``."""

    mode: str = "distill"  # none | head | finetune | distill
    epochs: float = 3.0
    student_epochs: float | None = None  # recovery epochs (default: ``epochs``, the teacher's recipe)
    lr: float = 5e-5
    student_lr: float = 1e-4  # pruned models recover faster with a larger step
    batch_size: int = 32
    warmup: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 128
    freeze_word_embeddings: bool = True  # saves a third of the step time; see README
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the hard-label loss when distilling
    # hidden-state distillation (mode distill, with the teacher model at hand): each kept student layer's
    # output is pulled towards its teacher layer's output; this weight times the mean relative squared
    # error over layers (||h_s - h_t||^2 / ||h_t||^2 on real tokens) is added to the loss. 0: logits only.
    hidden_weight: float = 0.0
    # augmented distillation (mode distill): this many perturbed copies of every training example, labelled
    # by the teacher's logits only (see probscale_edge.augment). 0: the task's examples only.
    augment: int = 0
    seed: int = 0
    amp: bool = True  # bf16 autocast on GPUs (ignored on CPUs)
    checkpoint_every: int = 200  # steps between training-state checkpoints (0: none)
    # early stopping (student recovery only; the teacher keeps the fixed recipe): a stratified dev
    # split held out of the training data is scored every ``eval_every`` epochs; the best weights are
    # kept and training stops after ``patience`` scores without improvement. dev_fraction 0: off.
    dev_fraction: float = 0.1
    eval_every: float = 0.5
    patience: int = 3

    @classmethod
    def of(cls, ft: FinetuneConfig, rc: RecoverConfig | None = None, max_length: int = 128,
           seed: int = 0) -> "TrainSettings":
        rc = rc or RecoverConfig()
        return cls(mode=rc.recover_mode, epochs=ft.epochs, student_epochs=rc.student_epochs, lr=ft.lr,
                   student_lr=rc.student_lr, batch_size=ft.batch_size, warmup=ft.warmup, weight_decay=ft.weight_decay,
                   max_length=max_length, freeze_word_embeddings=ft.freeze_word_embeddings,
                   temperature=rc.temperature, alpha=rc.alpha, hidden_weight=rc.distill_hidden or 0.0,
                   augment=rc.augment or 0,  # None (the recipe's) outside a build: the plain values
                   seed=seed, amp=ft.amp, checkpoint_every=ft.checkpoint_every, dev_fraction=rc.dev_fraction,
                   eval_every=rc.eval_every, patience=rc.patience)


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


def train_classifier(model, tokenizer, split, cfg: TrainSettings, teacher_logits: np.ndarray | None = None,
                     lr: float | None = None, progress_desc: str = "fine-tune", head_only: bool = False,
                     checkpoint: str | os.PathLike | None = None, resume: bool = False, dev_split=None,
                     hidden_teacher=None) -> dict:
    """Train ``model`` in place on ``split``; returns a small report (steps, final loss).

    ``dev_split`` (held out of the training data): early stopping as configured by ``cfg.eval_every``/``cfg.patience``;
    the model ends with the weights that scored best on it.

    Under ``torchrun``/``accelerate launch`` the model is wrapped in DDP and every global batch of
    ``cfg.batch_size`` is split across the ranks, so N processes take the same optimisation steps
    as one. ``checkpoint`` (a file path) saves the training state every ``cfg.checkpoint_every``
    steps (rank 0, atomically); with ``resume`` a run restarts from it.

    ``hidden_teacher`` (a :class:`HiddenDistill`): adds its hidden-state loss, weighted by ``cfg.hidden_weight``.
    """
    from probscale_edge import distributed as dist

    if len(split) == 0:
        raise ProbscaleError("the training split is empty", "give training data")
    world = dist.world_size()
    if cfg.batch_size < world or len(split) < world:
        raise ProbscaleError(f"batch size {cfg.batch_size} or {len(split)} training examples is fewer than the "
                             f"{world} processes", f"pass a batch size and data of at least {world}, or fewer processes")
    dist.init()
    torch.manual_seed(cfg.seed)
    run = _Training(model, tokenizer, split, cfg, lr or cfg.lr, head_only, teacher_logits, hidden_teacher)
    run.restore(Path(checkpoint) if checkpoint else None, resume, dev_split)
    t0 = time.perf_counter()
    run.loop(progress_desc)
    seconds = run.finish() - t0
    return {"steps": run.step, "final_loss": float(np.mean(run.losses[-20:])), "lr": run.lr, "examples": len(split),
            "epochs": cfg.epochs, "distilled": run.tl is not None, "head_only": head_only,
            "resumed_at_step": run.start, "world_size": world, "device": run.dev.type,
            "train_seconds": round(seconds, 2),
            **({"hidden_distill": hidden_teacher.report(run.hid_losses)} if hidden_teacher is not None else {}),
            "examples_per_second": round(run.seen / seconds, 1) if seconds > 0 else None,
            **({"early_stopping": run.early} if run.early else {})}


class _Training:
    """One training run's state: the optimizer, the schedule, the batches, the losses (train_classifier)."""

    def __init__(self, model, tokenizer, split, cfg: TrainSettings, lr, head_only, teacher_logits, hidden_teacher):
        from probscale_edge import distributed as dist

        self.model, self.tokenizer, self.split, self.cfg, self.lr = model, tokenizer, split, cfg, lr
        self.hidden = hidden_teacher
        self.world, self.rank = dist.world_size(), dist.rank()
        self.rng = random.Random(cfg.seed)
        self.dev = dev = dist.device()
        model.to(dev)
        model.train()
        for p in model.parameters():
            p.requires_grad = not head_only
        for p in model.classifier.parameters():
            p.requires_grad = True
        emb = model.adapter.word_embeddings(model.encoder)
        # a factorized table (vocabulary x rank) is small and must adapt to the new projection: trained
        if cfg.freeze_word_embeddings and not head_only and not hasattr(emb, "proj"):
            emb.weight.requires_grad = False
        self.params = [p for p in model.parameters() if p.requires_grad]
        decay = [p for p in self.params if p.ndim >= 2]
        no_decay = [p for p in self.params if p.ndim < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}], lr=lr,
                                     **({"fused": True} if dev.type == "cuda" else {}))
        self.lengths = [len(t) + (len(split.pairs[i]) if split.pairs else 0) for i, t in enumerate(split.texts)]
        self.steps_per_epoch = math.ceil(len(split) / cfg.batch_size)
        self.total = total = max(1, int(round(self.steps_per_epoch * cfg.epochs)))
        warm = int(cfg.warmup * total)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: (s + 1) / max(1, warm) if s < warm else max(0.0, (total - s) / max(1, total - warm)))
        self.labels = torch.tensor(split.labels, dtype=torch.long)
        self.tl = torch.tensor(teacher_logits) if teacher_logits is not None else None
        self.net = self._ddp(model) if dist.active() else model
        self.amp = dev.type == "cuda" and cfg.amp
        self.step, self.losses, self.start, self.hid_losses, self.seen = 0, [], 0, [], 0
        self.stopper = self.ck = self.early = None

    def _ddp(self, model):
        from torch.nn.parallel import DistributedDataParallel

        dev = self.dev
        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                                      gradient_as_bucket_view=True)
        if dev.type == "cuda":  # gradients travel in bf16: half the all-reduce bytes, fp32 kept for the update
            from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

            net.register_comm_hook(None, default_hooks.bf16_compress_hook)
        return net

    def restore(self, ck: Path | None, resume: bool, dev_split) -> None:
        """Early stopping on ``dev_split``; a checkpoint of the same run restored with ``resume``."""
        self.stopper = (_EarlyStopping(self.model, self.tokenizer, dev_split, self.cfg, self.steps_per_epoch)
                        if dev_split is not None and len(dev_split) else None)
        self.ck = ck
        if ck is not None and resume and ck.exists():
            state = torch.load(ck, map_location="cpu", weights_only=False)
            if state.get("total") == self.total:
                self.model.load_state_dict(state["model"])
                self.opt.load_state_dict(state["opt"])
                self.sched.load_state_dict(state["sched"])
                torch.set_rng_state(state["torch_rng"])
                self.start, self.losses = state["step"], state["losses"]
                if self.stopper is not None and state.get("stopper"):
                    self.stopper.load(state["stopper"])
        # tokenized once, padded per batch: per-step tokenization was a third of a GPU step's time
        self.encoded = _Encoded(self.tokenizer, self.split, self.cfg.max_length)
        if self.hidden is not None:
            self.hidden.prepare(self.model, self.split, self.cfg, self.dev)

    def loop(self, progress_desc: str) -> None:
        from probscale_edge.progress import progress_bar

        stopper = self.stopper
        with progress_bar(self.total, progress_desc) as bar:
            bar.update(self.start)
            while self.step < self.total:
                for b in _batches(self.lengths, self.cfg.batch_size, self.rng):
                    if self.step >= self.total:
                        break
                    if len(b) < self.world:  # a last sliver smaller than the process count: skipped by every rank
                        continue
                    if self.step < self.start:  # replaying the batch order of a resumed run
                        self.step += 1
                        continue
                    self.train_step(b)
                    bar.update(1, loss=sum(self.losses[-20:]) / len(self.losses[-20:]),
                               **({"dev": stopper.last} if stopper is not None and stopper.last is not None else {}))
                    if stopper is not None and stopper.due(self.step, self.total):
                        self.model.eval()
                        stop = stopper.score(self.step)
                        self.model.train()
                        if stop:
                            break
                    self.checkpoint()
                    fault(f"train-step:{self.step}")
                if stopper is not None and stopper.stopped:
                    break

    def train_step(self, b) -> None:
        cfg, dev, mine = self.cfg, self.dev, b[self.rank::self.world]  # this rank's share of the global batch
        enc = {k: v.to(dev, non_blocking=True) for k, v in self.encoded.batch(mine).items()}
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            with (self.model.capture_states() if self.hidden is not None else nullcontext()) as states:
                logits = self.net(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids")).float()
        y = self.labels[mine].to(dev)
        # augmented rows (label -1) have only the teacher's logits: the hard-label loss is over the rest
        loss = F.cross_entropy(logits, y, ignore_index=-1, reduction="sum") / (y >= 0).sum().clamp(min=1)
        if self.tl is not None:
            T = cfg.temperature
            kd = F.kl_div(F.log_softmax(logits / T, -1), F.softmax(self.tl[mine].to(dev) / T, -1),
                          reduction="batchmean") * T * T
            loss = cfg.alpha * loss + (1 - cfg.alpha) * kd
        if self.hidden is not None:
            hl = self.hidden.loss(states, mine, enc["attention_mask"], self.amp)
            self.hid_losses.append(hl.item())
            loss = loss + cfg.hidden_weight * hl
        # DDP averages gradients over ranks; weighting by the share size makes that the
        # mean over the global batch even when the shares differ by one example
        (loss * (len(mine) * self.world / len(b))).backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.losses.append(loss.item())
        self.step += 1
        self.seen += len(b)

    def checkpoint(self) -> None:
        every = self.cfg.checkpoint_every
        if self.ck is not None and every and self.step % every == 0 and self.step < self.total:
            _save_state(self.ck, self.model, self.opt, self.sched, self.step, self.total, self.losses,
                        self.stopper.state() if self.stopper is not None else None)

    def finish(self) -> float:
        """Back to the CPU in eval mode with the best dev weights; returns the clock at the end of training."""
        from probscale_edge import distributed as dist

        if self.dev.type == "cuda":
            torch.cuda.synchronize()
        end = time.perf_counter()
        self.model.to("cpu")
        if self.hidden is not None:
            self.hidden.teacher.to("cpu")
        self.model.eval()
        self.early = self.stopper.finish() if self.stopper is not None else None
        for p in self.model.parameters():
            p.requires_grad = True
        if self.ck is not None and dist.is_main():
            self.ck.unlink(missing_ok=True)
        return end


class _EarlyStopping:
    """Score a held-out dev split every ``cfg.eval_every`` epochs; keep the best weights (in memory)."""

    def __init__(self, model, tokenizer, dev, cfg: TrainSettings, steps_per_epoch: int):
        self.model, self.tokenizer, self.dev, self.cfg = model, tokenizer, dev, cfg
        self.every = max(1, int(round(cfg.eval_every * steps_per_epoch)))
        self.best, self.best_step, self.best_state, self.bad, self.history = None, 0, None, 0, []
        self.stopped, self.last = False, None

    def due(self, step: int, total: int) -> bool:
        return step % self.every == 0 or step == total

    def score(self, step: int) -> bool:
        """Score the current weights; True when training should stop."""
        from probscale_edge import distributed as dist
        from probscale_edge.modeling import predict_logits_local

        # every rank scores the (identical) weights on the whole dev split, on the training device
        z = predict_logits_local(self.model, self.tokenizer, list(self.dev.texts),
                            list(self.dev.pairs) if self.dev.pairs else None, 64, self.cfg.max_length, None)
        y = np.asarray(self.dev.labels)
        acc = float((z.argmax(-1) == y).mean())
        loss = float(F.cross_entropy(torch.from_numpy(z), torch.from_numpy(y)).item())
        key = dist.broadcast((acc, -loss))  # rank 0 decides for all
        self.last = round(key[0], 4)
        self.history.append({"step": step, "accuracy": key[0], "loss": -key[1]})
        if self.best is None or tuple(key) > tuple(self.best):
            self.best, self.best_step, self.bad = tuple(key), step, 0
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        else:
            self.bad += 1
        self.stopped = self.bad >= self.cfg.patience
        return self.stopped

    def state(self) -> dict:
        return {k: getattr(self, k) for k in ("best", "best_step", "best_state", "bad", "history")}

    def load(self, st: dict) -> None:
        for k, v in st.items():
            setattr(self, k, v)

    def finish(self) -> dict:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return {"dev_examples": len(self.dev), "best_step": self.best_step,
                "best_dev_accuracy": self.best[0] if self.best else None, "stopped_early": self.stopped,
                "history": self.history}


class _Encoded:
    """A split tokenized once (no padding); ``batch(idx)`` pads a batch exactly as
    ``tokenizer(..., padding=True)`` would (right padding, pad id, zero mask and segment)."""

    def __init__(self, tokenizer, split, max_length):
        kw = dict(truncation=True, max_length=max_length)
        texts = list(split.texts)
        enc = tokenizer(texts, list(split.pairs), **kw) if split.pairs else tokenizer(texts, **kw)
        self.fields = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
        if tokenizer.padding_side != "right":
            raise ProbscaleError(f"tokenizer pads on the {tokenizer.padding_side}", "use a right-padding tokenizer")
        self.pad = {"input_ids": int(tokenizer.pad_token_id or 0), "attention_mask": 0,
                    "token_type_ids": int(getattr(tokenizer, "pad_token_type_id", 0) or 0)}

    def batch(self, idx) -> dict:
        ids = self.fields["input_ids"]
        width = max(len(ids[i]) for i in idx)
        out = {}
        for k, rows in self.fields.items():
            a = np.full((len(idx), width), self.pad[k], dtype=np.int64)
            for r, i in enumerate(idx):
                a[r, :len(rows[i])] = rows[i]
            out[k] = torch.from_numpy(a)
        return out


class HiddenDistill:
    """The teacher side of hidden-state distillation.

    ``layer_map[i]`` is the teacher layer that student layer ``i`` was cut from (the spec's ``keep_layers``).
    The teacher reads the same texts through its own tokenizer (the student's may be vocabulary-trimmed,
    which renumbers ids but keeps the token sequence); a row whose token count differs between the two
    is left out of the hidden loss and counted in the report."""

    def __init__(self, teacher, teacher_tokenizer, layer_map, states: "TeacherStates | None" = None):
        self.teacher, self.tokenizer, self.layer_map = teacher, teacher_tokenizer, [int(i) for i in layer_map]
        self.states = states  # the teacher's outputs computed once for the split trained on (None: run it live)
        self.encoded = None
        self.mismatched = 0
        self.rows = 0

    def prepare(self, student, split, cfg, dev):
        n_student = len(student.adapter.layers(student.encoder))
        n_teacher = len(self.teacher.adapter.layers(self.teacher.encoder))
        if len(self.layer_map) != n_student or any(not 0 <= t < n_teacher for t in self.layer_map):
            raise ProbscaleError(f"hidden-state distillation: layer map {self.layer_map} does not fit a "
                                 f"{n_student}-layer student of a {n_teacher}-layer teacher",
                                 "pass the spec's keep_layers as the layer map")
        self.dev = dev
        if self.states is not None:
            if self.states.split is not split or self.states.max_length != cfg.max_length:
                raise ProbscaleError("the cached teacher states are of other rows than the ones trained on",
                                     "report this: the states must be computed for the split passed to training")
            self.encoded = self.states.encoded
            return
        self.encoded = _Encoded(self.tokenizer, split, cfg.max_length)
        self.teacher.to(dev).eval()
        for p in self.teacher.parameters():
            p.requires_grad = False

    def _teacher_states(self, idx, amp: bool):
        """-> (the teacher's attention mask, {teacher layer: its output}) for the batch ``idx``."""
        if self.states is not None:
            mask, layers = self.states.batch(idx, self.layer_map)
            return mask.to(self.dev), {ti: h.to(self.dev, non_blocking=True) for ti, h in layers.items()}
        t = {k: v.to(self.dev, non_blocking=True) for k, v in self.encoded.batch(idx).items()}
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            with self.teacher.capture_states() as tstates:
                self.teacher(t["input_ids"], t["attention_mask"], t.get("token_type_ids"))
        return t["attention_mask"], {ti: tstates[ti + 1] for ti in self.layer_map}

    def loss(self, states, idx, student_mask, amp: bool):
        tmask, tstates = self._teacher_states(idx, amp)
        sm, tm = student_mask.bool(), tmask.bool()
        same = (sm.sum(1) == tm.sum(1)) if sm.shape == tm.shape else torch.zeros(len(idx), dtype=torch.bool,
                                                                               device=sm.device)
        self.rows += len(idx)
        self.mismatched += int((~same).sum())
        if not bool(same.any()):
            return torch.zeros((), device=sm.device)
        w = (sm & same[:, None]).unsqueeze(-1).float()
        total = 0.0
        for i, ti in enumerate(self.layer_map):
            hs, ht = states[i + 1].float(), tstates[ti].float()
            total = total + ((hs - ht) ** 2 * w).sum() / ((ht ** 2) * w).sum().clamp(min=1e-6)
        return total / len(self.layer_map)

    def report(self, losses) -> dict:
        k = max(1, len(losses) // 10)
        return {"layer_map": self.layer_map, "first_loss": float(np.mean(losses[:k])) if losses else None,
                "final_loss": float(np.mean(losses[-k:])) if losses else None,
                "rows_mismatched": self.mismatched, "rows": self.rows}


class TeacherStates:
    """The teacher's layer outputs for every row of a split, computed once and kept in a file (fp16): every
    later hidden-state distillation over the same rows reads them instead of running the teacher. The ladder
    distils every rung over the same rows, and the teacher's forward pass was a large share of each step on
    CPUs (benchmarks/ladder measures the build with and without). :meth:`compute` returns None when the file
    would not fit (``max_bytes``, or half the free disk): the teacher then runs live, as before."""

    def __init__(self, split, encoded, offsets, table, max_length, path: Path):
        self.split, self.encoded, self.offsets, self.table, self.max_length = split, encoded, offsets, table, max_length
        self.path = path

    def release(self) -> None:
        """Drop the file (gigabytes on a large task) once nothing will train on these rows again."""
        self.table = None
        self.path.unlink(missing_ok=True)

    @classmethod
    def compute(cls, teacher, tokenizer, split, max_length, path: Path, max_bytes: float = 12e9,
                batch_size: int = 64) -> "TeacherStates | None":
        import shutil

        from probscale_edge.progress import progress_bar

        encoded = _Encoded(tokenizer, split, max_length)
        lengths = np.array([len(r) for r in encoded.fields["input_ids"]])
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        shape = (int(offsets[-1]), len(teacher.adapter.layers(teacher.encoder)),
                 int(getattr(teacher.encoder.config, teacher.adapter.hidden_key)))
        path.parent.mkdir(parents=True, exist_ok=True)
        if 2 * math.prod(shape) > min(max_bytes, shutil.disk_usage(path.parent).free / 2):  # fp16: 2 bytes
            return None
        table = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)
        order = np.argsort(lengths, kind="stable")  # length-sorted batches: little padding
        teacher.eval()
        batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
        with torch.inference_mode(), progress_bar(len(batches), "teacher states") as bar:
            for b in batches:
                enc = encoded.batch(b)
                with teacher.capture_states() as st:
                    teacher(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))
                layers = torch.stack(st[1:], 2).to(torch.float16).numpy()  # batch x tokens x layers x hidden
                for r, i in enumerate(b):
                    table[offsets[i]:offsets[i + 1]] = layers[r, :lengths[i]]
                bar.update(1)
        table.flush()
        return cls(split, encoded, offsets, table, max_length, path)

    def batch(self, idx, layers) -> tuple[torch.Tensor, dict]:
        """-> (attention mask, {teacher layer: batch x tokens x hidden float32}), padded like ``encoded.batch``."""
        lengths = [int(self.offsets[i + 1] - self.offsets[i]) for i in idx]
        width = max(lengths)
        out = np.zeros((len(idx), width, len(layers), self.table.shape[2]), dtype=np.float16)
        mask = np.zeros((len(idx), width), dtype=np.int64)
        for r, i in enumerate(idx):
            out[r, :lengths[r]] = self.table[self.offsets[i]:self.offsets[i + 1], layers]
            mask[r, :lengths[r]] = 1
        t = torch.from_numpy(out).float()
        return torch.from_numpy(mask), {ti: t[:, :, j] for j, ti in enumerate(layers)}


def _save_state(path: Path, model, opt, sched, step, total, losses, stopper=None):
    from probscale_edge import distributed as dist

    if not dist.is_main():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    torch.save({"model": {k: v.cpu() for k, v in model.state_dict().items()}, "opt": opt.state_dict(),
                "sched": sched.state_dict(), "torch_rng": torch.get_rng_state(), "step": step, "total": total,
                "losses": losses, "stopper": stopper}, tmp)
    os.replace(tmp, path)


def recover(student, tokenizer, split, cfg: TrainSettings, teacher_logits=None, checkpoint=None,
            resume: bool = False, hidden_teacher: HiddenDistill | None = None, augmenter=None) -> dict:
    """Apply the recovery mode to a pruned student (``hidden_teacher``: hidden-state distillation;
    ``augmenter`` (:class:`probscale_edge.augment.Augmenter`): augmented distillation; both mode distill)."""
    if cfg.mode not in MODES:
        raise ProbscaleError(f"unknown recovery mode {cfg.mode!r}", f"use --recover {'|'.join(MODES)}")
    if cfg.hidden_weight < 0 or (cfg.hidden_weight > 0 and cfg.mode != "distill"):
        raise ProbscaleError(f"hidden-state distillation weight {cfg.hidden_weight} with --recover {cfg.mode}",
                             "give a weight >= 0, and use it with --recover distill")
    if cfg.augment < 0 or (cfg.augment > 0 and cfg.mode != "distill"):
        raise ProbscaleError(f"augmentation copies {cfg.augment} with --recover {cfg.mode}",
                             "give a count >= 0, and use it with --recover distill (augmented rows have no labels)")
    if cfg.mode == "none":
        return {"mode": "none"}
    if cfg.student_epochs:
        from dataclasses import replace

        cfg = replace(cfg, epochs=cfg.student_epochs)
    dev_split = None
    if cfg.mode in ("finetune", "distill") and cfg.dev_fraction > 0:
        from probscale_edge.data import stratified_sample

        n_dev = int(round(cfg.dev_fraction * len(split)))
        if n_dev >= 20 and len(split) - n_dev >= cfg.batch_size:
            dev_idx = set(stratified_sample(split.labels, n_dev, seed=cfg.seed))
            fit_idx = [i for i in range(len(split)) if i not in dev_idx]
            dev_split = split.subset(sorted(dev_idx))
            split = split.subset(fit_idx)
            if teacher_logits is not None:
                teacher_logits = np.asarray(teacher_logits)[fit_idx]
    if cfg.mode == "head":
        rep = train_classifier(student, tokenizer, split, cfg, lr=1e-3, progress_desc="recover (head)", head_only=True,
                               checkpoint=checkpoint, resume=resume)
    elif cfg.mode == "finetune":
        rep = train_classifier(student, tokenizer, split, cfg, lr=cfg.student_lr, progress_desc="recover (fine-tune)",
                               checkpoint=checkpoint, resume=resume, dev_split=dev_split)
    else:
        if teacher_logits is None:
            raise ProbscaleError("distillation needs the teacher's logits", "use --recover finetune")
        hidden = hidden_teacher if cfg.hidden_weight > 0 else None
        if cfg.hidden_weight > 0 and hidden is None:
            raise ProbscaleError("hidden-state distillation needs the teacher model", "pass hidden_teacher, or weight 0")
        aug = None
        if cfg.augment > 0:  # after the dev split: no variant of a dev example is trained on
            if augmenter is None:
                raise ProbscaleError("augmented distillation needs the teacher model", "pass augmenter, or augment 0")
            split, teacher_logits, aug = augmenter.expand(split, teacher_logits)
        rep = train_classifier(student, tokenizer, split, cfg, teacher_logits=teacher_logits, lr=cfg.student_lr,
                               progress_desc="recover (distill)", checkpoint=checkpoint, resume=resume, dev_split=dev_split,
                               hidden_teacher=hidden)
        if aug is not None:
            rep["augmentation"] = asdict(aug)
    rep["mode"] = cfg.mode
    rep["config"] = asdict(cfg)
    return rep
