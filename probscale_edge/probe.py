"""Probe: a linear probe on each layer's pooled representation, for one or more weighted tasks.

Output is a :class:`ProbeReport` (plain data): for each task and each hidden state (index 0 is the
embedding output, index l the output of layer l), the cross-validated accuracy of a logistic
regression on frozen, pooled features; and the task-weighted average across tasks.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from probscale_edge.config import ProbeConfig
from probscale_edge.data import stratified_sample
from probscale_edge.specs import ProbeReport

__all__ = ["ProbeConfig", "ProbeReport", "ProbeSettings", "probe_layers"]


@dataclass(frozen=True)
class ProbeSettings:
    """What the probe functions read: :class:`~probscale_edge.config.ProbeConfig` plus the shared values
    they need (derived by :meth:`of`, never set twice by hand)."""

    max_examples: int = 1500  # per task, a stratified sample of the train split
    pooling: str = "mean"  # mean | cls
    folds: int = 3  # cross-validation folds of the probe
    max_length: int = 128
    batch_size: int = 64
    seed: int = 0

    @classmethod
    def of(cls, cfg: ProbeConfig, pooling: str, max_length: int, seed: int) -> "ProbeSettings":
        return cls(cfg.probe_examples, pooling, cfg.probe_folds, max_length, cfg.probe_batch_size, seed)


def _pool(h, mask, pooling):
    if pooling == "cls":
        return h[:, 0]
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)


def extract_features(model, tokenizer, texts, pairs, cfg: ProbeSettings, progress=None) -> np.ndarray:
    """Pooled features of every hidden state: array [num_hidden_states, n, hidden].

    Inside ``distributed.collective()`` under ``torchrun``, each rank extracts a shard on its
    device and every rank gets all of them."""
    from probscale_edge import distributed as dist

    def part(start, stop):
        with dist.on_device(model):
            return _extract(model, tokenizer, list(texts[start:stop]), list(pairs[start:stop]) if pairs else None,
                            cfg, progress)

    return dist.sharded_map(len(texts), part, axis=1)


@torch.no_grad()
def _extract(model, tokenizer, texts, pairs, cfg: ProbeSettings, progress=None) -> np.ndarray:
    from probscale_edge.modeling import tokenize

    model.eval()
    dev = next(model.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    feats = None
    for s in range(0, len(order), cfg.batch_size):
        idx = order[s:s + cfg.batch_size]
        enc = tokenize(tokenizer, [texts[i] for i in idx], [pairs[i] for i in idx] if pairs else None, cfg.max_length)
        enc = {k: v.to(dev) for k, v in enc.items()}
        hs = model.hidden_states(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))
        pooled = torch.stack([_pool(h, enc["attention_mask"], cfg.pooling) for h in hs]).float().cpu().numpy()
        if feats is None:
            feats = np.zeros((pooled.shape[0], len(texts), pooled.shape[2]), dtype=np.float32)
        feats[:, idx] = pooled
        if progress:
            progress(len(idx))
    return feats


def probe_accuracy(features: np.ndarray, labels, folds: int = 3, seed: int = 0) -> float:
    """Cross-validated accuracy of a logistic-regression probe on one feature matrix."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(labels)
    min_class = np.bincount(y).min() if len(y) else 0
    k = max(2, min(folds, int(min_class))) if min_class >= 2 else 2
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=0.5))
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(clf, features, y, cv=cv)))


def probe_sample(task, cfg: ProbeSettings):
    idx = stratified_sample(task.train.labels, cfg.max_examples, seed=cfg.seed)
    s = task.train.subset(idx)
    return s.texts, s.pairs, s.labels


def features_key(model_key: str, texts, pairs, cfg: ProbeSettings) -> str:
    """Content hash of what the features depend on: the model, the exact texts, pooling and length."""
    import hashlib
    import json

    h = hashlib.sha256()
    h.update(json.dumps(["features-v1", model_key, cfg.pooling, cfg.max_length]).encode())
    for i, t in enumerate(texts):
        h.update(str(t).encode("utf-8", "surrogatepass") + b"\x00")
        if pairs:
            h.update(str(pairs[i]).encode("utf-8", "surrogatepass") + b"\x00")
        h.update(b"\x01")
    return h.hexdigest()[:32]


