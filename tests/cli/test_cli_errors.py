"""Bad input: one line naming the fix, exit status 2, and no bundle (or staging folder) left behind."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from helpers import write_csv


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "probscale_edge", *args], capture_output=True, text=True, cwd=cwd)


def assert_clean_failure(proc, out_dir, match):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    err_lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(err_lines) == 1, proc.stderr[-2000:]
    assert match in err_lines[0], err_lines[0]
    assert " -- fix: " in err_lines[0]
    assert "Traceback" not in proc.stderr
    assert not out_dir.exists()
    leftovers = [p for p in out_dir.parent.iterdir() if p.name.startswith(f".{out_dir.name}")]
    assert not leftovers, leftovers


@pytest.fixture
def out(tmp_path):
    return tmp_path / "bundle"


def test_missing_model_path(out, tmp_path):
    p = run_cli("build", "--model", str(tmp_path / "nope"), "-o", str(out))
    assert_clean_failure(p, out, "does not exist")


def test_model_folder_without_weights(out, tmp_path, tiny_bert):
    d = tmp_path / "noweights"
    d.mkdir()
    (d / "config.json").write_text((tiny_bert / "config.json").read_text())
    p = run_cli("build", "--model", str(d), "-o", str(out))
    assert_clean_failure(p, out, "has no weights")


def test_pickle_only_checkpoint_refused(out, tmp_path, tiny_bert):
    d = tmp_path / "pickled"
    d.mkdir()
    (d / "config.json").write_text((tiny_bert / "config.json").read_text())
    (d / "pytorch_model.bin").write_bytes(b"not really a pickle")
    p = run_cli("build", "--model", str(d), "-o", str(out))
    assert_clean_failure(p, out, "pickle")


def test_unsupported_architecture(out, tmp_path):
    d = tmp_path / "gpt"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    (d / "model.safetensors").write_bytes(b"\x00" * 16)
    p = run_cli("build", "--model", str(d), "-o", str(out))
    assert_clean_failure(p, out, "unsupported architecture 'gpt2'")


def test_truncated_weights(out, tmp_path, tiny_bert):
    import shutil

    d = tmp_path / "trunc"
    shutil.copytree(tiny_bert, d)
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    p = run_cli("build", "--model", str(d), "-o", str(out))
    assert_clean_failure(p, out, "could not load the weights")


def test_dataset_without_label_column(out, tmp_path, tiny_bert):
    data = write_csv(tmp_path / "d.csv", [(f"t{i}", str(i % 2)) for i in range(10)], header=("text", "y"))
    p = run_cli("build", "--model", str(tiny_bert), "--data", str(data), "-o", str(out))
    assert_clean_failure(p, out, "no label column 'label'")


def test_dataset_with_one_class(out, tmp_path, tiny_bert):
    data = write_csv(tmp_path / "d.csv", [(f"t{i}", "same") for i in range(10)])
    p = run_cli("build", "--model", str(tiny_bert), "--data", str(data), "-o", str(out))
    assert_clean_failure(p, out, "only one class")


def test_budget_below_smallest_subnetwork(out, tiny_bert, toy_csv):
    # whole layers only: a budget below one layer cannot be met (with --granularity unit, the default,
    # heads and neurons go below one layer; tests/test_compression.py covers that)
    p = run_cli("build", "--model", str(tiny_bert), "--data", str(toy_csv), "--budget", "0.1",
                "--granularity", "layer", "-o", str(out))
    assert_clean_failure(p, out, "below the smallest possible subnetwork")


@pytest.mark.parametrize("budget", ["0", "1.5", "-0.2"])
def test_budget_not_a_fraction(out, budget):
    p = run_cli("build", "--budget", budget, "-o", str(out))
    assert_clean_failure(p, out, "is not a fraction")


def test_unknown_target(out):
    t = time.time()
    p = run_cli("build", "--target", "mips", "-o", str(out))
    assert_clean_failure(p, out, "unknown --target 'mips'")
    assert time.time() - t < 30  # refused before anything heavy is loaded


def test_existing_output_is_kept(tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    p = run_cli("build", "--target", "arm64", "-o", str(out))
    assert p.returncode == 2 and "already exists" in p.stderr and "--force" in p.stderr
    assert (out / "keep.txt").read_text() == "precious"


def test_output_is_a_file(tmp_path):
    f = tmp_path / "bundle"
    f.write_text("x")
    p = run_cli("build", "-o", str(f))
    assert p.returncode == 2 and "is a file" in p.stderr
    assert f.read_text() == "x"


def test_help_is_instant():
    t = time.time()
    p = run_cli("--help")
    assert p.returncode == 0 and "build" in p.stdout
    assert time.time() - t < 5
    code = ("import sys, probscale_edge.cli; "
            "print(any(m in sys.modules for m in ('torch', 'transformers', 'onnx', 'sklearn')))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_bench_on_a_non_bundle(tmp_path):
    p = run_cli("bench", str(tmp_path))
    assert p.returncode == 2 and "no manifest.json" in p.stderr and " -- fix: " in p.stderr


def test_folder_that_is_not_a_model(out, tmp_path):
    d = tmp_path / "notamodel"
    d.mkdir()
    (d / "readme.txt").write_text("hello")
    p = run_cli("build", "--model", str(d), "-o", str(out))
    assert_clean_failure(p, out, "has no config.json")


def _copy_with_config(src, dest, **changes):
    """A copy of model folder ``src`` at ``dest`` whose config.json has ``changes`` applied."""
    import shutil

    shutil.copytree(src, dest)
    cfg = json.loads((dest / "config.json").read_text())
    cfg.update(changes)
    (dest / "config.json").write_text(json.dumps(cfg))
    return dest


def test_config_and_weights_disagree(out, tmp_path, tiny_bert):
    # the weights are 32 wide
    d = _copy_with_config(tiny_bert, tmp_path / "mismatch", hidden_size=48, intermediate_size=96)
    p = run_cli("build", "--model", str(d), "-o", str(out))
    assert_clean_failure(p, out, "could not load the weights")


def test_remote_code_architecture_refused(out, tmp_path, tiny_bert):
    d = _copy_with_config(tiny_bert, tmp_path / "remote", auto_map={"AutoModel": "modeling_evil.EvilModel"})
    p = run_cli("build", "--model", str(d), "-o", str(out))
    assert_clean_failure(p, out, "needs remote code")


def test_unknown_data_format(out, tmp_path, tiny_bert):
    f = tmp_path / "data.xlsx"
    f.write_bytes(b"PK\x03\x04 not really")
    p = run_cli("build", "--model", str(tiny_bert), "--data", str(f), "-o", str(out))
    assert_clean_failure(p, out, "unsupported data format")


def test_eval_labels_never_seen_in_training(out, tmp_path, tiny_bert):
    tr = write_csv(tmp_path / "tr.csv", [(f"t{i}", "a" if i % 2 else "b") for i in range(20)])
    ev = write_csv(tmp_path / "ev.csv", [("x", "a"), ("y", "c")])
    p = run_cli("build", "--model", str(tiny_bert), "--data", str(tr), "--eval", str(ev), "-o", str(out))
    assert_clean_failure(p, out, "never seen in training")


def test_full_disk_during_the_write(tmp_path, tiny_bert, toy_csv):
    """A 2 MB file system fills up while the bundle is written: one line, exit 2, nothing left behind."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip()[:80]})")
    try:
        out = mnt / "bundle"
        p = run_cli("build", "--model", str(tiny_bert), "--data", str(toy_csv), "--budget", "0.5", "--epochs", "1",
                    "-o", str(out))
        assert_clean_failure(p, out, "No space left on device")
        assert list(mnt.iterdir()) == []  # no staging folder, no partial bundle
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_read_only_output_location(tmp_path):
    """A read-only file system (root ignores permission bits, so a read-only mount is the real test)."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here ({r.stderr.strip()[:80]})")
    try:
        out = mnt / "bundle"
        p = run_cli("build", "-o", str(out))
        assert_clean_failure(p, out, "cannot write to")
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_bad_spec_file_is_refused_before_any_work(out, tmp_path):
    bad = tmp_path / "spec.json"
    bad.write_text('{"keep_layers": []}')
    p = run_cli("build", "--spec", str(bad), "-o", str(out))
    assert_clean_failure(p, out, "keep_layers is empty")
    for spec, msg in (('{"keep_layers": ["a"]}', "list of non-negative integers"),
                      ('{"keep_layers": [0], "heads": {"1": [0]}}', "which keep_layers does not keep"),
                      ('{"heads": {}}', "has no subnetwork spec")):
        bad.write_text(spec)
        p = run_cli("build", "--spec", str(bad), "-o", str(out))
        assert_clean_failure(p, out, msg)
    bad.write_text("{not json")
    p = run_cli("build", "--spec", str(bad), "-o", str(out))
    assert_clean_failure(p, out, "cannot read the spec")


def test_spec_is_read_from_a_manifest_a_selection_or_itself(tmp_path):
    import json

    from probscale_edge.cli.options import read_spec as _read_spec

    spec = {"keep_layers": [0, 2], "heads": {"0": [1, 3]}, "ffn": {}}
    for doc in (spec, {"spec": spec, "kept_fraction": 0.3}, {"subnetwork": {"spec": spec}, "format": 1}):
        f = tmp_path / "s.json"
        f.write_text(json.dumps(doc))
        assert _read_spec(f) == spec


def test_latency_budget_errors_leave_nothing(out, tmp_path, tiny_bert, toy_csv):
    p = run_cli("build", "--max-latency-ms", "5", "--compression", "5", "-o", str(out))
    assert_clean_failure(p, out, "sets the budget itself")
    p = run_cli("build", "--max-latency-ms", "5", "--latency-table", str(tmp_path / "none.json"), "-o", str(out))
    assert_clean_failure(p, out, "does not exist")
    table = {"seq": 32, "threads": 1, "precision": "int8", "target": "arm64", "base_ms": 1.5, "layer_ms": 0.4,
             "head_ms": 0.2, "neuron_ms": 0.01, "full": {"layers": 4, "heads": 4, "ffn": 64}}
    (tmp_path / "table.json").write_text(json.dumps(table))
    p = run_cli("build", "--model", str(tiny_bert), "--data", str(toy_csv), "--epochs", "1", "--no-cache",
                "--max-latency-ms", "1.0", "--latency-table", str(tmp_path / "table.json"),
                "-o", str(out))
    assert_clean_failure(p, out, "below the fastest subnetwork")


def test_tflite_without_the_converter_is_refused_before_any_work(out, tmp_path):
    import os

    env = dict(os.environ, PROBSCALE_EDGE_TFLITE_PYTHON=str(tmp_path / "no-python"))
    p = subprocess.run([sys.executable, "-m", "probscale_edge", "build", "--tflite", "-o", str(out)],
                       capture_output=True, text=True, env=env)
    assert_clean_failure(p, out, "PROBSCALE_EDGE_TFLITE_PYTHON")
