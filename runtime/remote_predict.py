"""Logits of a bundle on given texts, saved as .npy, plus what interpreter computed them.

    python -m probscale_edge.runtime.remote_predict ARGS.json

``ARGS.json``: ``{"bundle", "texts", "threads", "batch_size", "out" (.npy path), "info" (.json path)}`` and
optionally ``"launched_unix"`` (when the caller started this process; the load time counts from it).
Used to run the runtime on another machine or interpreter -- e.g. an aarch64 Python under qemu-user -- and
compare its numbers with this machine's. Prints ``MACHINE=<platform.machine()>``.
"""

from __future__ import annotations

import json
import platform
import sys
import time


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) != 1:
        print("usage: python -m probscale_edge.runtime.remote_predict ARGS.json", file=sys.stderr)
        return 2
    import numpy as np
    import onnxruntime
    import tokenizers

    import probscale_edge
    from probscale_edge.runtime import Predictor

    with open(argv[0], encoding="utf-8") as f:
        args = json.load(f)
    t0 = float(args.get("launched_unix") or time.time())
    p = Predictor(args["bundle"], threads=args["threads"])
    t1 = time.time()
    lg = p.logits(args["texts"], batch_size=args["batch_size"])
    t2 = time.time()
    np.save(args["out"], lg.astype(np.float32))
    info = {"machine": platform.machine(), "python": platform.python_version(), "numpy": np.__version__,
            "onnxruntime": onnxruntime.__version__, "tokenizers": tokenizers.__version__,
            "probscale_edge_file": probscale_edge.__file__, "examples": len(args["texts"]),
            "emulated_load_seconds": round(t1 - t0, 2), "emulated_predict_seconds": round(t2 - t1, 2)}
    with open(args["info"], "w", encoding="utf-8") as f:
        json.dump(info, f)
    print("MACHINE=" + platform.machine())
    return 0


if __name__ == "__main__":
    sys.exit(main())
