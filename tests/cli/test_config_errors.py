"""Bad options and outputs are refused where they are defined (probscale_edge.config, the output guard), before
anything heavy loads: one `error: ... -- fix: ...` line, exit 2, nothing written, no input touched."""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import write_csv


def run_cli(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "probscale_edge", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


def one_line(proc, match):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-1500:])
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and match in lines[0] and " -- fix: " in lines[0], proc.stderr[-1500:]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args,match", [
    (("--precision", "foo"), "unknown --precision 'foo'"),
    (("--granularity", "foo"), "unknown --granularity 'foo'"),
    (("--strategy", "foo"), "unknown --strategy 'foo'"),
    (("--recover", "foo"), "unknown --recover-mode 'foo'"),
    (("--quant-mode", "foo"), "unknown --quant-mode 'foo'"),
    (("--pooling", "max"), "unknown --pooling 'max'"),
    (("--max-train", "-5"), "--max-train -5 is not an integer >= 1"),
    (("--lr", "nan"), "--lr nan is not a number"),
    (("--lr", "-0.001"), "--lr -0.001 is not a number > 0"),
    (("--epochs", "0"), "--epochs 0.0 is not a number > 0"),
    (("--max-length", "1"), "--max-length 1 is not an integer >= 2"),
    (("--embedding-rank", "-1"), "--embedding-rank -1 is not an integer >= 0"),
    (("--max-eval", "-1"), "--max-eval -1 is not an integer >= 10"),
    (("--prune-iterations", "0"), "--prune-iterations 0 is not an integer >= 1"),
    (("--augment", "2", "--recover", "finetune"), "--augment 2 with --recover-mode finetune"),
    (("--latency-table", "t.json"), "--latency-table without --max-latency-ms"),
    (("--max-latency-ms", "5", "--compression", "5"), "--max-latency-ms sets the budget itself"),
    (("--spec", "/"), "cannot read the spec"),
    (("--max-latency-ms", "5", "--latency-table", "/"), "is not valid JSON"),
])
def test_bad_option_is_one_line_before_any_work(tmp_path, args, match):
    out = tmp_path / "b"
    t0 = time.time()
    p = run_cli("build", *args, "-o", str(out))
    one_line(p, match)
    assert time.time() - t0 < 60  # refused before the model or data load (a build takes minutes)
    assert not out.exists() and not [q for q in tmp_path.iterdir() if q.name.startswith(".b.")]


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_output_that_is_or_holds_an_input_is_refused(tmp_path, tiny_bert, toy_csv):
    model = tmp_path / "mymodel"
    subprocess.run(["cp", "-r", str(tiny_bert), str(model)], check=True)
    (model / "notes.txt").write_text("the user's own file")
    before = _digest(model)
    data = ["--model", str(model), "--data", str(toy_csv), "--epochs", "1"]
    for out, match in ((model, "is, holds or lies inside"), (model / "bundle", "is, holds or lies inside"),
                       (tmp_path, "is, holds or lies inside"), (toy_csv.parent, "is, holds or lies inside")):
        p = run_cli("build", *data, "-o", str(out), "--force")
        one_line(p, match)
        assert _digest(model) == before
    p = run_cli("build", *data, "-o", ".", "--force", cwd=tmp_path)
    one_line(p, "is, holds or lies inside")
    assert _digest(model) == before


def test_output_under_a_file_and_json_folder_are_one_line(tmp_path, tiny_bert, toy_csv):
    afile = tmp_path / "afile"
    afile.write_text("x")
    p = run_cli("build", "--model", str(tiny_bert), "--data", str(toy_csv), "-o", str(afile / "bundle"))
    one_line(p, "part of that path is a file")
    p = run_cli("build", "--model", str(tiny_bert), "--data", str(toy_csv), "-o", str(tmp_path / "b"),
                "--json", str(tmp_path))
    one_line(p, "is a folder")
    assert afile.read_text() == "x" and not (tmp_path / "b").exists()


