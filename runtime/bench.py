"""Benchmark a bundle in the conventions of TFLite's benchmark_model and onnxruntime_perf_test.

Reports init time, first inference, warm-up, runs, mean/std/min/max/p50/p90/p95/p99 latency at a
fixed batch size, peak RSS, model bytes, threads, backend and (optionally) accuracy. No torch.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from probscale_edge.errors import ProbscaleError
from probscale_edge.runtime.bundle import MAX_LENGTH, MIN_LENGTH
from probscale_edge.runtime.predictor import BACKENDS

SCHEMA = "probscale-edge.bench/1"
MAX_BATCH_SIZE = 4096
MAX_RUNS = 1_000_000
MAX_BATCH_TOKENS = 1 << 17  # batch size x sequence length of one timed call: bounds the session's activations


def _whole(name: str, v, lo: int, hi: int | None, fix: str, optional: bool = False):
    if v is None and optional:
        return
    ok = isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi)
    if not ok:
        span = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ProbscaleError(f"{name} {v!r} is not a whole number {span}", fix)


@dataclass
class BenchConfig:
    warmup_runs: int = 10
    num_runs: int = 100
    batch_size: int = 1
    threads: int | None = None
    backend: str | None = None
    sequence_length: int | None = None  # pad/cut every input to this many tokens; None = natural length
    texts: list = field(default_factory=list)  # latency inputs (cycled); default: a fixed sentence

    def __post_init__(self):
        """Refuse settings that cannot be measured (one ProbscaleError line; the CLI's option names in the fix)."""
        _whole("batch size", self.batch_size, 1, MAX_BATCH_SIZE,
               f"pass --batch-size between 1 and {MAX_BATCH_SIZE} (larger batches do not fit a device's memory)")
        _whole("number of runs", self.num_runs, 1, MAX_RUNS, f"pass --num-runs between 1 and {MAX_RUNS}")
        _whole("number of warm-up runs", self.warmup_runs, 0, MAX_RUNS, f"pass --warmup-runs between 0 and {MAX_RUNS}")
        _whole("threads", self.threads, 1, None, "pass --threads 1 or more, or leave it out for the runtime's default",
               optional=True)
        _whole("sequence length", self.sequence_length, MIN_LENGTH, MAX_LENGTH,
               f"pass --sequence-length between {MIN_LENGTH} and the bundle's max length, or leave it out", optional=True)
        if self.backend is not None and self.backend not in BACKENDS:
            raise ProbscaleError(f"unknown backend {self.backend!r}", f"use {' or '.join(BACKENDS)}")
        if not isinstance(self.texts, (list, tuple)) or not all(isinstance(t, str) for t in self.texts):
            raise ProbscaleError("benchmark texts are not a list of strings", "pass texts=[\"...\", ...]")


def check_max_eval(max_eval):
    """``--max-eval``: None (every eval example) or a whole number >= 1; returns it."""
    _whole("--max-eval", max_eval, 1, None, "pass --max-eval 1 or more, leave it out for every example, "
           "or pass --no-accuracy", optional=True)
    return max_eval


def _rss_peak_bytes() -> int | None:
    try:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(kb * (1 if platform.system() == "Darwin" else 1024))
    except Exception:  # noqa: BLE001
        return None


def _rss_now() -> int | None:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001
        return None


def percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms, dtype=np.float64)
    return {"mean_ms": float(a.mean()), "std_ms": float(a.std()), "min_ms": float(a.min()), "max_ms": float(a.max()),
            **{f"p{q}_ms": float(np.percentile(a, q)) for q in (50, 90, 95, 99)}}


DEFAULT_TEXT = ("the film is a quiet, patient character study that rewards attention, although its final act "
                "leans on coincidence more than it should")


def _widest(pred, texts) -> int:
    """Tokens in the longest of ``texts`` (after truncation), encoded in chunks."""
    if pred.fixed_length:
        return int(pred.fixed_length)
    enc = getattr(pred.tokenizer, "encode_batch_fast", pred.tokenizer.encode_batch)
    return max(max(len(e.ids) for e in enc(texts[i:i + 1024])) for i in range(0, len(texts), 1024))


