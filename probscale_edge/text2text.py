"""Text-to-text tasks for T5: (source, target) pairs, the task metric, a tokenizer for from-scratch models, the
teacher fine-tune / token-level distillation loop, and the per-layer probes of the encoder and the decoder.

Data. A local CSV / TSV / JSONL file of pairs (``--text-column`` the source, ``--target-column`` the target), or a
built-in classification task framed T5-style: the source is ``"<task>: <text>"``, the target the label word
(the label name, lower-cased: ``fresh``/``rotten``, ``ham``/``spam``, ``desc``/``loc``/...). A file without an eval
file is split 80/20 with a fixed seed, as classification files are.

Metric. ``exact_match`` (the stripped output equals the target) when the targets are label words (a built-in task,
or a file whose eval targets all occur among at most 32 distinct training targets), else ``chrf`` (character
n-gram F-score, Popović 2015: n = 1..6, beta = 2, whitespace removed, precision and recall averaged over the
n-gram orders that occur; corpus-level, from n-gram counts summed over the sentences). On one sentence it equals
sacrebleu's CHRF (word_order 0; a test checks it where sacrebleu is installed); over a corpus sacrebleu aggregates
differently and the two can differ. Implemented here so that the torch-free runtime (bench) scores without an
extra dependency. Both metrics are fractions in [0, 1];
the int8 gate reads ``--max-accuracy-drop`` as points (x100) of this metric.

Only this module's functions that train or probe import torch, inside the function.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from probscale_edge.errors import ProbscaleError

METRICS = ("exact_match", "chrf")
MAX_LABEL_WORDS = 32  # a file with at most this many distinct targets is scored by exact match
EVAL_FRACTION = 0.2
SPLIT_SEED = 0
MIN_EVAL = 10
SPECIALS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2: T5's pad (also the decoder start), eos and unk


# ---------------------------------------------------------------------------------------------- data
@dataclass
class Pairs:
    sources: list
    targets: list

    def __len__(self):
        return len(self.sources)

    def subset(self, idx):
        return Pairs([self.sources[i] for i in idx], [self.targets[i] for i in idx])


@dataclass
class PairTask:
    name: str
    train: Pairs
    eval: Pairs
    metric: str  # exact_match | chrf
    label_words: list | None = None  # the targets of a classification framing (None: free text)
    source: dict = field(default_factory=dict)
    weight: float = 1.0

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.metric.encode())
        for part in (self.train, self.eval):
            for s, t in zip(part.sources, part.targets):
                h.update(s.encode("utf-8", "surrogatepass") + b"\x00" + t.encode("utf-8", "surrogatepass") + b"\x01")
        return h.hexdigest()

    def summary(self) -> dict:
        return {"name": self.name, "kind": "text2text", "metric": self.metric, "label_words": self.label_words,
                "train": len(self.train), "eval": len(self.eval), **self.source}


def label_word(name: str) -> str:
    return str(name).strip().lower()


def frame_builtin(name: str, max_train: int | None = None, log=None) -> PairTask:
    """A built-in classification task as text-to-text: ``"<task>: <text>"`` -> the label word."""
    from probscale_edge.data import load_task

    t = load_task(name, max_train=max_train, log=log)
    words = [label_word(n) for n in t.label_names]
    if len(set(words)) != len(words):
        raise ProbscaleError(f"task {name}: label words {words} are not distinct", "use a file of pairs instead")

    def pairs(split):
        return Pairs([f"{name}: {x}" for x in split.texts], [words[y] for y in split.labels])

    return PairTask(name, pairs(t.train), pairs(t.eval), "exact_match", words,
                    {"builtin": True, "framing": "'<task>: <text>' -> label word"})


def _column_values(rows, path: Path, column: str, what: str, flag: str) -> list[str]:
    header = list(rows[0].keys()) if rows else []
    if column not in header:
        raise ProbscaleError(f"{path} has no {what} column {column!r} (columns: {', '.join(map(str, header))[:200]})",
                             f"pass {flag} COLUMN naming the column with the {what} text")
    out = []
    for i, r in enumerate(rows):
        v = r.get(column)
        out.append("" if v is None else str(v))
    return out


def _check_targets(path: Path, rows, targets: list[str]) -> None:
    empty = [i for i, t in enumerate(targets) if not t.strip()]
    if empty:
        lines = getattr(rows, "lines", None)
        where = f"line {lines[empty[0]]}" if lines else f"row {empty[0] + 1}"
        raise ProbscaleError(f"{path}: {len(empty)} of {len(targets)} rows have an empty target (first at {where})",
                             "fill in every target, or remove those rows")


def read_pairs(path, text_column: str = "text", target_column: str = "target") -> Pairs:
    """(source, target) pairs from a CSV / TSV / JSONL file; one-line errors for a missing column or empty target."""
    from probscale_edge.data import _read_table

    path = Path(path)
    rows = _read_table(path)
    if not rows:
        raise ProbscaleError(f"{path} has no rows", "give a file with a header and (source, target) rows")
    sources = _column_values(rows, path, text_column, "source", "--text-column")
    targets = _column_values(rows, path, target_column, "target", "--target-column")
    _check_targets(path, rows, targets)
    return Pairs(sources, [t.strip() for t in targets])


def _split(pairs: Pairs, fraction: float = EVAL_FRACTION, seed: int = SPLIT_SEED) -> tuple[Pairs, Pairs]:
    idx = list(range(len(pairs)))
    random.Random(seed).shuffle(idx)
    n_eval = max(1, int(round(len(idx) * fraction)))
    return pairs.subset(sorted(idx[n_eval:])), pairs.subset(sorted(idx[:n_eval]))


def choose_metric(train: Pairs, eval_: Pairs) -> tuple[str, list | None]:
    words = sorted(set(train.targets))
    if len(words) <= MAX_LABEL_WORDS and set(eval_.targets) <= set(words):
        return "exact_match", words
    return "chrf", None


def load_pairs_task(spec: str, eval_path=None, text_column="text", target_column="target", max_train=None,
                    max_eval=None, log=None) -> PairTask:
    """A built-in task (framed) or a local file of pairs, with train and eval splits (capped, seeded)."""
    from probscale_edge.assets import BUILTIN_TASKS

    if spec in BUILTIN_TASKS:
        task = frame_builtin(spec, max_train, log)
    else:
        if not Path(spec).exists():
            raise ProbscaleError(f"data file {spec} does not exist",
                                 f"pass a CSV/TSV/JSONL file of pairs or a built-in task ({', '.join(BUILTIN_TASKS)})")
        full = read_pairs(spec, text_column, target_column)
        if eval_path:
            train, ev = full, read_pairs(eval_path, text_column, target_column)
        else:
            train, ev = _split(full)
        metric, words = choose_metric(train, ev)
        task = PairTask(Path(spec).stem, train, ev, metric, words,
                        {"builtin": False, "train_file": str(spec), "eval_file": str(eval_path) if eval_path else None,
                         "text_column": text_column, "target_column": target_column})
        if max_train and len(task.train) > max_train:
            task.train = task.train.subset(sorted(random.Random(SPLIT_SEED).sample(range(len(task.train)), max_train)))
    if max_eval and len(task.eval) > max_eval:
        task.eval = task.eval.subset(sorted(random.Random(SPLIT_SEED).sample(range(len(task.eval)), max_eval)))
    if len(task.eval) < MIN_EVAL:
        raise ProbscaleError(f"the eval split of {spec} has {len(task.eval)} pairs, fewer than {MIN_EVAL}",
                             f"give more rows, or an --eval file with at least {MIN_EVAL} pairs")
    return task


# ---------------------------------------------------------------------------------------------- metrics
def exact_match(preds, refs) -> float:
    if not refs:
        return float("nan")
    return sum(p.strip() == r.strip() for p, r in zip(preds, refs)) / len(refs)


def _char_ngrams(text: str, n: int) -> Counter:
    s = "".join(text.split())  # sacrebleu's chrF ignores whitespace
    return Counter(s[i:i + n] for i in range(len(s) - n + 1))


def chrf(preds, refs, order: int = 6, beta: float = 2.0) -> float:
    """Corpus chrF in [0, 1]: per n, precision and recall from n-gram matches summed over the corpus, averaged
    over the orders n = 1..``order`` that occur in both, combined as F-beta (Popović 2015; see the module doc)."""
    if not refs:
        return float("nan")
    match = [0] * order
    hyp = [0] * order
    ref = [0] * order
    for p, r in zip(preds, refs):
        for n in range(1, order + 1):
            hp, rp = _char_ngrams(p, n), _char_ngrams(r, n)
            match[n - 1] += sum((hp & rp).values())
            hyp[n - 1] += sum(hp.values())
            ref[n - 1] += sum(rp.values())
    precs, recs = [], []
    for n in range(order):
        if hyp[n] and ref[n]:  # effective order: n-gram sizes that occur at all
            precs.append(match[n] / hyp[n])
            recs.append(match[n] / ref[n])
    if not precs:
        return 0.0
    p, r = sum(precs) / len(precs), sum(recs) / len(recs)
    if p + r == 0:
        return 0.0
    b2 = beta * beta
    return (1 + b2) * p * r / (b2 * p + r)


def score(metric: str, preds, refs) -> float:
    if metric not in METRICS:
        raise ProbscaleError(f"unknown text-to-text metric {metric!r}", f"use {' or '.join(METRICS)}")
    return exact_match(preds, refs) if metric == "exact_match" else chrf(preds, refs)


# ---------------------------------------------------------------------------------------------- tokenizer
def train_tokenizer(texts, vocab_size: int = 4000, lowercase: bool = True):
    """A Unigram tokenizer (``tokenizers``) trained on ``texts``, T5-style: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2,
    Metaspace pre-tokenizer, ``</s>`` appended to every encoding. Returns a transformers PreTrainedTokenizerFast
    (save_pretrained writes tokenizer.json, which is what the runtime reads)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    norm = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    tok.normalizer = normalizers.Sequence(norm)
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS), unk_token="<unk>",
                                      show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", tok.token_to_id("</s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_input_names=["input_ids", "attention_mask"])
    assert [fast.pad_token_id, fast.eos_token_id, fast.unk_token_id] == [0, 1, 2]
    return fast


