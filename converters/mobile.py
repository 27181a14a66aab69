"""ONNX -> ORT format (``.ort``) for ONNX Runtime Mobile, plus ``required_operators.config``.

The ``.ort`` file loads faster on devices and works with a reduced-operator ONNX Runtime build
(``--include_ops_by_config required_operators.config``), which is a few MB instead of ~12 MB.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from probscale_edge.errors import ProbscaleError


def to_ort(onnx_path, out_dir, target_platform: str = "arm") -> dict:
    """Convert one model; returns {"ort": path, "required_operators": path}. ``target_platform``: arm | amd64."""
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in" / "model.onnx"
        src.parent.mkdir()
        shutil.copyfile(onnx_path, src)
        res = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(src), "--output_dir", str(res),
               "--optimization_style", "Fixed", "--target_platform", target_platform]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        ort = next(res.rglob("*.ort"), None) if res.exists() else None
        cfg = next(res.rglob("*.config"), None) if res.exists() else None
        if proc.returncode != 0 or ort is None or cfg is None:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ProbscaleError(f"conversion to the ORT mobile format failed ({tail[0][:160]})",
                                 "build with --target x86_64, or report the model")
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ort, out_dir / "model.ort")
        lines = [ln for ln in cfg.read_text().splitlines(keepends=True) if not ln.startswith("# -")]
        (out_dir / "required_operators.config").write_text("".join(lines))  # no temp paths: deterministic
    return {"ort": out_dir / "model.ort", "required_operators": out_dir / "required_operators.config"}
