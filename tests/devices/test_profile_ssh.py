"""`probscale-edge profile BUNDLE --ssh user@host` against a REAL OpenSSH server on 127.0.0.1.

The test starts its own sshd (a temporary host key, a temporary client key, a free high port, listening
on 127.0.0.1 only) and profiles a bundle through it; the "device" is this machine's Python (and, in one
test, the qemu-emulated aarch64 Python). Traffic goes only to 127.0.0.1.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from probscale_edge.errors import ProbscaleError

SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
FAST = {"warmup_runs": 2, "num_runs": 10, "threads": 1}


def _ensure_openssh():
    if shutil.which("sshd") or Path("/usr/sbin/sshd").exists():
        if shutil.which("ssh") and shutil.which("ssh-keygen"):
            return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        r = subprocess.run(["apt-get", "install", "-y", "-q", "openssh-server", "openssh-client"], env=env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "-q", "openssh-server", "openssh-client"], env=env,
                           capture_output=True)
    assert shutil.which("ssh") and Path("/usr/sbin/sshd").exists(), "install openssh-server and openssh-client"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    return path


class SSHD:
    def __init__(self, folder: Path):
        _ensure_openssh()
        self.dir = folder
        self.host_key = _keygen(folder / "host_ed25519")
        self.client_key = _keygen(folder / "client_ed25519")
        self.other_key = _keygen(folder / "unauthorized_ed25519")  # not in authorized_keys
        (folder / "authorized_keys").write_text((folder / "client_ed25519.pub").read_text())
        self.port = _free_port()
        sftp = next((p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server",
                                 "/usr/libexec/sftp-server") if Path(p).exists()), None)
        cfg = [f"ListenAddress 127.0.0.1", f"Port {self.port}", f"HostKey {self.host_key}",
               f"AuthorizedKeysFile {folder / 'authorized_keys'}", "PubkeyAuthentication yes",
               "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PermitRootLogin yes",
               "StrictModes no", "UsePAM no", f"PidFile {folder / 'sshd.pid'}", "LogLevel VERBOSE"]
        if sftp:
            cfg.append(f"Subsystem sftp {sftp}")
        (folder / "sshd_config").write_text("\n".join(cfg) + "\n")
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege-separation folder sshd insists on
        self.log = open(folder / "sshd.log", "w")
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(folder / "sshd_config")],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("sshd exited: " + (folder / "sshd.log").read_text()[-2000:])
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("sshd did not start listening: " + (folder / "sshd.log").read_text()[-2000:])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    d = tmp_path_factory.mktemp("sshd")
    d.chmod(0o700)
    server = SSHD(d)
    yield server
    server.stop()
    print("sshd log tail:\n" + (d / "sshd.log").read_text()[-1500:])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny_bert):
    from devices.device_bundles import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("profile") / "bundle", tiny_bert)


def _profile(sshd, bundle, **kw):
    from probscale_edge.devices import run_profile

    args = dict(ssh="root@127.0.0.1", port=sshd.port, identity=sshd.client_key, ssh_options=SSH_OPTS,
                remote_python=sys.executable, bench_kwargs=FAST, log=print)
    args.update(kw)
    return run_profile(bundle, **args)


@pytest.mark.parametrize("transfer", ["tar", "scp"])
def test_profile_over_real_sshd(sshd, bundle, transfer, tmp_path):
    from probscale_edge.devices import summary_line

    remote = tmp_path / "remote"
    res = _profile(sshd, bundle, transfer=transfer, remote_dir=str(remote))
    print(summary_line(res))
    assert res["schema"] == "probscale-edge.bench/1"
    assert res["latency"]["p50_ms"] > 0
    assert res["num_runs"] == FAST["num_runs"] and res["threads"] == 1
    dev = res["device"]
    assert dev["transport"] == "ssh" and dev["target"] == "root@127.0.0.1"
    assert dev["machine"] == platform.machine()
    assert dev["cpu"]["arch"] in ("x86_64", "aarch64")
    assert dev["cpu"]["recommended_preset"]
    assert dev["onnxruntime"] and not dev["emulated"]
    # the benchmark ran the pushed pure-Python runtime, and the pushed folder was removed afterwards
    assert res["runtime_file"].startswith(str(remote) + "/run-")
    assert res["profile"]["pushed_bytes"] > 0
    assert remote.is_dir() and not any(remote.iterdir())


def test_profile_emulated_arm64_over_sshd(sshd, bundle):
    from devices.emulation import ensure_arm64_env

    ensure_arm64_env(log=print)  # builds (once) the emulated aarch64 Python and records it for run_profile
    res = _profile(sshd, bundle, emulate_arm64=True, remote_python="python3", bench_kwargs=None)
    assert res["schema"] == "probscale-edge.bench/1"
    assert res["device"]["machine"] == "aarch64" and res["machine"]["machine"] == "aarch64"
    assert res["device"]["emulated"] and res["latency_is_emulated"]
    assert res["device"]["cpu"]["arch"] == "aarch64" and res["device"]["cpu"]["features"]["asimddp"]
    assert res["latency"]["p50_ms"] > 0
    assert "not ARM latency" in res["note"]


def test_emulate_arm64_needs_a_prepared_emulator(bundle, tmp_path, monkeypatch):
    """The installed package never builds the emulator: without the harness's record it says how to prepare one."""
    from probscale_edge.devices import run_profile

    monkeypatch.setenv("PROBSCALE_EDGE_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ProbscaleError, match="no emulated aarch64 Python is prepared") as e:
        run_profile(bundle, ssh="root@127.0.0.1", emulate_arm64=True, log=None)
    assert "tests/devices/emulation.py" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "empty-cache").exists()


