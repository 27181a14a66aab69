"""Concurrency: one Predictor shared by N Python threads vs one thread, same inputs, in one run.

    python benchmarks/concurrency.py BUNDLE [--texts 2000] [--json benchmarks/results/concurrency.json]

Prints a table (throughput, ratio to 1 thread, max |Δlogit| vs the 1-thread results) and writes JSON.
ONNX Runtime sessions are thread-safe for run(); each caller thread uses 1 intra-op thread here so the
comparison is about caller concurrency.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle")
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--workers", default="1,2,4,8")
    ap.add_argument("--json", default="benchmarks/results/concurrency.json")
    a = ap.parse_args(argv)
    from probscale_edge.data import load_task
    from probscale_edge.runtime import Predictor

    texts = load_task("rotten_tomatoes", max_train=1).eval.texts[: a.texts]
    p = Predictor(a.bundle, threads=1)
    t = time.perf_counter()
    base = np.concatenate([p.logits([x]) for x in texts])
    base_s = time.perf_counter() - t
    rows = [{"workers": 1, "seconds": base_s, "per_second": len(texts) / base_s, "ratio": 1.0, "max_abs_diff": 0.0,
             "labels_equal": True}]
    for w in [int(x) for x in a.workers.split(",") if int(x) > 1]:
        t = time.perf_counter()
        with ThreadPoolExecutor(max_workers=w) as ex:
            out = list(ex.map(lambda x: p.logits([x]), texts))
        s = time.perf_counter() - t
        lg = np.concatenate(out)
        rows.append({"workers": w, "seconds": s, "per_second": len(texts) / s, "ratio": base_s / s,
                     "max_abs_diff": float(np.abs(lg - base).max()),
                     "labels_equal": bool((lg.argmax(-1) == base.argmax(-1)).all())})
    print("| threads | predictions/s | vs 1 thread | max abs Δlogit vs 1 thread | labels equal |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['per_second']:.0f} | {r['ratio']:.2f}x | {r['max_abs_diff']:.1e} | {r['labels_equal']} |")
    os.makedirs(os.path.dirname(a.json) or ".", exist_ok=True)
    with open(a.json, "w") as f:
        json.dump({"bundle": a.bundle, "texts": len(texts), "cpus": os.cpu_count(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