# ---------------------------------------------------------------------------------------------- torch side
def target_length(tokenizer, targets, cap: int = 64) -> int:
    """Tokens the longest target takes (its eos included), capped: how many tokens generation may need."""
    enc = tokenizer(list(targets[:4096]), truncation=True, max_length=cap)
    return max(len(x) for x in enc["input_ids"])


def _encode(tokenizer, pairs: Pairs, max_length: int, max_target: int):
    src = tokenizer(list(pairs.sources), truncation=True, max_length=max_length)["input_ids"]
    tgt = tokenizer(list(pairs.targets), truncation=True, max_length=max_target)["input_ids"]
    return src, tgt


def _pad(rows, value):
    import torch

    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def _batches(lengths, batch_size, rng):
    """Shuffled batches of similar source lengths (buckets of 50 batches)."""
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    out = []
    for s in range(0, len(idx), batch_size * 50):
        chunk = sorted(idx[s:s + batch_size * 50], key=lambda i: lengths[i])
        out += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(out)
    return out


def generate_texts(model, tokenizer, sources, max_new_tokens: int, max_length: int = 128, batch_size: int = 64):
    """Greedy outputs of a PyTorch T5 (transformers' ``generate``), decoded without special tokens."""
    import torch

    from probscale_edge.converters.seq2seq import fresh_cache

    model.eval()
    dev = next(model.parameters()).device  # where the model is (training moves it to the accelerator)
    out = [None] * len(sources)
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            enc = tokenizer([sources[i] for i in idx], truncation=True, max_length=max_length, padding=True,
                            return_tensors="pt").to(dev)
            ids = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], do_sample=False,
                                 max_new_tokens=max_new_tokens, num_beams=1, cache=fresh_cache())
            for i, text in zip(idx, tokenizer.batch_decode(ids, skip_special_tokens=True)):
                out[i] = text.strip()
    return out


