"""Soak: N predictions through the torch-free runtime; RSS sampled as it goes (leak check).

    python benchmarks/soak.py BUNDLE [--predictions 100000] [--json benchmarks/results/soak.json]

Prints a table of RSS over time and writes JSON. Growth is measured from the RSS after warm-up
(the first 1,000 predictions) to the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import psutil


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle")
    ap.add_argument("--predictions", type=int, default=100_000)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--json", default="benchmarks/results/soak.json")
    a = ap.parse_args(argv)
    from probscale_edge.runtime import Predictor

    proc = psutil.Process()
    p = Predictor(a.bundle, threads=a.threads)
    rng = np.random.default_rng(0)
    words = ("the film a plot cast moving dull superb awful quiet long short story ending music naïve 😀 中文 "
             "performance director script").split()
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 60)))) for _ in range(997)]
    warm = 1000
    done = 0
    t0 = time.perf_counter()
    while done < warm:
        p.predict(texts[done % len(texts): done % len(texts) + a.batch_size])
        done += a.batch_size
    base = proc.memory_info().rss
    rows = [{"predictions": done, "rss_mb": base / 1e6, "seconds": time.perf_counter() - t0}]
    step = max(a.batch_size, (a.predictions - warm) // a.samples)
    i = 0
    while done < a.predictions:
        s = (i * 7919) % len(texts)
        p.predict([texts[(s + j) % len(texts)] for j in range(a.batch_size)])
        done += a.batch_size
        i += 1
        if done % step < a.batch_size or done >= a.predictions:
            rows.append({"predictions": done, "rss_mb": proc.memory_info().rss / 1e6,
                         "seconds": time.perf_counter() - t0})
            print(f"{done:>8} predictions  RSS {rows[-1]['rss_mb']:8.1f} MB  {rows[-1]['seconds']:7.1f} s",
                  file=sys.stderr, flush=True)
    end = proc.memory_info().rss
    result = {"bundle": a.bundle, "predictions": done, "batch_size": a.batch_size, "threads": a.threads,
              "rss_after_warmup_mb": base / 1e6, "rss_end_mb": end / 1e6, "rss_growth": end / base - 1,
              "peak_rss_mb": max(r["rss_mb"] for r in rows), "seconds": time.perf_counter() - t0, "samples": rows}
    print(f"\n| predictions | RSS after warm-up | RSS at end | growth | peak | time |\n|---|---|---|---|---|---|\n"
          f"| {done:,} | {base / 1e6:.1f} MB | {end / 1e6:.1f} MB | {result['rss_growth']:+.2%} | "
          f"{result['peak_rss_mb']:.1f} MB | {result['seconds']:.0f} s |")
    os.makedirs(os.path.dirname(a.json) or ".", exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
