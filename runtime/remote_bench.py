"""The benchmark `probscale-edge profile` runs on a device, from the folder it pushed there.

    cd RUN_DIR/pkg && python3 -m probscale_edge.runtime.remote_bench RUN_DIR

``RUN_DIR`` holds ``bundle/`` and ``bench_config.json`` (:class:`~probscale_edge.runtime.bench.BenchConfig`
fields); ``pkg/`` holds the pure-Python runtime (``probscale_edge`` with only ``errors`` and ``runtime``),
which ``-m`` imports from the current folder. The result (schema ``probscale-edge.bench/1``, plus
``runtime_file``) is written to ``RUN_DIR/result.json`` and its path printed as ``PROBSCALE_EDGE_RESULT=...``.
Needs numpy, tokenizers and onnxruntime; never torch.
"""

from __future__ import annotations

import json
import os
import sys

import probscale_edge
from probscale_edge.runtime.bench import BenchConfig, bench_bundle, write_json

RESULT_PREFIX = "PROBSCALE_EDGE_RESULT="
CONFIG_FILE = "bench_config.json"
RESULT_FILE = "result.json"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) != 1:
        print("usage: python -m probscale_edge.runtime.remote_bench RUN_DIR", file=sys.stderr)
        return 2
    run_dir = os.path.abspath(argv[0])
    with open(os.path.join(run_dir, CONFIG_FILE), encoding="utf-8") as f:
        cfg = json.load(f)
    res = bench_bundle(os.path.join(run_dir, "bundle"), BenchConfig(**cfg))
    res["runtime_file"] = probscale_edge.__file__
    out = os.path.join(run_dir, RESULT_FILE)
    write_json(res, out)
    print(RESULT_PREFIX + out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