def evaluate(model, tokenizer, pairs: Pairs, metric: str, max_new_tokens: int, max_length: int = 128) -> float:
    return score(metric, generate_texts(model, tokenizer, pairs.sources, max_new_tokens, max_length), pairs.targets)


@dataclass(frozen=True)
class Seq2SeqTrain:
    """The recipe of :func:`train_seq2seq` (the teacher's from FinetuneConfig, the student's from RecoverConfig)."""

    epochs: float = 3.0
    lr: float = 5e-4
    batch_size: int = 32
    warmup: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 128
    max_target: int = 16
    seed: int = 0
    temperature: float = 2.0
    alpha: float = 1.0  # weight of the cross-entropy on the targets; 1 - alpha on the teacher's soft tokens
    eval_every: float = 0.5  # epochs between dev scores (with a dev split)
    patience: int = 3


def _loss(model, teacher, batch, cfg: Seq2SeqTrain):
    """Cross-entropy on the target tokens, plus with a teacher the token-level KL to its softened distribution."""
    import torch
    import torch.nn.functional as F

    dev = next(model.parameters()).device
    ids, mask, labels = (t.to(dev) for t in batch)
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    if teacher is None or cfg.alpha >= 1:
        return out.loss
    with torch.no_grad():
        t_logits = teacher(input_ids=ids, attention_mask=mask, labels=labels).logits
    keep = labels != -100
    T = cfg.temperature
    s = F.log_softmax(out.logits[keep] / T, -1)
    t = F.log_softmax(t_logits[keep] / T, -1)
    kd = F.kl_div(s, t, log_target=True, reduction="batchmean") * T * T
    return cfg.alpha * out.loss + (1 - cfg.alpha) * kd


