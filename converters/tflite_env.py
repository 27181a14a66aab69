"""Where the TFLite converter (litert-torch) lives: it cannot share the main environment (see
scripts/install-tflite.sh), so the build runs it as a subprocess of another interpreter."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from probscale_edge.errors import ProbscaleError


def converter_python() -> str:
    """The interpreter that has the TFLite converter (litert-torch): this one, $PROBSCALE_EDGE_TFLITE_PYTHON, or
    the repository's .venv-tflite (scripts/install-tflite.sh keeps it out of the main environment)."""
    import importlib.util

    env = os.environ.get("PROBSCALE_EDGE_TFLITE_PYTHON")
    if env:
        if not Path(env).exists():
            raise ProbscaleError(f"PROBSCALE_EDGE_TFLITE_PYTHON={env} does not exist", "point it at .venv-tflite/bin/python")
        return env
    if importlib.util.find_spec("ai_edge_litert") is None:
        raise ProbscaleError("--tflite needs the LiteRT interpreter to check the model", "pip install ai-edge-litert "
                             "(or bash scripts/install-tflite.sh)")
    if importlib.util.find_spec("litert_torch") and importlib.util.find_spec("ai_edge_quantizer"):
        return sys.executable
    venv = Path(__file__).resolve().parents[1] / ".venv-tflite" / "bin" / "python"
    if venv.exists():
        return str(venv)
    raise ProbscaleError("--tflite needs the TFLite converter (litert-torch), which is not installed",
                         "run bash scripts/install-tflite.sh, or set PROBSCALE_EDGE_TFLITE_PYTHON")
