"""Devices: what CPU a machine has, and benchmarking a bundle on a real device over SSH (or adb).

CPU features (the ``hardware`` command; the ``device.cpu`` field of a profile)::

    detect_cpu_features()                       # this machine's /proc/cpuinfo
    detect_cpu_features(text, machine="aarch64")  # a device's /proc/cpuinfo text
    remote_cpu_features("pi@raspberrypi.local")   # read over ssh

Profiling (the ``profile`` and ``latency-table --ssh`` commands)::

    run_profile("bundle/", ssh="pi@raspberrypi.local")           # a Raspberry Pi, a Jetson, a phone with Termux
    run_profile("bundle/", adb="emulator-5554", remote_python="/data/data/com.termux/files/usr/bin/python3")

What :func:`run_profile` does:

1. check the bundle locally (every checksum), and the connection (unreachable host, refused key and
   host-key problems give a one-line :class:`ProbscaleError` with a fix);
2. probe the device's Python with :mod:`probscale_edge.runtime.device_probe` (its source, sent with
   ``python -c``): version, numpy / onnxruntime / tokenizers, ``uname -m`` and ``/proc/cpuinfo``;
3. push one folder -- the bundle and the pure-Python runtime (``probscale_edge`` with only ``errors`` and
   ``runtime``, no torch) -- with ``tar`` over ssh (or ``scp -r`` / ``adb push``);
4. run ``python -m probscale_edge.runtime.remote_bench`` there, copy the JSON back, delete the remote folder;
5. return the bench JSON (schema ``probscale-edge.bench/1``) with a ``device`` field added.

The device needs Python >= 3.9 with ``numpy``, ``onnxruntime`` and ``tokenizers`` (``pip install
onnxruntime tokenizers``); nothing of probscale-edge is installed there.

``emulate_arm64=True`` is for testing the tool itself against a loopback sshd: the remote command is the
qemu-emulated aarch64 Python that the test harness of a source checkout prepared on this machine
(``python tests/devices/emulation.py`` writes ``<cache>/arm64/emulator.json``); this package never builds
it. Its timings are marked ``latency_is_emulated`` and are never ARM latency.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

from probscale_edge.errors import BundleError, ProbscaleError

MIN_PYTHON = (3, 9)
REMOTE_MODULES = ("numpy", "onnxruntime", "tokenizers")
ADB_DEFAULT_DIR = "/data/local/tmp/probscale-edge-profile"
DEFAULT_REMOTE_DIR = "/tmp/probscale-edge-profile"
PROBE_PREFIX = "PROBSCALE_EDGE_PROBE="
RESULT_PREFIX = "PROBSCALE_EDGE_RESULT="
BENCH_MODULE = "probscale_edge.runtime.remote_bench"
EMULATOR_FILE = "emulator.json"  # under <cache>/arm64/, written by tests/devices/emulation.py
EMULATION_NOTE = ("aarch64 emulated with qemu-user on an x86 host: for correctness only; the time is "
                  "not ARM latency (emulation is 150-560x slower than a real ARM CPU)")

# files of our own package that run on the device besides probscale_edge/runtime/*.py (pure Python, no torch)
_PKG_FILES = ("probscale_edge/__init__.py", "probscale_edge/errors.py")


# ---------------------------------------------------------------------------------------------- CPU features
def _cpuinfo_fields(text: str) -> dict:
    out: dict = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        k, v = line.split(":", 1)
        out.setdefault(k.strip().lower(), v.strip())  # first processor's value
    return out


def _arch(fields: dict, machine: str | None) -> str:
    if "flags" in fields:
        return "x86_64"
    if "features" in fields or "cpu implementer" in fields:
        return "aarch64"
    m = (machine or "").lower()
    if m in ("aarch64", "arm64", "armv8l", "armv8"):
        return "aarch64"
    return "x86_64" if m in ("x86_64", "amd64") else (m or "unknown")


def _x86_fit(fields: dict, out: dict) -> None:
    flags = set(fields.get("flags", "").split())
    feats = {k: k in flags for k in ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")}
    out["features"] = feats
    if feats["avx512f"] and feats["avx512_vnni"]:
        out["recommended_preset"] = "avx512_vnni"
    elif feats["avx_vnni"]:
        out["recommended_preset"] = "x86_64"  # VNNI u8*s8 does not saturate: no reduce_range needed
    elif feats["avx512f"]:
        out["recommended_preset"] = "avx512"
    elif feats["avx2"]:
        out["recommended_preset"] = "avx2"
    else:
        out["recommended_preset"] = "x86_64"
    if not flags:
        out["int8_warning"] = "no CPU flags found in /proc/cpuinfo: int8 speed on this CPU is unknown"
    elif not (feats["avx512_vnni"] or feats["avx_vnni"]):
        out["int8_warning"] = ("this x86 CPU has no VNNI (avx512_vnni / avx_vnni): int8 matrix products use "
                               "slower u8*s8 kernels with reduce_range and may be no faster than fp32; "
                               "benchmark an fp32 bundle too")


def _arm_fit(fields: dict, out: dict) -> None:
    flags = set(fields.get("features", "").split())
    feats = {k: k in flags for k in ("asimd", "asimddp", "i8mm", "sve", "bf16")}
    out["features"] = feats
    out["recommended_preset"] = "arm64"
    if not flags:
        out["int8_warning"] = ("no Features line in /proc/cpuinfo: cannot tell whether this ARM CPU has the "
                               "dot-product extension (asimddp) that makes int8 fast")
    elif not feats["asimddp"]:
        out["int8_warning"] = ("this ARM CPU has no dot-product extension (asimddp, ARMv8.2 sdot/udot), e.g. "
                               "Cortex-A53/A72: int8 kernels are often slower than fp32 there; benchmark an "
                               "fp32 bundle too")


def detect_cpu_features(cpuinfo_text: str | None = None, machine: str | None = None) -> dict:
    """CPU architecture, the int8-relevant features, the fitting quantization preset and a warning.

    ``cpuinfo_text``: the text of a /proc/cpuinfo (e.g. a device's); None reads this machine's.
    Returns ``{"arch", "model", "features": {name: bool}, "recommended_preset", "int8_warning", "source"}``
    where ``recommended_preset`` is one of arm64 | avx2 | avx512 | avx512_vnni | x86_64 and
    ``int8_warning`` is None or a sentence saying why int8 may be slower than fp32 on this CPU.
    """
    local = cpuinfo_text is None
    if local:
        try:
            cpuinfo_text = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo_text = ""
        machine = machine or platform.machine()
    f = _cpuinfo_fields(cpuinfo_text or "")
    arch = _arch(f, machine)
    out = {"arch": arch, "model": f.get("model name") or f.get("hardware") or f.get("cpu part"), "features": {},
           "recommended_preset": None, "int8_warning": None, "source": "local /proc/cpuinfo" if local else "given"}
    if arch == "x86_64":
        _x86_fit(f, out)
    elif arch == "aarch64":
        _arm_fit(f, out)
    else:
        out["int8_warning"] = f"unrecognised CPU architecture {arch!r}: int8 speed unknown"
    return out


def remote_cpu_features(ssh: str, timeout: float = 60) -> dict:
    """:func:`detect_cpu_features` of ``user@host``: ``cat /proc/cpuinfo; uname -m`` over ssh (BatchMode)."""
    if not ssh or ssh.startswith("-"):
        raise ProbscaleError(f"invalid ssh target {ssh!r}", "pass --ssh user@host")
    try:
        r = subprocess.run(["ssh", "-o", "BatchMode=yes", ssh, "cat /proc/cpuinfo; uname -m"], capture_output=True,
                           text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise ProbscaleError("the `ssh` client is not installed on this machine",
                             "apt-get install openssh-client (or your OS's OpenSSH package)") from None
    except subprocess.TimeoutExpired:
        raise ProbscaleError(f"reading /proc/cpuinfo over ssh took over {timeout:.0f} s",
                             "check the host and your ssh key") from None
    if r.returncode != 0:
        raise ProbscaleError(f"could not read /proc/cpuinfo over ssh ({r.stderr.strip()[:120]})",
                             "check the host and your ssh key")
    lines = r.stdout.rstrip().splitlines()
    return detect_cpu_features("\n".join(lines[:-1]), machine=lines[-1].strip() if lines else None)


# ---------------------------------------------------------------------------------------------- transports
def _tail(proc, n=3) -> str:
    text = ((proc.stderr or b"") if isinstance(proc.stderr, bytes) else (proc.stderr or "").encode())
    text = text.decode(errors="replace").strip()
    if not text:
        out = proc.stdout if isinstance(proc.stdout, str) else (proc.stdout or b"").decode(errors="replace")
        text = (out or "").strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) or "no output"


class _Transport:
    kind = "?"
    target = "?"

    def run(self, cmd: str, timeout: float = 60, stdin=None) -> subprocess.CompletedProcess:
        raise NotImplementedError

    def push(self, local: Path, remote: str, timeout: float) -> None:
        raise NotImplementedError

    def read(self, remote_file: str, timeout: float = 60) -> bytes:
        proc = self.run(f"cat {shlex.quote(remote_file)}", timeout=timeout)
        if proc.returncode != 0:
            raise ProbscaleError(f"could not copy {remote_file} back from {self.target} ({_tail(proc)})",
                                 "check free space and permissions of --remote-dir on the device")
        return proc.stdout.encode() if isinstance(proc.stdout, str) else proc.stdout


class SSHTransport(_Transport):
    kind = "ssh"

    def __init__(self, target: str, identity=None, port: int = 22, options=(), connect_timeout: int = 10,
                 transfer: str = "auto"):
        for tool in ("ssh",) + (("scp",) if transfer == "scp" else ()):
            if not shutil.which(tool):
                raise ProbscaleError(f"the `{tool}` client is not installed on this machine",
                                     "apt-get install openssh-client (or your OS's OpenSSH package)")
        if not target or target.startswith("-"):
            raise ProbscaleError(f"invalid ssh target {target!r}", "pass --ssh user@host")
        self.target = target
        self.port = int(port or 22)
        self.transfer = transfer
        common = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(connect_timeout)}", "-o", "LogLevel=ERROR",
                  "-o", "ServerAliveInterval=15"]
        if identity:
            if not Path(identity).expanduser().exists():
                raise ProbscaleError(f"identity file {identity} does not exist", "pass the private key with -i PATH")
            common += ["-i", str(Path(identity).expanduser()), "-o", "IdentitiesOnly=yes"]
        common += [str(o) for o in options]
        self.ssh = ["ssh", "-p", str(self.port), *common]
        self.scp = ["scp", "-q", "-r", "-P", str(self.port), *common]

    def _check(self, proc, what):
        """ssh itself exits 255 on connection/auth errors: turn them into one-line errors with a fix."""
        if proc.returncode != 255:
            return proc
        err = _tail(proc, 4)
        low = err.lower()
        where = f"{self.target} port {self.port}"
        if "permission denied" in low or "too many authentication failures" in low:
            raise ProbscaleError(f"ssh authentication to {where} failed ({err})",
                                 "check the user name and key: pass -i/--identity KEY, or install your public key "
                                 "on the device with ssh-copy-id")
        if "host key verification failed" in low or "remote host identification has changed" in low:
            raise ProbscaleError(f"ssh host key of {where} is unknown or changed ({err})",
                                 "connect once with plain ssh to check and accept the host key, or fix ~/.ssh/known_hosts")
        if any(s in low for s in ("connection refused", "no route to host", "timed out", "could not resolve",
                                  "name or service not known", "network is unreachable", "connection reset",
                                  "connection closed", "temporary failure in name resolution")):
            raise ProbscaleError(f"cannot reach {where} over ssh ({err})",
                                 "check the host name, --port, the network, and that sshd runs on the device")
        raise ProbscaleError(f"ssh to {where} failed while {what} ({err})",
                             "run the same `ssh` by hand to see why")

    def run(self, cmd, timeout=60, stdin=None, what="running a command"):
        try:
            proc = subprocess.run([*self.ssh, self.target, cmd], capture_output=True, timeout=timeout,
                                  stdin=stdin if stdin is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ProbscaleError(f"ssh {self.target}: {what} took over {timeout:.0f} s",
                                 "check the device, or raise the timeout / lower --runs")
        proc.stdout = proc.stdout.decode(errors="replace")
        return self._check(proc, what)

    def push(self, local: Path, remote: str, timeout: float) -> None:
        mode = self.transfer
        if mode == "auto":
            has_tar = self.run("command -v tar >/dev/null 2>&1 && echo yes || echo no", what="checking for tar")
            mode = "tar" if has_tar.stdout.strip().endswith("yes") else "scp"
        if mode == "tar":
            proc = self._push_tar(local, remote, timeout)
        elif mode == "scp":
            proc = self._push_scp(local, remote, timeout)
        else:
            raise ProbscaleError(f"unknown transfer mode {mode!r}", "use auto, tar or scp")
        if proc.returncode != 0:
            raise ProbscaleError(f"could not copy the bundle to {self.target}:{remote} ({_tail(proc)})",
                                 "check free space and that --remote-dir is writable on the device")

    def _push_tar(self, local: Path, remote: str, timeout: float):
        with tempfile.TemporaryFile() as tf:
            with tarfile.open(fileobj=tf, mode="w") as tar:
                for p in sorted(local.rglob("*")):
                    tar.add(p, arcname=str(p.relative_to(local)), recursive=False)
            tf.seek(0)
            cmd = f"mkdir -p {shlex.quote(remote)} && tar -xf - -C {shlex.quote(remote)}"
            return self.run(cmd, timeout=timeout, stdin=tf, what="pushing the bundle (tar)")

    def _push_scp(self, local: Path, remote: str, timeout: float):
        parent = str(Path(remote).parent)
        mk = self.run(f"mkdir -p {shlex.quote(parent)}", what="creating the remote folder")
        if mk.returncode != 0:
            raise ProbscaleError(f"cannot create {parent} on {self.target} ({_tail(mk)})",
                                 "pass a writable --remote-dir")
        src = local.parent / Path(remote).name
        if src != local:
            os.replace(local, src)
            local = src
        try:
            proc = subprocess.run([*self.scp, str(local), f"{self.target}:{parent}/"], capture_output=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ProbscaleError(f"scp to {self.target} took over {timeout:.0f} s", "check the network")
        return self._check(proc, "pushing the bundle (scp)")


class ADBTransport(_Transport):
    kind = "adb"

    def __init__(self, serial: str | None = None, adb: str = "adb"):
        if not shutil.which(adb):
            raise ProbscaleError("`adb` is not installed on this machine",
                                 "install Android platform-tools (apt-get install adb) and enable USB debugging")
        self.adb = [adb] + (["-s", serial] if serial and serial not in ("default", "-") else [])
        self.target = serial or "the only adb device"

    def _call(self, args, timeout, what, binary=False):
        try:
            proc = subprocess.run([*self.adb, *args], capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ProbscaleError(f"adb {self.target}: {what} took over {timeout:.0f} s", "check the device")
        if not binary:
            proc.stdout = proc.stdout.decode(errors="replace")
        low = proc.stderr.decode(errors="replace").lower()
        if proc.returncode != 0 and any(s in low for s in ("no devices", "device offline", "not found",
                                                            "unauthorized", "more than one device")):
            fix = ("accept the USB-debugging prompt on the phone" if "unauthorized" in low else
                   "pass --adb SERIAL (see `adb devices`)" if "more than one" in low else
                   "connect the device, enable USB debugging, and check `adb devices`")
            raise ProbscaleError(f"adb cannot use {self.target} ({_tail(proc)})", fix)
        return proc

    def run(self, cmd, timeout=60, stdin=None, what="running a command"):
        return self._call(["shell", cmd], timeout, what)

    def push(self, local: Path, remote: str, timeout: float) -> None:
        mk = self.run(f"mkdir -p {shlex.quote(remote)}", what="creating the remote folder")
        if mk.returncode != 0:
            raise ProbscaleError(f"cannot create {remote} on {self.target} ({_tail(mk)})",
                                 f"pass a writable --remote-dir (e.g. {ADB_DEFAULT_DIR})")
        for p in sorted(local.iterdir()):
            proc = self._call(["push", str(p), f"{remote}/"], timeout, "pushing the bundle")
            if proc.returncode != 0:
                raise ProbscaleError(f"adb push to {self.target}:{remote} failed ({_tail(proc)})",
                                     "check free space on the device")

    def read(self, remote_file, timeout=60):
        with tempfile.TemporaryDirectory() as tmp:
            proc = self._call(["pull", remote_file, tmp + "/r"], timeout, "copying the result back")
            if proc.returncode != 0:
                raise ProbscaleError(f"adb pull {remote_file} failed ({_tail(proc)})", "check the device")
            return Path(tmp, "r").read_bytes()


# ---------------------------------------------------------------------------------------------- the pushed runtime
def runtime_source_files() -> dict:
    """{relative path in the device tree: local source path} of the pure-Python runtime."""
    import probscale_edge
    import probscale_edge.runtime as rt

    pkg = Path(probscale_edge.__file__).resolve().parent
    files = {rel: pkg.parent / rel for rel in _PKG_FILES}
    if not all(p.exists() for p in files.values()):  # installed non-editable: files sit under the package
        files = {rel: pkg / Path(rel).name for rel in _PKG_FILES}
    rtdir = Path(rt.__file__).resolve().parent
    for p in sorted(rtdir.glob("*.py")):
        files[f"probscale_edge/runtime/{p.name}"] = p
    return files


def copy_runtime_tree(dest: Path) -> Path:
    """Write the pure-Python runtime (``probscale_edge`` with only ``errors`` and ``runtime``) under ``dest``."""
    for rel, src in runtime_source_files().items():
        out = Path(dest) / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out)
    return Path(dest)


def _probe_source() -> str:
    from probscale_edge.runtime import device_probe

    return Path(device_probe.__file__).read_text(encoding="utf-8")


def _stage(bundle: Path, into: Path, bench_cfg: dict) -> int:
    from probscale_edge.runtime.bundle import bundle_files, verify_bundle

    manifest = verify_bundle(bundle)
    (into / "bundle").mkdir(parents=True)
    for name in bundle_files(manifest, bundle):  # listed files, manifest, its digest (and signature)
        dst = into / "bundle" / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundle / name, dst)
    copy_runtime_tree(into / "pkg")
    (into / "bench_config.json").write_text(json.dumps(bench_cfg))
    return sum(p.stat().st_size for p in into.rglob("*") if p.is_file())


def _bench_config(bench_kwargs: dict | None, emulated: bool) -> dict:
    from dataclasses import asdict

    from probscale_edge.runtime.bench import BenchConfig

    kw = dict(bench_kwargs or {})
    if emulated:  # qemu is 150-560x slower: a handful of runs shows that it works, nothing more
        kw.setdefault("warmup_runs", 1)
        kw.setdefault("num_runs", 5)
        kw.setdefault("threads", 1)
    try:
        cfg = BenchConfig(**kw)
    except TypeError as e:
        raise ProbscaleError(f"bad benchmark setting ({e})",
                             "use warmup_runs, num_runs, batch_size, threads, backend, sequence_length, texts")
    d = asdict(cfg)
    json.dumps(d)
    return d


def _remote_path(p: str) -> str:
    """A path the remote shell can use quoted: ``~/x`` becomes ``x`` (commands start in the home folder)."""
    p = p.strip() or DEFAULT_REMOTE_DIR
    if p == "~":
        return "."
    if p.startswith("~/"):
        return p[2:] or "."
    return p.rstrip("/") or "/"


def emulated_remote_python() -> str:
    """The command of the qemu-emulated aarch64 Python prepared on this machine (for ``emulate_arm64``).

    Only reads ``<cache>/arm64/emulator.json``; building the emulator is the test harness's job."""
    from probscale_edge.assets import cache_dir

    path = cache_dir() / "arm64" / EMULATOR_FILE
    prepare = "from a source checkout run: python tests/devices/emulation.py (needs qemu-user-static)"
    try:
        desc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProbscaleError(f"no emulated aarch64 Python is prepared on this machine ({path} is missing)",
                             prepare) from None
    except (OSError, ValueError) as e:
        raise ProbscaleError(f"cannot read {path} ({e})", prepare) from None
    gone = [p for p in desc.get("requires", []) if not Path(p).exists()]
    if gone or not desc.get("remote_python"):
        raise ProbscaleError(f"the emulated aarch64 Python of {path} is incomplete ({(gone or ['no command'])[0]})",
                             prepare)
    return desc["remote_python"]


# ---------------------------------------------------------------------------------------------- profile steps
def _open_transport(ssh, adb, identity, port, ssh_options, connect_timeout, transfer) -> _Transport:
    if ssh:
        return SSHTransport(ssh, identity, port, ssh_options, connect_timeout, transfer)
    return ADBTransport(adb)


def _connect(transport: _Transport, connect_timeout: int, log) -> tuple[str, str]:
    """``uname -m`` and ``uname -a`` of the device (the first command: connection problems surface here)."""
    where = f"{transport.kind} {transport.target}"
    log(f"connecting to {where} ...")
    hello = transport.run("uname -m; uname -a", timeout=connect_timeout + 30, what="connecting")
    if hello.returncode != 0:
        raise ProbscaleError(f"{where}: `uname` failed ({_tail(hello)})", "the device needs a POSIX shell")
    lines = hello.stdout.strip().splitlines()
    uname_m, uname_a = (lines + ["", ""])[:2]
    return uname_m, uname_a


def _probe_python(transport: _Transport, remote_python: str, emulated: bool, log) -> dict:
    """Run :mod:`probscale_edge.runtime.device_probe` with the device's Python; check version and modules."""
    where = f"{transport.kind} {transport.target}"
    log(f"probing {remote_python.split()[-1] if emulated else remote_python} on the device ...")
    probe = transport.run(f"{remote_python} -c {shlex.quote(_probe_source())}", timeout=300 if emulated else 60,
                          what="probing Python")
    info = None
    for ln in (probe.stdout or "").splitlines():
        if ln.startswith(PROBE_PREFIX):
            info = json.loads(ln.split("=", 1)[1])
    if info is None:
        err = _tail(probe)
        if probe.returncode == 127 or "not found" in err.lower() or "no such file" in err.lower():
            raise ProbscaleError(f"no Python at `{remote_python}` on {where} ({err})",
                                 "install Python >= 3.9 on the device (apt install python3; Termux: pkg install "
                                 "python) or pass --remote-python PATH")
        raise ProbscaleError(f"`{remote_python}` on {where} could not run the probe (exit {probe.returncode}: "
                             f"{err})", "pass --remote-python pointing at Python >= 3.9")
    pyv = tuple(int(x) for x in info["python"].split(".")[:2])
    if pyv < MIN_PYTHON:
        raise ProbscaleError(f"the device's Python is {info['python']}; the runtime needs >= "
                             f"{'.'.join(map(str, MIN_PYTHON))}", "install a newer Python or pass --remote-python")
    if info["missing"]:
        names = ", ".join(info["missing"])
        detail = "; ".join(f"{k}: {v}" for k, v in info["missing"].items())
        raise ProbscaleError(f"{names} missing on {where} for `{remote_python}` ({detail[:300]})",
                             f"on the device run: {remote_python} -m pip install onnxruntime numpy tokenizers")
    return info


def _push(transport: _Transport, stage: Path, run_dir: str, nbytes: int, timeout: float, log) -> float:
    log(f"pushing the bundle and the runtime ({nbytes / 1e6:.1f} MB) to {transport.target}:{run_dir} ...")
    t = time.time()
    transport.push(stage, run_dir, timeout=timeout)
    return time.time() - t


def _run_bench(transport: _Transport, run_dir: str, remote_python: str, bench_cfg: dict, timeout: float,
               log) -> tuple[dict, float]:
    """Run :mod:`probscale_edge.runtime.remote_bench` in ``run_dir`` and fetch its JSON; (result, seconds)."""
    where = f"{transport.kind} {transport.target}"
    log(f"benchmarking on the device ({bench_cfg['warmup_runs']} warm-up + {bench_cfg['num_runs']} runs) ...")
    t = time.time()
    # -m imports probscale_edge from the current folder: the pushed pkg/, never anything installed there
    cmd = f"cd {shlex.quote(run_dir + '/pkg')} && {remote_python} -m {BENCH_MODULE} .."
    proc = transport.run(cmd, timeout=timeout, what="running the benchmark")
    run_s = time.time() - t
    if proc.returncode != 0 or RESULT_PREFIX not in (proc.stdout or ""):
        raise ProbscaleError(f"the benchmark failed on {where} (exit {proc.returncode}: {_tail(proc, 4)})",
                             "run it by hand there with keep_remote=True / --keep-remote to see the traceback")
    raw = transport.read(f"{run_dir}/result.json")
    try:
        return json.loads(raw), run_s
    except json.JSONDecodeError as e:
        raise ProbscaleError(f"the device's result.json is not valid JSON ({e})", "run again")


def _cleanup(transport: _Transport, run_dir: str) -> None:
    try:
        transport.run(f"rm -rf {shlex.quote(run_dir)}", timeout=60, what="cleaning up")
    except ProbscaleError:
        pass


def _device_record(transport: _Transport, info: dict, cpu: dict, uname_m: str, uname_a: str, emulated: bool) -> dict:
    dev = {"transport": transport.kind, "target": transport.target, "machine": uname_m, "uname": uname_a,
           "python_machine": info.get("machine"), "python": info["python"], "system": info.get("system"),
           "cpus": info.get("cpus"), **{m: info.get(m) for m in REMOTE_MODULES}, "cpu": cpu,
           "emulated": bool(emulated)}
    if emulated:  # uname -m is the x86 host's: the emulated interpreter is what ran the benchmark
        dev["machine"] = info.get("machine")
        dev["host_machine"] = uname_m
    return dev


def _warnings(result: dict, cpu: dict, bundle: Path) -> list:
    warnings = []
    if cpu.get("int8_warning") and (result.get("precision") or "") == "int8":
        warnings.append(cpu["int8_warning"])
    try:
        target = json.loads((bundle / "manifest.json").read_text()).get("target")
    except (OSError, json.JSONDecodeError):
        target = None
    if target in ("arm64", "android") and cpu["arch"] == "x86_64":
        warnings.append(f"bundle was built for {target} but the device is x86_64")
    if target in ("x86_64", "avx2", "avx512", "avx512_vnni") and cpu["arch"] == "aarch64":
        warnings.append(f"bundle was built for {target} but the device is aarch64: rebuild with --target arm64")
    return warnings


# ---------------------------------------------------------------------------------------------- main entry
def run_profile(bundle, ssh: str | None = None, adb: str | None = None, identity=None, port: int = 22,
                remote_dir: str = DEFAULT_REMOTE_DIR, remote_python: str = "python3", bench_kwargs: dict | None = None,
                emulate_arm64: bool = False, log=print, ssh_options=(), transfer: str = "auto",
                keep_remote: bool = False, timeout: float = 900, connect_timeout: int = 10) -> dict:
    """Push ``bundle`` and the runtime to a device, benchmark it there, return the bench JSON plus ``device``.

    ``ssh``: ``user@host``; ``adb``: a device serial ("default" for the only device). Exactly one.
    ``identity``/``port``/``ssh_options`` (e.g. ``["-o", "StrictHostKeyChecking=accept-new"]``): ssh settings.
    ``remote_python``: the device's interpreter (a command prefix: ``"env OMP_NUM_THREADS=1 python3"`` works).
    ``bench_kwargs``: :class:`probscale_edge.runtime.bench.BenchConfig` fields (warmup_runs, num_runs,
    batch_size, threads, sequence_length, texts ...). ``transfer``: auto | tar | scp (ssh only).
    ``keep_remote``: leave the pushed folder on the device. Raises :class:`ProbscaleError` with a fix on
    unreachable hosts, refused keys, a missing Python or missing onnxruntime/numpy/tokenizers on the device.
    """
    log = log or (lambda *_: None)
    t_start = time.time()
    if bool(ssh) == bool(adb):
        raise ProbscaleError("pass exactly one of --ssh user@host or --adb SERIAL", "e.g. --ssh pi@raspberrypi.local")
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise BundleError(f"bundle {bundle} does not exist or is not a folder",
                          "pass the folder written by `probscale-edge build`")
    if adb and remote_dir == DEFAULT_REMOTE_DIR:
        remote_dir = ADB_DEFAULT_DIR  # Android has no writable /tmp
    run_dir = f"{_remote_path(remote_dir).rstrip('/')}/run-{uuid.uuid4().hex[:12]}"
    bench_cfg = _bench_config(bench_kwargs, emulate_arm64)
    if emulate_arm64:
        remote_python = emulated_remote_python()
    transport = _open_transport(ssh, adb, identity, port, ssh_options, connect_timeout, transfer)
    uname_m, uname_a = _connect(transport, connect_timeout, log)
    with tempfile.TemporaryDirectory(prefix="probscale-profile-") as tmp:
        stage = Path(tmp) / Path(run_dir).name
        stage.mkdir()
        nbytes = _stage(bundle, stage, bench_cfg)  # verifies every checksum before anything is pushed
        info = _probe_python(transport, remote_python, emulate_arm64, log)
        cpu = detect_cpu_features(info.get("cpuinfo") or "", machine=info.get("machine") or uname_m)
        push_s = _push(transport, stage, run_dir, nbytes, timeout, log)
    try:
        result, run_s = _run_bench(transport, run_dir, remote_python, bench_cfg, timeout, log)
    finally:
        if not keep_remote:
            _cleanup(transport, run_dir)
    result["bundle"] = str(bundle)
    result["device"] = _device_record(transport, info, cpu, uname_m, uname_a, emulate_arm64)
    if emulate_arm64:
        result["latency_is_emulated"] = True
        result["note"] = EMULATION_NOTE
    result["warnings"] = _warnings(result, cpu, bundle)
    result["profile"] = {"remote_dir": run_dir, "pushed_bytes": nbytes, "push_seconds": round(push_s, 2),
                         "run_seconds": round(run_s, 2), "total_seconds": round(time.time() - t_start, 2),
                         "kept_remote": bool(keep_remote)}
    return result


def summary_line(result: dict) -> str:
    """One human line for the CLI."""
    d = result.get("device", {})
    lat = result.get("latency", {})
    emu = " (EMULATED: not ARM latency)" if result.get("latency_is_emulated") else ""
    return (f"{d.get('target')} [{d.get('machine')}, {d.get('cpus')} CPUs, onnxruntime {d.get('onnxruntime')}]: "
            f"p50 {lat.get('p50_ms', float('nan')):.2f} ms, p90 {lat.get('p90_ms', float('nan')):.2f} ms, "
            f"init {result.get('init_ms', float('nan')):.0f} ms, batch {result.get('batch_size')}, "
            f"threads {result.get('threads') or 'default'}{emu}; preset fit: {d.get('cpu', {}).get('recommended_preset')}")