def cached_features(model, tokenizer, texts, pairs, cfg: ProbeSettings, cache=None, model_key: str | None = None,
                    progress=None):
    """:func:`extract_features`, stored under ``cache`` by content hash (``model_key`` names the model's
    weights): a repeat build on the same model and texts skips extraction. -> (features, from_cache)."""
    import os
    from pathlib import Path

    if cache is None or model_key is None:
        return extract_features(model, tokenizer, texts, pairs, cfg, progress=progress), False
    path = Path(cache) / f"{features_key(model_key, texts, pairs, cfg)}.npy"
    digest = path.with_suffix(".sha256")  # written with the features, checked before they are used
    if path.exists():
        from probscale_edge.runtime.bundle import sha256_file

        try:
            ok = digest.read_text().split()[0] == sha256_file(path)
            feats = np.load(path, allow_pickle=False) if ok else None
            if feats is not None and feats.ndim == 3 and feats.shape[1] == len(texts):
                return feats, True
        except (OSError, ValueError, IndexError):
            pass
        for f in (path, digest):  # damaged (or written before checksums): moved aside, recomputed
            if f.exists():
                f.replace(f.with_name(f".bad-{f.name}"))
    feats = extract_features(model, tokenizer, texts, pairs, cfg, progress=progress)
    from probscale_edge import distributed as dist

    if dist.is_main():
        try:
            from probscale_edge.runtime.bundle import sha256_file

            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.npy")
            np.save(tmp, feats)
            digest.write_text(f"{sha256_file(tmp)}  {path.name}\n")
            os.replace(tmp, path)
        except OSError:
            pass  # a full or read-only cache only costs the next build the extraction
    return feats, False


def probe_layers(model, tokenizer, tasks, weights, cfg: ProbeSettings | None = None, progress=None, cache=None,
                 model_key: str | None = None) -> ProbeReport:
    """Probe every hidden state of ``model`` for every task; weights are normalised to sum to 1.

    With ``cache`` and ``model_key``, pooled features are cached by content hash (see :func:`cached_features`)."""
    cfg = cfg or ProbeSettings()
    wsum = float(sum(weights))
    out, weighted = [], None
    for task, w in zip(tasks, weights):
        texts, pairs, labels = probe_sample(task, cfg)
        feats, hit = cached_features(model, tokenizer, texts, pairs, cfg, cache, model_key, progress)
        accs = [probe_accuracy(f, labels, cfg.folds, cfg.seed) for f in feats]
        out.append({"name": task.name, "weight": w / wsum, "layer_accuracy": accs, "examples": len(texts),
                    "features_cached": hit})
        arr = np.asarray(accs) * (w / wsum)
        weighted = arr if weighted is None else weighted + arr
    return ProbeReport(out, [float(x) for x in weighted], asdict(cfg))


@contextlib.contextmanager
def composed(model, keep_layers):
    """Temporarily run ``model`` with only ``keep_layers`` (no copy for families without side effects)."""
    adapter = model.adapter
    enc = model.encoder
    from probscale_edge.adapters.base import Adapter

    if type(adapter).keep_layers is not Adapter.keep_layers:  # adapter with custom surgery (T5)
        m = copy.deepcopy(model)
        adapter.keep_layers(m.encoder, list(keep_layers))
        yield m
        return
    old = adapter.layers(enc)
    old_n = getattr(enc.config, adapter.num_layers_key)
    import torch.nn as nn

    adapter.set_module(enc, adapter.layers_path, nn.ModuleList([old[i] for i in keep_layers]))
    setattr(enc.config, adapter.num_layers_key, len(keep_layers))
    try:
        yield model
    finally:
        adapter.set_module(enc, adapter.layers_path, old)
        setattr(enc.config, adapter.num_layers_key, old_n)


def probe_subnetwork(model, tokenizer, tasks, weights, keep_layers, cfg: ProbeSettings, samples=None) -> float:
    """Task-weighted probe accuracy on the *output of the composed subnetwork* (not a sum of layer scores)."""
    wsum = float(sum(weights))
    total = 0.0
    with composed(model, keep_layers) as m:
        for ti, (task, w) in enumerate(zip(tasks, weights)):
            texts, pairs, labels = samples[ti] if samples else probe_sample(task, cfg)
            feats = extract_features(m, tokenizer, texts, pairs, cfg)[-1]
            total += (w / wsum) * probe_accuracy(feats, labels, cfg.folds, cfg.seed)
    return total