def bench_bundle(bundle, cfg: BenchConfig | None = None, eval_texts=None, eval_labels=None, eval_pairs=None,
                 public_key=None) -> dict:
    """Benchmark ``bundle`` (verified first; ``public_key`` as in :class:`~probscale_edge.runtime.Predictor`)."""
    from probscale_edge.runtime.predictor import Predictor

    cfg = cfg or BenchConfig()
    rss0 = _rss_now()
    t0 = time.perf_counter()
    pred = Predictor(bundle, backend=cfg.backend, threads=cfg.threads, public_key=public_key)
    init_ms = (time.perf_counter() - t0) * 1000
    if getattr(pred, "generator", None) is not None:  # a text2text bundle: time to first token, tokens per second
        from probscale_edge.runtime.generate import bench_generate

        return bench_generate(pred, cfg, init_ms, rss0, eval_texts, eval_labels)
    texts = list(cfg.texts) or [DEFAULT_TEXT]
    if cfg.sequence_length:
        if cfg.sequence_length > pred.max_length:
            raise ProbscaleError(f"sequence length {cfg.sequence_length} is above the bundle's max length "
                                 f"{pred.max_length}", f"pass --sequence-length between {MIN_LENGTH} and {pred.max_length}")
        pred.fixed_length = cfg.sequence_length
        tok_ids = pred.tokenizer.encode(texts[0]).ids
        texts = [" ".join([texts[0]] * (1 + cfg.sequence_length // max(1, len(tok_ids))))]
    width = _widest(pred, texts)
    if cfg.batch_size * width > MAX_BATCH_TOKENS:
        raise ProbscaleError(f"batch size {cfg.batch_size} x {width} tokens is more than {MAX_BATCH_TOKENS} tokens "
                             "in one call", f"pass --batch-size {max(1, MAX_BATCH_TOKENS // width)} or less at "
                             f"{width} tokens, or a shorter --sequence-length")

    batch = _batcher(texts, cfg.batch_size)
    feed0, first_ms, warm, session_ms, e2e_ms = _time_runs(pred, cfg, batch)
    m = pred.manifest
    model_bytes = m["files"][pred.model_file]["bytes"] if pred.model_file in m["files"] else \
        (Path(bundle) / pred.model_file).stat().st_size
    out = {
        "schema": SCHEMA,
        "bundle": str(bundle),
        "backend": pred.backend_name,
        "model_file": pred.model_file,
        "precision": m["model"].get("precision"),
        "threads": cfg.threads,
        "batch_size": cfg.batch_size,
        "sequence_length": int(feed0["input_ids"].shape[1]),
        "warmup_runs": cfg.warmup_runs,
        "num_runs": cfg.num_runs,
        "init_ms": init_ms,
        "first_inference_ms": first_ms,
        "warmup_mean_ms": float(statistics.mean(warm)) if warm else None,
        "latency": percentiles(e2e_ms),
        "session_latency": percentiles(session_ms),
        "tokenize_overhead": float(np.median(e2e_ms) / np.median(session_ms) - 1),
        "model_bytes": model_bytes,
        "bundle_bytes": sum(f["bytes"] for f in m["files"].values()),
        "parameters": m.get("parameters", {}).get("pruned"),
        "rss_before_bytes": rss0,
        "peak_rss_bytes": _rss_peak_bytes(),
        "machine": {"system": platform.system(), "machine": platform.machine(), "cpus": os.cpu_count(),
                    "processor": platform.processor()},
    }
    if pred.embedding is not None:  # an embedding bundle: texts embedded per second at this batch size
        out["kind"] = "embed"
        out["embeddings_per_second"] = cfg.batch_size * 1000.0 / out["latency"]["p50_ms"]
        out["embedding_dimension"] = pred.embedding["dimension"]
    elif eval_texts is not None and eval_labels is not None:
        t = time.perf_counter()
        out["accuracy"] = pred.accuracy(eval_texts, eval_labels, eval_pairs, batch_size=32)
        out["eval_examples"] = len(eval_labels)
        out["eval_seconds"] = time.perf_counter() - t
    return out


def write_json(result, path) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".part")
    tmp.write_text(json.dumps(result, indent=2, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o)))
    os.replace(tmp, p)


def _batcher(texts, batch_size):
    def batch(i):  # the i-th timed batch, made when it is needed (never num_runs x batch_size texts at once)
        return [texts[(i * batch_size + j) % len(texts)] for j in range(batch_size)]

    return batch


def _time_runs(pred, cfg: BenchConfig, batch):
    """First inference, warm-up, then the timed runs: session time and end to end (tokenize + post-process)."""
    feed0 = pred.encode(batch(0))
    t = time.perf_counter()
    pred.backend.run(feed0)
    first_ms = (time.perf_counter() - t) * 1000
    warm = []
    for i in range(cfg.warmup_runs):
        t = time.perf_counter()
        pred.backend.run(pred.encode(batch(i % cfg.num_runs)))
        warm.append((time.perf_counter() - t) * 1000)
    session_ms, e2e_ms = [], []
    for i in range(cfg.num_runs):
        b = batch(i)
        t = time.perf_counter()
        feed = pred.encode(b)
        t1 = time.perf_counter()
        lg = pred.backend.run(feed)
        t2 = time.perf_counter()
        if pred.embedding is not None:  # an embedding bundle: pooling and normalization are its post-processing
            _ = pred.embed_outputs(lg, feed["attention_mask"])
        else:
            _ = [pred.labels[int(i)] for i in np.argmax(lg, -1)]
        t3 = time.perf_counter()
        session_ms.append((t2 - t1) * 1000)
        e2e_ms.append((t3 - t) * 1000)
    return feed0, first_ms, warm, session_ms, e2e_ms