def test_a_second_build_to_the_same_output_is_refused(tmp_path, tiny_bert, toy_csv):
    out = tmp_path / "b"
    with open(tmp_path / ".b.lock", "a+") as lock:  # what a running build to `out` holds
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        p = run_cli("build", "--model", str(tiny_bert), "--data", str(toy_csv), "--epochs", "1", "-o", str(out))
    one_line(p, "another build is writing")
    assert not out.exists()
    (tmp_path / ".b.lock").unlink()
    # a real race: the second build starts while the first runs (the lock is held from the start of the build)
    env = dict(os.environ, PROBSCALE_EDGE_CACHE=str(tmp_path / "cache"))
    first = subprocess.Popen([sys.executable, "-m", "probscale_edge", "build", "--model", str(tiny_bert), "--data",
                              str(toy_csv), "--epochs", "1", "--budget", "0.5", "--target", "x86_64", "-o", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not [q for q in tmp_path.iterdir() if q.name.startswith(".b.build-")]:
        time.sleep(0.1)  # the first build holds the lock from here to its end
    second = run_cli("build", "--model", str(tiny_bert), "--data", str(toy_csv), "--epochs", "1", "--budget", "0.5",
                     "--target", "x86_64", "-o", str(out), env=env)
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-1500:]
    one_line(second, "another build is writing")
    assert (out / "manifest.json").exists()


def test_sigterm_leaves_no_staging_folder(tmp_path, tiny_bert, toy_csv):
    out = tmp_path / "b"
    proc = subprocess.Popen([sys.executable, "-m", "probscale_edge", "build", "--model", str(tiny_bert), "--data",
                             str(toy_csv), "--epochs", "20", "--budget", "0.5", "--no-cache", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PROBSCALE_EDGE_CACHE=str(tmp_path / "cache")),
                            # as a shell starts it. In a full local run the build once finished (exit 0) as if
                            # SIGTERM were ignored: an ignored disposition is inherited across exec and the CLI keeps
                            # one it did not set. Not confirmed as the cause; nothing in this project ignores it.
                            preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
    deadline = time.time() + 300
    while time.time() < deadline and not [q for q in tmp_path.iterdir() if q.name.startswith(".b.build-")]:
        time.sleep(0.2)  # wait for the staging folder (after the fine-tune, probe and selection)
    assert proc.poll() is None, proc.communicate()[1][-1500:]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-1500:]
    assert "interrupted" in err and "Traceback" not in err
    assert not out.exists()
    assert not [q for q in tmp_path.iterdir() if q.name.startswith(".b.")]


def test_cache_that_is_a_file_or_read_only_is_refused_before_any_work(tmp_path, tiny_bert, toy_csv):
    afile = tmp_path / "cachefile"
    afile.write_text("x")
    args = ("build", "--model", str(tiny_bert), "--data", str(toy_csv), "-o", str(tmp_path / "b"))
    t0 = time.time()
    one_line(run_cli(*args, env=dict(os.environ, PROBSCALE_EDGE_CACHE=str(afile))), "is not a writable folder")
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(ro)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    try:
        p = run_cli(*args, "--no-cache", env=dict(os.environ, PROBSCALE_EDGE_CACHE=str(ro)))
        one_line(p, "is not a writable folder")
        assert "PROBSCALE_EDGE_CACHE" in p.stderr
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)
    assert time.time() - t0 < 60 and not (tmp_path / "b").exists()


def test_json_under_a_file_and_too_few_examples_per_class_are_refused_up_front(tmp_path, tiny_bert, toy_csv):
    afile = tmp_path / "afile"
    afile.write_text("x")
    base = ("build", "--model", str(tiny_bert), "--data", str(toy_csv), "-o", str(tmp_path / "b"))
    one_line(run_cli(*base, "--json", str(afile / "s.json")), "is a file, not a folder")
    one_line(run_cli(*base, "--max-train", "2"), "need at least 2 per class")
    assert not (tmp_path / "b").exists() and afile.read_text() == "x"
