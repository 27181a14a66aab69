"""The runtime installs and predicts in an environment without torch or transformers.

A real, separate virtual environment gets only the base install (numpy, tokenizers, onnxruntime,
click, psutil) and this package without its build extra; it must load a bundle, verify it and
reproduce the build side's logits."""

from __future__ import annotations

import json
import subprocess
import venv

import numpy as np
import pytest

from helpers import ROOT


@pytest.fixture(scope="module")
def slim_env(tmp_path_factory):
    d = tmp_path_factory.mktemp("slim") / "venv"
    venv.create(d, with_pip=True)
    py = d / "bin" / "python"
    # the base install only: its dependencies come from the index (or pip's cache), the package from here
    r = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(ROOT)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return py


def test_no_torch_no_transformers_in_slim_env(slim_env):
    r = subprocess.run([str(slim_env), "-c", "import importlib.util as u; print(u.find_spec('torch'), u.find_spec('transformers'))"],
                       capture_output=True, text=True)
    assert r.stdout.strip() == "None None", r.stdout + r.stderr


def test_runtime_predicts_without_torch(slim_env, tmp_path):
    # a bundle from the tiny pipeline (built here, on the build side)
    from probscale_edge.pipeline import BuildConfig, TaskSpec, build
    from probscale_edge.runtime import Predictor

    import helpers

    tiny = helpers.make_tiny("bert", tmp_path / "tiny", _minilm())
    rows = [(f"{'good' if i % 2 else 'bad'} movie number {i}", str(i % 2)) for i in range(80)]
    data = helpers.write_csv(tmp_path / "d.csv", rows)
    out = tmp_path / "bundle"
    build(BuildConfig.create(model=str(tiny), tasks=[TaskSpec(str(data))], output=str(out), budget=0.5, target="x86_64",
                      epochs=1, use_cache=False, latency_runs=3), log=lambda *_: None)
    texts = ["good movie", "bad movie", "", "ünïcödé 中文 😀 " * 40]
    expected = Predictor(out).logits(texts)
    script = tmp_path / "slim.py"
    script.write_text(
        "import sys, json\n"
        "from probscale_edge.runtime import Predictor\n"
        f"p = Predictor({str(out)!r})\n"
        f"lg = p.logits({texts!r})\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
        "print(json.dumps(lg.tolist()))\n")
    r = subprocess.run([str(slim_env), str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    got = np.array(json.loads(r.stdout.strip().splitlines()[-1]))
    assert np.abs(got - expected).max() <= 1e-5
    # the CLI's bench also runs there
    r = subprocess.run([str(slim_env.parent / "probscale-edge"), "bench", str(out), "--no-accuracy", "--num-runs", "5"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def _minilm():
    from probscale_edge.assets import fetch

    return fetch("all-MiniLM-L6-v2")