class _Stopper:
    """Keeps the best weights by the dev metric; ``stop`` after ``patience`` scores without gain."""

    def __init__(self, patience):
        self.best, self.state, self.bad, self.patience, self.history = -1.0, None, 0, patience, []

    def update(self, model, value, epoch) -> bool:
        self.history.append({"epoch": round(epoch, 3), "dev": value})
        if value > self.best + 1e-9:
            self.best, self.bad = value, 0
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.bad += 1
        return self.bad >= self.patience


def train_seq2seq(model, tokenizer, train: Pairs, cfg: Seq2SeqTrain, teacher=None, dev: Pairs | None = None,
                  metric: str = "exact_match", log=None) -> dict:
    """Fine-tune (no teacher) or distil (a teacher: token-level KL at ``temperature`` with weight 1 - alpha) a T5
    on ``train``; with ``dev``, every ``eval_every`` epochs the greedy outputs on ``dev`` are scored by ``metric``,
    the best weights are kept and training stops after ``patience`` scores without gain. Returns a report."""
    import math
    import time

    import torch

    from probscale_edge import distributed as dist

    log = log or (lambda *_: None)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    src, tgt = _encode(tokenizer, train, cfg.max_length, cfg.max_target)
    per_epoch = math.ceil(len(src) / cfg.batch_size)
    total = max(1, int(round(per_epoch * cfg.epochs)))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    warm = int(cfg.warmup * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, warm) if s < warm else max(0.0, (total - s) / max(1, total - warm)))
    every = max(1, int(round(cfg.eval_every * per_epoch))) if dev is not None else None
    stopper, step, losses, t0 = _Stopper(cfg.patience), 0, [], time.time()
    if teacher is not None:
        teacher.eval()
    with dist.on_device(model), (dist.on_device(teacher) if teacher is not None else contextlib.nullcontext()):
        _loop(model, tokenizer, teacher, src, tgt, cfg, (opt, sched), (per_epoch, total, every), dev, metric,
              (stopper, losses, t0), rng, log)
    model.eval()
    return {"steps": len(losses), "epochs_run": round(len(losses) / per_epoch, 3),
            "final_loss": losses[-1] if losses else None, "dev_history": stopper.history,
            "best_dev": stopper.best if stopper.history else None, "seconds": round(time.time() - t0, 1)}


