"""Emulated aarch64 (qemu-user, Neoverse-N1) vs native x86 predictions of one bundle on rotten_tomatoes eval texts.

    PROBSCALE_EDGE_CACHE=/tmp/pcache python benchmarks/arm64/emulated_parity.py BUNDLE [N] [OUT.json]

Correctness only: "emulated_seconds" is qemu time on an x86 host, never ARM latency.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

# the emulation harness lives beside the tests that use it: tests/devices/emulation.py
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))


def main(argv):
    from devices.emulation import compare_with_native, ensure_arm64_env
    from probscale_edge.data import load_task
    from probscale_edge.devices import detect_cpu_features
    from probscale_edge.runtime.bundle import load_manifest

    bundle = Path(argv[0])
    n = int(argv[1]) if len(argv) > 1 else 2562
    out = Path(argv[2]) if len(argv) > 2 else Path(__file__).with_name(f"parity_{bundle.name}.json")
    t0 = time.time()
    paths = ensure_arm64_env()
    setup_s = time.time() - t0
    texts = load_task("rotten_tomatoes", max_train=2).eval.texts[:n]
    t = time.time()
    try:
        import onnx  # noqa: F401  (the exact-int32 x86 reference needs it)
        exact = True
    except ImportError:
        exact = False
    res = compare_with_native(bundle, texts, threads=1, paths=paths, exact_reference=exact)
    m = load_manifest(bundle)
    res.update(bundle=str(bundle), bundle_target=m.get("target"), precision=m["model"].get("precision"),
               quantization_params=(m.get("quantization") or {}).get("params"),
               host_cpu=detect_cpu_features(), setup_seconds=round(setup_s, 1),
               compare_seconds=round(time.time() - t, 1), arm64_env={k: paths[k] for k in ("qemu_cpu", "site")})
    out.write_text(json.dumps(res, indent=1))
    print(f"{res['examples']} examples: argmax agree {res['argmax_agree']}/{res['examples']}, "
          f"max |Δlogit| {res['max_abs_logit_diff']:.3e}, mean {res['mean_abs_logit_diff']:.3e}; "
          f"x86 saturation expected: {res['x86_int8_saturation_expected']} -> {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
