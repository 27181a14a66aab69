"""What a device's Python is: version, machine, numpy / onnxruntime / tokenizers, /proc/cpuinfo, CPU count.

`probscale-edge profile` runs this module on the device *before* pushing anything, by sending its source:
``python3 -c "<this file>"``, so it needs nothing but the standard library and must stay runnable by old
interpreters (no f-strings, no annotations: the point is to report a Python that is too old, or a missing
onnxruntime, in one line). With the runtime on the device it also runs as
``python -m probscale_edge.runtime.device_probe``.

Prints one line: ``PROBSCALE_EDGE_PROBE=<json>``.
"""

import json
import os
import platform
import sys

PREFIX = "PROBSCALE_EDGE_PROBE="
MODULES = ("numpy", "onnxruntime", "tokenizers")


def probe():
    out = {"python": platform.python_version(), "machine": platform.machine(), "system": platform.system(),
           "executable": sys.executable, "missing": {}}
    for m in MODULES:
        try:
            mod = __import__(m)
            out[m] = getattr(mod, "__version__", "?")
        except Exception as e:  # noqa: BLE001  (any import failure means: not usable here)
            out["missing"][m] = type(e).__name__ + ": " + str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    try:
        with open("/proc/cpuinfo") as f:
            out["cpuinfo"] = f.read()[:200000]
    except Exception:  # noqa: BLE001
        out["cpuinfo"] = None
    try:
        out["cpus"] = os.cpu_count()
    except Exception:  # noqa: BLE001
        pass
    return out


def main():
    print(PREFIX + json.dumps(probe()))


if __name__ == "__main__":
    main()