def _loop(model, tokenizer, teacher, src, tgt, cfg, optim, counts, dev, metric, state, rng, log):
    """The steps of :func:`train_seq2seq` (the model already on its device); loads the best dev weights."""
    import time

    import torch

    opt, sched = optim
    per_epoch, total, every = counts
    stopper, losses, t0 = state
    step = 0
    while step < total:
        for b in _batches([len(s) for s in src], cfg.batch_size, rng):
            model.train()
            labels = _pad([tgt[i] for i in b], -100)
            ids = _pad([src[i] for i in b], tokenizer.pad_token_id)
            loss = _loss(model, teacher, (ids, (ids != tokenizer.pad_token_id).long(), labels), cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            losses.append(float(loss.detach()))
            if not every and step % per_epoch == 0:
                log(f"  epoch {step // per_epoch}: loss {sum(losses[-per_epoch:]) / per_epoch:.4f} "
                    f"({time.time() - t0:.0f} s)")
            if every and (step % every == 0 or step == total):
                value = evaluate(model, tokenizer, dev, metric, cfg.max_target + 1, cfg.max_length)
                log(f"  step {step}/{total}: loss {sum(losses[-every:]) / len(losses[-every:]):.4f}, dev {metric} {value:.4f}")
                if stopper.update(model, value, step / per_epoch):
                    step = total
            if step >= total:
                break
    if stopper.state is not None:
        model.load_state_dict(stopper.state)


# ---------------------------------------------------------------------------------------------- probes
def _first_token_labels(tokenizer, targets) -> list[int]:
    ids = tokenizer(list(targets), truncation=True, max_length=8)["input_ids"]
    return [r[0] if r else tokenizer.eos_token_id for r in ids]


def layer_features(model, tokenizer, sources, max_length: int = 128, batch_size: int = 64):
    """Per hidden state, one feature row per source: the encoder's mean-pooled states (the embeddings, then each
    block) and the decoder's state at its first position (the start token's embedding, then each block), the
    position that predicts the target's first token. -> (encoder [L_e + 1, n, d], decoder [L_d + 1, n, d])."""
    import numpy as np
    import torch

    model.eval()
    enc_rows, dec_rows = [], []
    start = model.config.decoder_start_token_id
    with torch.no_grad():
        for s in range(0, len(sources), batch_size):
            enc = tokenizer(list(sources[s:s + batch_size]), truncation=True, max_length=max_length, padding=True,
                            return_tensors="pt")
            dec = torch.full((enc["input_ids"].shape[0], 1), start, dtype=torch.long)
            out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], decoder_input_ids=dec, output_hidden_states=True)
            m = enc["attention_mask"].unsqueeze(-1).float()
            enc_rows.append(np.stack([((h * m).sum(1) / m.sum(1).clamp(min=1)).numpy()
                                      for h in out.encoder_hidden_states]))
            dec_rows.append(np.stack([h[:, 0].numpy() for h in out.decoder_hidden_states]))
    return np.concatenate(enc_rows, axis=1), np.concatenate(dec_rows, axis=1)


def probe_curves(model, tokenizer, pairs: Pairs, max_examples: int = 1500, folds: int = 3, seed: int = 0,
                 max_length: int = 128) -> dict:
    """Linear-probe accuracy of the target's first token from every encoder and decoder hidden state
    (cross-validated logistic regression, as the encoder probes). Index 0 of each curve is the embeddings."""
    import numpy as np

    from probscale_edge.probe import probe_accuracy

    idx = list(range(len(pairs)))
    random.Random(seed).shuffle(idx)
    sample = pairs.subset(sorted(idx[:max_examples]))
    first = _first_token_labels(tokenizer, sample.targets)
    counts = Counter(first)
    keep = [i for i, y in enumerate(first) if counts[y] >= 2]  # a probe class needs 2 examples to cross-validate
    if len(keep) < 4 or len({first[i] for i in keep}) < 2:
        flat = [1.0] * (len(model.encoder.block) + 1)
        return {"encoder": flat, "decoder": [1.0] * (len(model.decoder.block) + 1), "examples": len(keep),
                "note": "fewer than two first-token classes with 2+ examples: flat curves"}
    classes = sorted({first[i] for i in keep})
    y = np.array([classes.index(first[i]) for i in keep])
    enc, dec = layer_features(model, tokenizer, [sample.sources[i] for i in keep], max_length)
    return {"encoder": [probe_accuracy(f, y, folds, seed) for f in enc],
            "decoder": [probe_accuracy(f, y, folds, seed) for f in dec],
            "examples": len(keep), "classes": len(classes)}


def weighted_curves(curves: list[dict], weights: list[float]) -> dict:
    """Task-weighted mean of several tasks' probe curves (as for encoders)."""
    total = sum(weights)
    return {stack: [sum(w * c[stack][i] for c, w in zip(curves, weights)) / total
                    for i in range(len(curves[0][stack]))] for stack in ("encoder", "decoder")}


def spec_json(spec) -> str:
    return json.dumps(spec.to_dict(), sort_keys=True)
