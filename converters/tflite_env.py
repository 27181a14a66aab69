"""Where the TFLite converter (litert-torch) lives: it cannot share the main environment (see
scripts/install-tflite.sh), so the build runs it as a subprocess of another interpreter.

:func:`converter_python` picks that interpreter and checks, before any work, that it can run
``python -m probscale_edge.converters.tflite`` from this same probscale-edge: every failure is one
:class:`~probscale_edge.errors.ProbscaleError` line with the fix.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from probscale_edge.errors import ProbscaleError

ENV_VAR = "PROBSCALE_EDGE_TFLITE_PYTHON"
VENV_NAME = ".venv-tflite"
INSTALL = "run bash scripts/install-tflite.sh from the environment you build in"
# run by the candidate interpreter: what it has, and which file `-m probscale_edge.converters.tflite` would run
# (find_spec imports only the parent packages, which are lean: no torch, no jax)
_PROBE = """
import importlib.util, json, sys
out = {}
for mod in ("litert_torch", "ai_edge_quantizer", "torch"):
    out[mod] = importlib.util.find_spec(mod) is not None
try:
    spec = importlib.util.find_spec("probscale_edge.converters.tflite")
    out["converter"] = spec.origin if spec else None
except Exception as e:
    out["converter"] = None
    out["error"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""


def project_root() -> Path | None:
    """The source checkout this package runs from (an editable install), else None (an installed wheel)."""
    root = Path(__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file() and (root / "scripts" / "install-tflite.sh").is_file():
        return root
    return None


def venv_candidates() -> list[Path]:
    """Where a ``.venv-tflite`` interpreter is looked for: next to the project (editable install), then the
    current directory (an installed wheel run from the checkout that made the venv)."""
    out = []
    for base in (project_root(), Path.cwd()):
        if base is not None:
            py = base / VENV_NAME / "bin" / "python"
            if py not in out:
                out.append(py)
    return out


def check_converter(python: str, origin: str) -> None:
    """Raise a ProbscaleError unless ``python`` has litert-torch + ai-edge-quantizer and runs this same
    probscale-edge's converter module. It runs outside the project (from the project root, the checkout is on
    sys.path through the current directory, so a broken setup would pass by accident)."""
    where = f"{python} ({origin})"
    try:
        proc = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=120,
                              cwd=tempfile.gettempdir())
        ok = proc.returncode == 0 and proc.stdout.strip()
        info = json.loads(proc.stdout.strip().splitlines()[-1]) if ok else None
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        raise ProbscaleError(f"the TFLite converter interpreter {where} does not run ({type(e).__name__}: {e})",
                             INSTALL) from e
    if info is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise ProbscaleError(f"the TFLite converter interpreter {where} does not run ({tail[0][:160]})", INSTALL)
    missing = [m.replace("_", "-") for m in ("litert_torch", "ai_edge_quantizer", "torch") if not info[m]]
    if missing:
        raise ProbscaleError(f"the TFLite converter interpreter {where} lacks {', '.join(missing)}", INSTALL)
    if not info["converter"]:
        extra = f": {info['error']}" if info.get("error") else ""
        raise ProbscaleError(f"the TFLite converter interpreter {where} cannot import probscale_edge.converters.tflite"
                             f"{extra} (it does not see this environment's probscale-edge)", INSTALL)
    ours = Path(__file__).resolve().with_name("tflite.py")
    if Path(info["converter"]).resolve() != ours:
        raise ProbscaleError(f"the TFLite converter interpreter {where} runs another probscale-edge "
                             f"({info['converter']}, not {ours})", INSTALL)


def converter_python() -> str:
    """The interpreter that has the TFLite converter (litert-torch): $PROBSCALE_EDGE_TFLITE_PYTHON, this one, or
    a ``.venv-tflite`` next to the project (scripts/install-tflite.sh keeps it out of the main environment),
    checked by :func:`check_converter` when it is not this one."""
    import importlib.util

    env = os.environ.get(ENV_VAR)
    if env:
        if not Path(env).exists():
            raise ProbscaleError(f"{ENV_VAR}={env} does not exist", f"point it at {VENV_NAME}/bin/python")
        check_converter(env, f"from {ENV_VAR}")
        return env
    if importlib.util.find_spec("ai_edge_litert") is None:
        raise ProbscaleError("--tflite needs the LiteRT interpreter to check the model", "pip install ai-edge-litert "
                             "(or bash scripts/install-tflite.sh)")
    if importlib.util.find_spec("litert_torch") and importlib.util.find_spec("ai_edge_quantizer"):
        return sys.executable
    for venv in venv_candidates():
        if os.path.lexists(venv):  # a dangling link (its base interpreter gone) is reported by the check
            where = "project" if venv.parents[2] == project_root() else "current directory"
            check_converter(str(venv), f"the {VENV_NAME} in the {where}")
            return str(venv)
    looked = " or ".join(str(p.parents[2]) for p in venv_candidates())
    raise ProbscaleError(f"--tflite needs the TFLite converter (litert-torch), which is neither in this environment "
                         f"nor in a {VENV_NAME} in {looked}", f"{INSTALL}, or set {ENV_VAR}")
