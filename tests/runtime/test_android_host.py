"""Host-side checks of android_demo/: Java tokenizer vs Python `tokenizers`, JUnit, ORT compile check.

Runs android_demo/run_host_tests.sh (needs javac/java 17, npm for the ORT AAR on first use, and
apt-get or an existing /usr/share/java/junit4.jar). The model's tokenizer comes from
probscale_edge.assets.fetch('all-MiniLM-L6-v2'), which honours PROBSCALE_EDGE_CACHE.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[2] / "android_demo"


@pytest.mark.skipif(shutil.which("javac") is None or shutil.which("java") is None, reason="needs a JDK (javac, java)")
def test_android_host_script():
    from probscale_edge.assets import fetch

    model_dir = Path(fetch("all-MiniLM-L6-v2"))  # make sure the tokenizer files are cached first
    assert (model_dir / "tokenizer.json").is_file()
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(DEMO / "run_host_tests.sh")], cwd=DEMO, env=env,
                          capture_output=True, text=True, timeout=1800)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]

    m = re.search(r"TOKENIZER_VECTORS_MATCHED (\d+)/(\d+)$", out, re.M)
    assert m, out[-3000:]
    matched, total = int(m.group(1)), int(m.group(2))
    assert total >= 1000
    assert matched == total
    files = dict((name, (int(a), int(b))) for name, a, b in re.findall(r"TOKENIZER_FILE (\S+) (\d+)/(\d+)$", out, re.M))
    # the model's own tokenizer.json, the code-point sweep and both trimmed vocabularies were all compared
    assert {"full.tsv", "sweep.tsv", "trim5000.tsv", "sparse.tsv"} <= set(files)
    assert files["full.tsv"][1] >= 1000 and files["trim5000.tsv"][1] >= 1000
    assert all(a == b for a, b in files.values())

    assert re.search(r"^JUNIT_SUMMARY OK \(\d+ tests\)$", out, re.M), out[-3000:]
    assert "ORT_COMPILE_CHECK OK" in out
    assert "HOST_TESTS_PASSED" in out