def test_unreachable_host(bundle):
    from probscale_edge.devices import run_profile

    port = _free_port()  # nothing listens there
    with pytest.raises(ProbscaleError, match="cannot reach") as e:
        run_profile(bundle, ssh="root@127.0.0.1", port=port, ssh_options=SSH_OPTS, log=None)
    assert "fix:" in str(e.value)


def test_auth_failure(sshd, bundle):
    with pytest.raises(ProbscaleError, match="authentication") as e:
        _profile(sshd, bundle, identity=sshd.other_key)
    assert "ssh-copy-id" in str(e.value)


def test_missing_python(sshd, bundle):
    with pytest.raises(ProbscaleError, match="no Python") as e:
        _profile(sshd, bundle, remote_python="/nonexistent/bin/python3")
    assert "--remote-python" in str(e.value)


def test_missing_onnxruntime(sshd, bundle):
    # -S: no site-packages, so numpy/onnxruntime/tokenizers cannot be imported (as on a bare device)
    with pytest.raises(ProbscaleError, match="onnxruntime") as e:
        _profile(sshd, bundle, remote_python=f"{sys.executable} -S")
    assert "pip install onnxruntime" in str(e.value)


def test_bad_bundle_is_refused_before_pushing(sshd, bundle, tmp_path):
    from probscale_edge.errors import BundleError

    bad = tmp_path / "bad"
    shutil.copytree(bundle, bad)
    (bad / "labels.json").write_text('["tampered"]')
    with pytest.raises(BundleError, match="checksum"):
        _profile(sshd, bad)


def test_profile_over_adb_shim(bundle, tmp_path, monkeypatch):
    """The adb path, with a stand-in `adb` that runs shell/push/pull on this machine (no phone here)."""
    from probscale_edge.devices import run_profile

    shim = tmp_path / "bin" / "adb"
    shim.parent.mkdir()
    shim.write_text("#!/bin/sh\n"
                    "[ \"$1\" = -s ] && shift 2\n"
                    "case \"$1\" in\n"
                    "  shell) shift; exec sh -c \"$*\" ;;\n"
                    "  push) cp -r \"$2\" \"$3\" ;;\n"
                    "  pull) cp \"$2\" \"$3\" ;;\n"
                    "  *) echo \"adb shim: $1 unsupported\" >&2; exit 1 ;;\n"
                    "esac\n")
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim.parent}{os.pathsep}{os.environ['PATH']}")
    res = run_profile(bundle, adb="shim-serial", remote_dir=str(tmp_path / "dev"), remote_python=sys.executable,
                      bench_kwargs=FAST, log=None)
    assert res["schema"] == "probscale-edge.bench/1" and res["latency"]["p50_ms"] > 0
    assert res["device"]["transport"] == "adb" and res["device"]["target"] == "shim-serial"


def test_latency_table_over_real_sshd(sshd, tiny_bert):
    """`latency-table --ssh`: every shape is pushed as a bundle and timed by the runtime on the device."""
    from probscale_edge.latency import design_points, measure_table
    from probscale_edge.modeling import EncoderClassifier, load_encoder

    enc, tok, _ = load_encoder(str(tiny_bert))
    model = EncoderClassifier(enc, 2).eval()
    t = measure_table(model, tok, target="x86_64", seq=32, runs=3, passes=1, ssh="root@127.0.0.1",
                      profile_kwargs=dict(port=sshd.port, identity=sshd.client_key, ssh_options=SSH_OPTS,
                                          remote_python=sys.executable))
    assert t.device["transport"] == "ssh" and t.device["emulated"] is False
    assert len(t.points) == len(design_points(4, 4, 64))
    assert all(p["p50_ms"] > 0 for p in t.points)
    assert min(t.base_ms, t.layer_ms, t.head_ms, t.neuron_ms) >= 0
