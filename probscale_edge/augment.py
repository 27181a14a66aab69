"""Distillation data augmentation: more inputs for the teacher to label than the task's own examples.

A pruned student fits a small labelled set in a few hundred steps and then stops improving (its dev
accuracy peaks early). Distillation does not need labels, only inputs the teacher can score, so
each training example is rewritten into ``copies`` perturbed variants (Tang et al. 2019, "Distilling
task-specific knowledge from BERT into simple neural networks"; TinyBERT's augmentation does the
same with an MLM):

- each word, with probability ``p_mask``, becomes the tokenizer's mask token;
- otherwise, with probability ``p_swap``, one of its nearest neighbours: words of the task's own
  training text ranked by cosine similarity of the teacher's input word embeddings (the mean over a
  word's pieces). Staying inside the task's words keeps a trimmed vocabulary closed over the new text;
- with probability ``p_span`` the variant keeps only a random contiguous span of its words.

A neighbour may flip the label ("good" -> "bad"); that is the point: the teacher's logits, not the
source's label, are the target of an augmented row. Augmented rows carry label -1 (no hard label).
Deterministic for a given seed. Text pairs are perturbed side by side (spans are not cut in pairs).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from probscale_edge.errors import ProbscaleError

_WORD = re.compile(r"^[^\W\d_]{2,}$")  # alphabetic words of 2+ letters: candidates to replace and replacements


@dataclass
class AugmentConfig:
    copies: int = 4
    p_mask: float = 0.1
    p_swap: float = 0.15
    p_span: float = 0.25
    neighbours: int = 10
    min_count: int = 2  # a replacement word must occur this often in the training text
    seed: int = 0


@dataclass
class AugmentReport:
    copies: int
    source_rows: int
    added_rows: int
    vocabulary: int  # words with neighbours
    changed_fraction: float  # augmented rows that differ from their source
    sample_neighbours: dict = field(default_factory=dict)


def word_neighbours(words, embed, k: int = 10, chunk: int = 2048) -> dict[str, list[str]]:
    """``k`` nearest words of each word by cosine similarity of ``embed(words)`` (one row per word)."""
    import torch

    words = list(words)
    if len(words) < 2:
        return {}
    v = torch.as_tensor(np.asarray(embed(words), dtype=np.float32))
    v = v / v.norm(dim=1, keepdim=True).clamp(min=1e-8)
    k = min(k, len(words) - 1)
    out = {}
    for s in range(0, len(words), chunk):
        sim = v[s:s + chunk] @ v.T
        sim[torch.arange(sim.shape[0]), torch.arange(s, s + sim.shape[0])] = -2.0  # not itself
        top = sim.topk(k, dim=1).indices.numpy()
        for r, row in enumerate(top):
            out[words[s + r]] = [words[j] for j in row]
    return out


def embedding_of_words(model, tokenizer):
    """A function words -> mean input-embedding of each word's pieces (the model's word embedding)."""
    import torch

    table = model.adapter.word_embeddings(model.encoder)

    def embed(words):
        ids = tokenizer(list(words), add_special_tokens=False)["input_ids"]
        dev = next(table.parameters()).device
        with torch.no_grad():  # the module, not its weight: a factorized table is a product of two
            return np.stack([table(torch.tensor(p or [tokenizer.unk_token_id], device=dev)).float().mean(0).cpu().numpy()
                             for p in ids])

    return embed


def _perturb(words, rng: random.Random, cfg: AugmentConfig, neighbours, mask_token, span: bool):
    out = []
    for w in words:
        r = rng.random()
        if mask_token and r < cfg.p_mask:
            out.append(mask_token)
        elif r < cfg.p_mask + cfg.p_swap and w.lower() in neighbours:
            out.append(rng.choice(neighbours[w.lower()]))
        else:
            out.append(w)
    if span and len(out) > 2 and rng.random() < cfg.p_span:
        n = rng.randint(1, len(out) - 1)
        s = rng.randint(0, len(out) - n)
        out = out[s:s + n]
    return " ".join(out)


def augment_texts(texts, pairs, cfg: AugmentConfig, neighbours: dict, mask_token: str | None):
    """``cfg.copies`` perturbed variants of every text (and pair) -> (texts, pairs, source index)."""
    if cfg.copies < 1:
        raise ProbscaleError(f"augmentation copies {cfg.copies} must be at least 1", "pass e.g. --augment 4, or leave it off")
    rng = random.Random(cfg.seed)
    new_t, new_p, src = [], [] if pairs is not None else None, []
    for _ in range(cfg.copies):
        for i, t in enumerate(texts):
            new_t.append(_perturb(t.split(), rng, cfg, neighbours, mask_token, span=pairs is None))
            if pairs is not None:
                new_p.append(_perturb(pairs[i].split(), rng, cfg, neighbours, mask_token, span=False))
            src.append(i)
    return new_t, new_p, src


def task_vocabulary(texts, min_count: int) -> list[str]:
    """Lower-cased alphabetic words of ``texts`` that occur at least ``min_count`` times, most common first."""
    c = Counter(w.lower() for t in texts for w in t.split() if _WORD.match(w))
    return [w for w, n in c.most_common() if n >= min_count]


class Augmenter:
    """The teacher side of augmented distillation: perturbs a split and labels the new rows with the teacher."""

    def __init__(self, teacher, teacher_tokenizer, cfg: AugmentConfig, max_length: int = 128, log=None):
        self.teacher, self.tokenizer, self.cfg, self.max_length = teacher, teacher_tokenizer, cfg, max_length
        self.log = log or (lambda m: None)

    def expand(self, split, teacher_logits):
        """``split`` plus ``cfg.copies`` variants of each row (label -1), and the teacher's logits for all rows."""
        from probscale_edge.data import Split
        from probscale_edge.modeling import predict_logits

        texts = split.texts + (split.pairs or [])
        vocab = task_vocabulary(texts, self.cfg.min_count)
        neighbours = word_neighbours(vocab, embedding_of_words(self.teacher, self.tokenizer), self.cfg.neighbours)
        mask = getattr(self.tokenizer, "mask_token", None)
        at, ap, src = augment_texts(split.texts, split.pairs, self.cfg, neighbours, mask)
        changed = sum(a != split.texts[s] or (ap is not None and ap[j] != split.pairs[s])
                      for j, (a, s) in enumerate(zip(at, src)))
        self.log(f"  augmentation: {len(at):,} rows ({self.cfg.copies} per example, {changed / max(1, len(at)):.0%} "
                 f"changed), labelled by the teacher ...")
        aug_logits = predict_logits(self.teacher, self.tokenizer, at, ap, max_length=self.max_length)
        out = Split(split.texts + at, list(split.labels) + [-1] * len(at),
                    (split.pairs + ap) if split.pairs is not None else None)
        logits = np.concatenate([np.asarray(teacher_logits, dtype=np.float32), aug_logits])
        sample = {w: neighbours[w][:5] for w in [w for w in vocab if len(w) >= 4][:5]}  # for the manifest
        rep = AugmentReport(self.cfg.copies, len(split), len(at), len(neighbours), changed / max(1, len(at)), sample)
        return out, logits, rep
