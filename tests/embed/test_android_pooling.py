"""The Android core's pooling and normalization (android_demo/core SentencePooling, plain Java) against the Python
runtime's, on recorded outputs of the real all-MiniLM-L6-v2 (tools/make_pooling_vectors.py): within 1e-5.
The full host script (android_demo/run_host_tests.sh) runs the same test among the others."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[2] / "android_demo"
JUNIT = Path("/usr/share/java/junit4.jar")


@pytest.mark.skipif(shutil.which("javac") is None or not JUNIT.is_file(), reason="needs a JDK and junit4")
def test_java_pooling_equals_python_on_recorded_model_outputs(tmp_path):
    hamcrest = next((p for p in (Path("/usr/share/java/hamcrest-core.jar"), Path("/usr/share/java/hamcrest.jar"))
                     if p.is_file()), None)
    assert hamcrest is not None
    r = subprocess.run([sys.executable, str(DEMO / "tools" / "make_pooling_vectors.py"), str(tmp_path / "vec")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    main, test = tmp_path / "main", tmp_path / "test"
    src = sorted(str(p) for p in (DEMO / "core" / "src" / "main" / "java").rglob("*.java"))
    r = subprocess.run(["javac", "--release", "8", "-Xlint:all", "-Werror", "-encoding", "UTF-8", "-d", str(main), *src],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    t = DEMO / "core" / "src" / "test" / "java" / "io" / "probscale" / "edge" / "core" / "SentencePoolingTest.java"
    r = subprocess.run(["javac", "--release", "8", "-encoding", "UTF-8", "-cp", f"{main}:{JUNIT}", "-d", str(test), str(t)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run(["java", f"-Dpooling.dir={tmp_path / 'vec'}", "-cp", f"{main}:{test}:{JUNIT}:{hamcrest}",
                        "org.junit.runner.JUnitCore", "io.probscale.edge.core.SentencePoolingTest"],
                       capture_output=True, text=True)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    m = re.search(r"POOLING_VECTORS_MATCHED (\d+)/(\d+) max_abs=(\S+) padded_tokens=(\d+)", out)
    assert m, out[-2000:]
    matched, total, worst, padded = int(m.group(1)), int(m.group(2)), float(m.group(3)), int(m.group(4))
    assert total >= 48 and matched == total and worst <= 1e-5 and padded > 0
