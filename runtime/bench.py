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

SCHEMA = "probscale-edge.bench/1"


@dataclass
class BenchConfig:
    warmup_runs: int = 10
    num_runs: int = 100
    batch_size: int = 1
    threads: int | None = None
    backend: str | None = None
    sequence_length: int | None = None  # pad/cut every input to this many tokens; None = natural length
    texts: list = field(default_factory=list)  # latency inputs (cycled); default: a fixed sentence


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


def bench_bundle(bundle, cfg: BenchConfig | None = None, eval_texts=None, eval_labels=None, eval_pairs=None) -> dict:
    from probscale_edge.runtime.predictor import Predictor

    cfg = cfg or BenchConfig()
    rss0 = _rss_now()
    t0 = time.perf_counter()
    pred = Predictor(bundle, backend=cfg.backend, threads=cfg.threads)
    init_ms = (time.perf_counter() - t0) * 1000
    texts = cfg.texts or [DEFAULT_TEXT]
    if cfg.sequence_length:
        pred.fixed_length = cfg.sequence_length
        tok_ids = pred.tokenizer.encode(texts[0]).ids
        texts = [" ".join([texts[0]] * (1 + cfg.sequence_length // max(1, len(tok_ids))))]
    batches = [[texts[(i * cfg.batch_size + j) % len(texts)] for j in range(cfg.batch_size)]
               for i in range(max(1, cfg.num_runs))]
    feed0 = pred.encode(batches[0])
    t = time.perf_counter()
    pred.backend.run(feed0)
    first_ms = (time.perf_counter() - t) * 1000
    warm = []
    for i in range(cfg.warmup_runs):
        t = time.perf_counter()
        pred.backend.run(pred.encode(batches[i % len(batches)]))
        warm.append((time.perf_counter() - t) * 1000)
    session_ms, e2e_ms = [], []
    for b in batches[: cfg.num_runs]:
        t = time.perf_counter()
        feed = pred.encode(b)
        t1 = time.perf_counter()
        lg = pred.backend.run(feed)
        t2 = time.perf_counter()
        _ = [pred.labels[int(i)] for i in np.argmax(lg, -1)]
        t3 = time.perf_counter()
        session_ms.append((t2 - t1) * 1000)
        e2e_ms.append((t3 - t) * 1000)
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
    if eval_texts is not None and eval_labels is not None:
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
