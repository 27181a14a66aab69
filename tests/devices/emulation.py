"""Test harness: the runtime as aarch64 under qemu-user on an x86 host (not part of the installed package).

Used by tests/devices/*.py (``from devices.emulation import ...``; pytest has ``tests`` on its path) and by
benchmarks/arm64/*.py (which put ``tests`` on ``sys.path``). It

* builds, once, an aarch64 Python 3.11 sysroot from Debian's arm64 packages (apt-get), aarch64 wheels of
  numpy / onnxruntime / tokenizers (pip --target) and a pure-Python copy of our runtime
  (:func:`ensure_arm64_env`), and records the emulated interpreter in ``<cache>/arm64/emulator.json`` so that
  ``probscale-edge profile --emulate-arm64`` can use it over a loopback sshd;
* runs ``python -m probscale_edge.runtime.remote_predict`` inside it under ``qemu-aarch64-static``
  (:func:`run_emulated_predict`) and compares with this machine's native runtime (:func:`compare_with_native`),
  optionally against an x86 run with exact int32 products (:func:`exact_int32_model`).

Emulation is for **correctness only**: it is 150-560x slower than a real ARM CPU, so its timings are never ARM
latency and are reported only as ``emulated_seconds``.

Cache layout (under ``probscale_edge.assets.cache_dir()/arm64/``; every entry is built in a temporary folder
beside it and renamed into place, so an interrupted build leaves nothing half-made)::

    sysroot-py3.11/       Debian bookworm arm64 python3.11 + libstdc++ (+ proc/cpuinfo of a Neoverse-N1)
    site-<hash>/          aarch64 wheels (pip --target), pinned to the host's versions when possible
    pkg-<hash>/           probscale_edge/{__init__,errors}.py + probscale_edge/runtime/*.py
    emulator.json         the emulated interpreter as a remote command (read by probscale_edge.devices)

    python tests/devices/emulation.py [CACHE_DIR]    # prepare it (needs root for apt-get, or a prepared host)
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from probscale_edge.devices import EMULATION_NOTE, EMULATOR_FILE, copy_runtime_tree, detect_cpu_features, \
    runtime_source_files
from probscale_edge.errors import ProbscaleError

QEMU = "qemu-aarch64-static"
QEMU_CPU = "neoverse-n1"  # never qemu's default `max`: it enables SME and ORT int8 then gives wrong numbers
PYTHON_VERSION = "3.11"
DEB_ROOTS = ("python3.11-minimal:arm64", "libpython3.11-stdlib:arm64", "libstdc++6:arm64", "libgcc-s1:arm64")
# packages the dependency walk reaches that a sysroot does not need (tools, not libraries)
DEB_SKIP = {"dpkg", "tar", "install-info", "perl", "perl-base", "debconf", "mime-support", "media-types",
            "readline-common", "libtirpc-common"}
WHEELS = ("numpy", "onnxruntime", "tokenizers")
WHEEL_PLATFORMS = ("manylinux_2_17_aarch64", "manylinux2014_aarch64", "manylinux_2_24_aarch64",
                   "manylinux_2_27_aarch64", "manylinux_2_28_aarch64", "manylinux_2_31_aarch64",
                   "manylinux_2_34_aarch64", "manylinux_2_35_aarch64", "manylinux_2_36_aarch64")
NEOVERSE_N1_FEATURES = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc "
                        "dcpop asimddp")
PREDICT_MODULE = "probscale_edge.runtime.remote_predict"


def arm_cpuinfo(features: str = NEOVERSE_N1_FEATURES, cpus: int = 1, part: str = "0xd0c") -> str:
    """A /proc/cpuinfo of an ARM CPU (default: Neoverse-N1, matching ``QEMU_CPU``)."""
    block = ("processor\t: {i}\nBogoMIPS\t: 50.00\nFeatures\t: {f}\nCPU implementer\t: 0x41\n"
             "CPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: {p}\nCPU revision\t: 1\n\n")
    return "".join(block.format(i=i, f=features, p=part) for i in range(max(1, cpus)))


# ---------------------------------------------------------------------------------------------- environment
def _root(cache_dir=None) -> Path:
    if cache_dir is None:
        from probscale_edge.assets import cache_dir as _cd

        return _cd() / "arm64"
    return Path(cache_dir)


def _lock(path: Path):
    from probscale_edge.assets import file_lock  # one file-lock helper for every cache writer

    return file_lock(path)


def _run(cmd, log=None, what="", fix="", **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        tail = ((proc.stderr or "") + (proc.stdout or "")).strip().splitlines()[-3:]
        raise ProbscaleError(f"{what or ' '.join(map(str, cmd[:3]))} failed (exit {proc.returncode}: "
                             f"{' | '.join(tail) or 'no output'})", fix)
    return proc


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def ensure_host_tools(install: bool = True, log=print) -> str:
    """Make sure qemu-aarch64-static is present (apt-get installs it when we are root and allowed)."""
    q = shutil.which(QEMU)
    if q:
        return q
    if install and _is_root() and shutil.which("apt-get"):
        log(f"installing qemu-user-static (for {QEMU}) with apt-get ...")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        proc = subprocess.run(["apt-get", "install", "-y", "-q", "qemu-user-static"], capture_output=True,
                              text=True, env=env)
        if proc.returncode != 0:
            _run(["apt-get", "update", "-q"], what="apt-get update", fix="check that the Debian mirror is reachable",
                 env=env)
            _run(["apt-get", "install", "-y", "-q", "qemu-user-static"], what="apt-get install qemu-user-static",
                 fix="install qemu-user-static by hand", env=env)
        q = shutil.which(QEMU)
    if not q:
        raise ProbscaleError(f"{QEMU} is not installed, so aarch64 cannot be emulated",
                             "apt-get install -y qemu-user-static (Debian/Ubuntu)")
    return q


def _ensure_arm64_apt(install: bool, log) -> None:
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        raise ProbscaleError("building the aarch64 sysroot needs apt-get and dpkg (Debian/Ubuntu)",
                             "run on Debian/Ubuntu, or pass cache_dir= pointing at a prepared arm64 folder")
    foreign = subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True, text=True).stdout.split()
    need_update = False
    if "arm64" not in foreign:
        if not (install and _is_root()):
            raise ProbscaleError("dpkg has no arm64 architecture, so arm64 packages cannot be downloaded",
                                 "sudo dpkg --add-architecture arm64 && sudo apt-get update")
        log("dpkg --add-architecture arm64 && apt-get update ...")
        _run(["dpkg", "--add-architecture", "arm64"], what="dpkg --add-architecture arm64", fix="run as root")
        need_update = True
    if not need_update:
        probe = subprocess.run(["apt-cache", "policy", DEB_ROOTS[0]], capture_output=True, text=True)
        need_update = "Candidate: (none)" in probe.stdout or not probe.stdout.strip()
        if need_update and not (install and _is_root()):
            raise ProbscaleError("apt has no arm64 package lists", "sudo apt-get update")
    if need_update:
        _run(["apt-get", "update", "-q"], what="apt-get update", fix="check that the Debian mirror is reachable",
             env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def _deb_closure() -> list[str]:
    proc = _run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
                 "--no-breaks", "--no-replaces", "--no-enhances", *DEB_ROOTS],
                what="apt-cache depends", fix="sudo apt-get update")
    names = set()
    for line in proc.stdout.splitlines():
        if line.startswith(" ") or line.startswith("<"):
            continue
        name = line.strip()
        if not name.endswith(":arm64"):
            continue
        if name.split(":")[0] in DEB_SKIP:
            continue
        names.add(name)
    return sorted(names)


def _emu_env(sysroot: Path, pythonpath) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "QEMU_"))}
    env.update(QEMU_CPU=QEMU_CPU, QEMU_LD_PREFIX=str(sysroot), PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=os.pathsep.join(str(p) for p in pythonpath), LC_ALL="C.UTF-8", OMP_NUM_THREADS="1")
    return env


def emulated_python_cmd(paths: dict) -> list[str]:
    """argv prefix that runs the aarch64 Python under qemu (use with :func:`emulated_env`)."""
    sysroot = Path(paths["sysroot"])
    return [paths.get("qemu") or QEMU, "-L", str(sysroot), str(sysroot / "usr" / "bin" / f"python{PYTHON_VERSION}")]


def emulated_env(paths: dict, extra_pythonpath=()) -> dict:
    _write_cpuinfo(Path(paths["sysroot"]))
    return _emu_env(Path(paths["sysroot"]), [*extra_pythonpath, paths["pkg"], paths["site"]])


def remote_python_cmd(paths: dict) -> str:
    """The emulated interpreter as one shell command prefix (what ``run_profile(emulate_arm64=True)`` runs).

    Its PYTHONPATH has only the aarch64 wheels: our runtime comes from the pushed folder, not from the cache."""
    env = emulated_env(paths)
    keep = {k: env[k] for k in ("QEMU_CPU", "QEMU_LD_PREFIX", "PYTHONNOUSERSITE", "PYTHONDONTWRITEBYTECODE", "LC_ALL")}
    keep["PYTHONPATH"] = paths["site"]
    return "env " + " ".join(f"{k}={shlex.quote(v)}" for k, v in keep.items()) + " " + \
        " ".join(shlex.quote(a) for a in emulated_python_cmd(paths))


def _write_cpuinfo(sysroot: Path) -> None:
    """ORT reads /proc/cpuinfo to pick kernels; qemu -L maps absolute paths into the sysroot first, so an ARM
    cpuinfo there stops ORT from parsing the x86 host's (which segfaults it)."""
    text = arm_cpuinfo(cpus=os.cpu_count() or 1)
    p = sysroot / "proc" / "cpuinfo"
    if p.exists() and p.read_text() == text:
        return
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".cpuinfo.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, p)


def _check_emulated_python(qemu: str, root: Path, py: Path) -> None:
    _write_cpuinfo(root)
    proc = _run([qemu, "-L", str(root), str(py), "-c", "import platform, ssl, json; print(platform.machine())"],
                what="the emulated aarch64 python", fix="reinstall qemu-user-static", env=_emu_env(root, []))
    if proc.stdout.strip() != "aarch64":
        raise ProbscaleError(f"emulated python reports machine {proc.stdout.strip()!r}, not aarch64",
                             "reinstall qemu-user-static")


def _build_sysroot(dest: Path, qemu: str, install: bool, log) -> None:
    _ensure_arm64_apt(install, log)
    debs = _deb_closure()
    log(f"downloading {len(debs)} Debian arm64 packages for the Python {PYTHON_VERSION} sysroot ...")
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        dl = tmp / "debs"
        dl.mkdir()
        _run(["apt-get", "download", "-q", *debs], what="apt-get download (arm64 .debs)",
             fix="apt-get update, and check that the Debian mirror is reachable", cwd=dl)
        root = tmp / "root"
        root.mkdir()
        for deb in sorted(dl.glob("*.deb")):
            _run(["dpkg", "-x", str(deb), str(root)], what=f"dpkg -x {deb.name}", fix="delete the cache folder and retry")
        py = root / "usr" / "bin" / f"python{PYTHON_VERSION}"
        if not py.exists():
            raise ProbscaleError(f"the arm64 packages gave no python{PYTHON_VERSION}", "apt-get update and retry")
        _check_emulated_python(qemu, root, py)
        shutil.rmtree(dl)
        (root / ".complete").write_text(json.dumps({"debs": debs, "created_unix": int(time.time())}, indent=1))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(root, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _host_versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in WHEELS:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def _pip_target(dest_tmp: Path, reqs: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
           "--target", str(dest_tmp)]
    for p in WHEEL_PLATFORMS:
        cmd += ["--platform", p]
    cmd += ["--python-version", PYTHON_VERSION, "--implementation", "cp", "--only-binary=:all:", *reqs]
    return subprocess.run(cmd, capture_output=True, text=True)


def _download_wheels(site: Path, pinned: list[str], log) -> list[str]:
    """pip --target the aarch64 wheels into ``site``; the pinned versions first, else the newest. Returns the pins."""
    proc = _pip_target(site, pinned)
    used = pinned
    if proc.returncode != 0 and pinned != list(WHEELS):
        log("the host's exact versions have no aarch64 wheels; taking the newest ones")
        shutil.rmtree(site, ignore_errors=True)
        used = list(WHEELS)
        proc = _pip_target(site, used)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-2:]
        raise ProbscaleError(f"could not download aarch64 wheels ({' | '.join(tail)})", "check that PyPI is reachable")
    return used


def _import_wheels(qemu: str, sysroot: Path, site: Path) -> dict:
    env = _emu_env(sysroot, [site])
    _write_cpuinfo(sysroot)
    probe = ("import json, platform, numpy, onnxruntime, tokenizers; print(json.dumps({'machine': "
             "platform.machine(), 'numpy': numpy.__version__, 'onnxruntime': onnxruntime.__version__, "
             "'tokenizers': tokenizers.__version__}))")
    proc = _run([qemu, "-L", str(sysroot), str(sysroot / "usr/bin" / f"python{PYTHON_VERSION}"), "-c", probe],
                what="importing the aarch64 wheels under qemu", fix="delete the arm64 cache folder and retry", env=env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _build_site(root: Path, qemu: str, sysroot: Path, pin: bool, log, built: list) -> Path:
    versions = _host_versions() if pin else {n: None for n in WHEELS}
    pinned = [f"{n}=={v}" if v else n for n, v in versions.items()]
    key = hashlib.sha256(json.dumps([pinned, WHEEL_PLATFORMS]).encode()).hexdigest()[:12]
    dest = root / f"site-{key}"
    if (dest / ".complete").exists():
        return dest
    with _lock(root / "locks" / f"site-{key}.lock"):
        if (dest / ".complete").exists():
            return dest
        log(f"downloading aarch64 wheels: {' '.join(pinned)} ...")
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".site-{key}."))
        try:
            used = _download_wheels(tmp / "site", pinned, log)
            info = _import_wheels(qemu, sysroot, tmp / "site")
            (tmp / "site" / ".complete").write_text(json.dumps({"requirements": used, "imported": info}, indent=1))
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(tmp / "site", dest)
            built.append("site")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _build_pkg(root: Path) -> Path:
    files = runtime_source_files()
    h = hashlib.sha256()
    for rel, src in sorted(files.items()):
        h.update(rel.encode() + b"\0" + Path(src).read_bytes() + b"\0")
    dest = root / f"pkg-{h.hexdigest()[:12]}"
    if (dest / ".complete").exists():
        return dest
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{dest.name}."))
    try:
        copy_runtime_tree(tmp)
        (tmp / ".complete").write_text("ok\n")
        try:
            os.replace(tmp, dest)
        except OSError:  # another process won the race with identical content
            if not (dest / ".complete").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _write_emulator_record(paths: dict) -> None:
    """``<root>/emulator.json``: what :func:`probscale_edge.devices.emulated_remote_python` reads."""
    record = {"remote_python": remote_python_cmd(paths), "requires": [paths["qemu"], paths["python"], paths["site"]],
              "qemu_cpu": QEMU_CPU, "written_by": "tests/devices/emulation.py"}
    p = Path(paths["root"]) / EMULATOR_FILE
    tmp = p.with_name(f".{EMULATOR_FILE}.{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, p)


def ensure_arm64_env(cache_dir=None, log=print, install: bool = True, pin_versions: bool = True) -> dict:
    """Build (once) everything needed to run the runtime as aarch64 under qemu-user; returns the paths.

    ``install``: when root, may apt-get install qemu-user-static and add dpkg's arm64 architecture.
    ``pin_versions``: take the host's numpy/onnxruntime/tokenizers versions for aarch64, so emulated and
    native outputs come from the same library releases.
    Returns ``{"root", "qemu", "sysroot", "python", "site", "pkg", "setup_seconds", "built": [...]}``.
    """
    log = log or (lambda *_: None)
    t0 = time.time()
    if platform.system() != "Linux":
        raise ProbscaleError("aarch64 emulation needs Linux (qemu-user)", "run it on a Linux x86_64 machine")
    root = _root(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    built = []
    native = platform.machine() in ("aarch64", "arm64")
    qemu = ensure_host_tools(install, log)
    sysroot = root / f"sysroot-py{PYTHON_VERSION}"
    if not (sysroot / ".complete").exists():
        with _lock(root / "locks" / "sysroot.lock"):
            if not (sysroot / ".complete").exists():
                _build_sysroot(sysroot, qemu, install, log)
                built.append("sysroot")
    _write_cpuinfo(sysroot)
    site = _build_site(root, qemu, sysroot, pin_versions, log, built)
    pkg = _build_pkg(root)
    paths = {"root": str(root), "qemu": qemu, "sysroot": str(sysroot), "native_arm": native,
             "python": str(sysroot / "usr" / "bin" / f"python{PYTHON_VERSION}"), "site": str(site), "pkg": str(pkg),
             "qemu_cpu": QEMU_CPU, "setup_seconds": round(time.time() - t0, 2), "built": built}
    _write_emulator_record(paths)
    return paths


# ---------------------------------------------------------------------------------------------- running
def run_emulated(paths: dict, argv: list, timeout: float | None = None, extra_pythonpath=(), **kw):
    """Run ``python3.11 *argv`` as aarch64 under qemu; returns the CompletedProcess."""
    return subprocess.run([*emulated_python_cmd(paths), *map(str, argv)], env=emulated_env(paths, extra_pythonpath),
                          capture_output=True, text=True, timeout=timeout, **kw)


def run_emulated_predict(bundle, texts, threads: int = 1, batch_size: int = 32, paths: dict | None = None,
                         info: dict | None = None, timeout: float | None = 1800, log=None):
    """Logits (float32, [n, labels]) of ``bundle`` on ``texts`` computed by the aarch64 runtime under qemu.

    ``info``: a dict to fill with what the emulated interpreter reported (``machine`` -- 'aarch64' --,
    library versions, ``emulated_seconds``; emulated time is never ARM latency).
    """
    import numpy as np

    paths = paths or ensure_arm64_env(log=log or (lambda *_: None))
    bundle = Path(bundle).resolve()
    with tempfile.TemporaryDirectory(prefix="probscale-arm64-") as tmp:
        tmp = Path(tmp)
        t0 = time.time()
        args = {"bundle": str(bundle), "texts": [str(t) for t in texts], "threads": threads, "batch_size": batch_size,
                "out": str(tmp / "logits.npy"), "info": str(tmp / "info.json"), "launched_unix": t0}
        (tmp / "args.json").write_text(json.dumps(args), encoding="utf-8")
        try:  # cwd=tmp: `-m` puts the current folder first on sys.path, so never a source checkout
            proc = run_emulated(paths, ["-m", PREDICT_MODULE, tmp / "args.json"], timeout=timeout, cwd=tmp)
        except subprocess.TimeoutExpired:
            raise ProbscaleError(f"emulated aarch64 prediction took over {timeout:.0f} s",
                                 "pass fewer texts (emulation is 150-560x slower than native)")
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-4:]
            sig = f" (signal {-proc.returncode})" if proc.returncode < 0 else ""
            raise ProbscaleError(f"the emulated aarch64 runtime failed{sig}: {' | '.join(tail) or 'no output'}",
                                 "check the bundle with `probscale-edge verify`; delete the arm64 cache folder "
                                 "and retry")
        got = json.loads((tmp / "info.json").read_text())
        got.update(emulated_seconds=round(time.time() - t0, 2), qemu_cpu=QEMU_CPU, note=EMULATION_NOTE)
        if info is not None:
            info.update(got)
        return np.load(tmp / "logits.npy")


# ---------------------------------------------------------------------------------------------- comparing
def x86_int8_saturates(manifest: dict, cpu: dict | None = None) -> tuple[bool, str]:
    """Whether this x86 host's int8 kernels give *systematically different* numbers than ARM's for this bundle.

    ONNX Runtime's u8*s8 kernels on AVX2/AVX-512 without VNNI add pairs of products in int16
    (vpmaddubsw), which saturates unless the weights use 7 bits (``reduce_range``). ARM's sdot/udot and
    x86 VNNI accumulate in int32 and are exact. So an arm64-preset bundle (reduce_range off) is expected
    to differ between ARM and such an x86 host; the ARM result is the exact one."""
    cpu = cpu or detect_cpu_features()
    model = manifest.get("model", {})
    q = manifest.get("quantization") or {}
    params = q.get("params") or q.get("preset") or {}
    if (model.get("precision") or q.get("precision")) != "int8":
        return False, "fp32 model: no int8 kernels"
    if cpu.get("arch") != "x86_64":
        return False, "host is not x86"
    f = cpu.get("features", {})
    if f.get("avx512_vnni") or f.get("avx_vnni"):
        return False, "host has VNNI (int32 accumulation, like ARM's dot product)"
    if params.get("reduce_range"):
        return False, "bundle uses reduce_range (7-bit weights cannot saturate int16)"
    return True, ("x86 host without VNNI and a bundle quantized without reduce_range: ONNX Runtime's AVX2 u8*s8 "
                  "kernel (vpmaddubsw) saturates int16 sums on this host, ARM's dot product does not, so logits "
                  "differ by more than rounding (the ARM int32 products are the exact ones)")


def _exact_matmul_nodes(node, n: int) -> list:
    """``MatMulInteger(A, B, a_zp, b_zp)`` as float ops giving the exact int32 result (below 2^24)."""
    from onnx import TensorProto, helper

    a, b = node.input[0], node.input[1]
    azp = node.input[2] if len(node.input) > 2 and node.input[2] else None
    bzp = node.input[3] if len(node.input) > 3 and node.input[3] else None
    p = f"__exact{n}_"
    new = [helper.make_node("Cast", [a], [p + "af"], to=TensorProto.FLOAT),
           helper.make_node("Cast", [b], [p + "bf"], to=TensorProto.FLOAT)]
    a0, b0 = p + "af", p + "bf"
    if azp:
        new += [helper.make_node("Cast", [azp], [p + "azf"], to=TensorProto.FLOAT),
                helper.make_node("Sub", [p + "af", p + "azf"], [p + "a0"])]
        a0 = p + "a0"
    if bzp:
        new += [helper.make_node("Cast", [bzp], [p + "bzf"], to=TensorProto.FLOAT),
                helper.make_node("Sub", [p + "bf", p + "bzf"], [p + "b0"])]
        b0 = p + "b0"
    return new + [helper.make_node("MatMul", [a0, b0], [p + "y"]),
                  helper.make_node("Cast", [p + "y"], [node.output[0]], to=TensorProto.INT32)]


def exact_int32_model(src, dst) -> int:
    """Rewrite an int8 ONNX model so that x86 computes its integer matrix products without saturation.

    Every ``MatMulInteger(A_u8, B_s8, a_zp, b_zp)`` becomes ``Cast<int32>(MatMul((float(A) - a_zp),
    (float(B) - b_zp)))``: the same integers as an exact int32 accumulation (ARM sdot, x86 VNNI) -- float32 holds
    them exactly below 2^24 -- instead of ORT's AVX2 kernel, whose int16 pair sums saturate. Everything else
    (dynamic activation quantization, scales, the rest of the graph) is unchanged. Needs ``onnx`` (build extra).
    Returns the number of rewritten nodes."""
    import onnx

    m = onnx.load(str(src))
    nodes, n = [], 0
    for node in m.graph.node:
        if node.op_type != "MatMulInteger":
            nodes.append(node)
            continue
        n += 1
        nodes.extend(_exact_matmul_nodes(node, n))
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    onnx.save(m, str(dst))
    return n


def _exact_reference_logits(bundle, texts, threads):
    from probscale_edge.runtime import Predictor
    from probscale_edge.runtime.bundle import load_manifest

    bundle = Path(bundle)
    model_file = load_manifest(bundle)["model"]["file"]
    with tempfile.TemporaryDirectory(prefix="probscale-exact-") as tmp:
        copy = Path(tmp) / "bundle"
        shutil.copytree(bundle, copy)
        n = exact_int32_model(bundle / model_file, copy / model_file)
        return Predictor(copy, threads=threads, verify=False).logits(list(texts)), n


def _agreement(a, b) -> dict:
    import numpy as np

    agree = int((a.argmax(-1) == b.argmax(-1)).sum())
    return {"argmax_agree": agree, "argmax_all_equal": agree == len(a),
            "max_abs_logit_diff": float(np.abs(a - b).max()) if len(a) else 0.0,
            "mean_abs_logit_diff": float(np.abs(a - b).mean()) if len(a) else 0.0}


def _exact_reference(bundle, texts, threads, emu, native) -> dict:
    t1 = time.time()
    ref, nodes = _exact_reference_logits(bundle, texts, threads)
    return {**_agreement(emu, ref), "rewritten_matmuls": nodes, "native_saturating_vs_exact": _agreement(native, ref),
            "seconds": round(time.time() - t1, 2),
            "what": "x86 ORT on the same int8 model with MatMulInteger rewritten to exact int32 products (no AVX2 "
                    "int16 saturation)"}


def compare_with_native(bundle, texts, threads: int = 1, paths: dict | None = None, log=print,
                        exact_reference: bool = False) -> dict:
    """Emulated aarch64 vs this machine's native runtime on the same texts: argmax agreement and max |Δlogit|.

    ``exact_reference``: also compare against an x86 run of the same int8 model with exact int32 products
    (:func:`exact_int32_model`), reported under ``"exact_reference"``."""
    import numpy as np

    from probscale_edge.runtime import Predictor
    from probscale_edge.runtime.bundle import load_manifest

    t0 = time.time()
    native = Predictor(bundle, threads=threads).logits(list(texts))
    native_s = time.time() - t0
    info: dict = {}
    emu = run_emulated_predict(bundle, texts, threads=threads, paths=paths, info=info)
    diff = float(np.abs(emu - native).max()) if len(texts) else 0.0
    agree = int((emu.argmax(-1) == native.argmax(-1)).sum())
    srt = np.sort(native, -1)
    margin = (srt[:, -1] - srt[:, -2]) if native.shape[-1] > 1 else np.abs(native[:, 0])
    sat, why = x86_int8_saturates(load_manifest(bundle))
    extra = {"exact_reference": _exact_reference(bundle, texts, threads, emu, native)} if exact_reference else {}
    return {**extra, "examples": len(texts), "argmax_agree": agree, "argmax_all_equal": agree == len(texts),
            "max_abs_logit_diff": diff, "mean_abs_logit_diff": float(np.abs(emu - native).mean()) if len(texts) else 0.0,
            "max_abs_logit": float(np.abs(native).max()) if len(texts) else 0.0,
            "min_top2_margin": float(margin.min()) if len(texts) else None,
            "class_counts": np.bincount(native.argmax(-1), minlength=native.shape[-1]).tolist(),
            "x86_int8_saturation_expected": sat, "saturation_reason": why,
            "native_machine": platform.machine(), "emulated": info,
            "native_seconds": round(native_s, 2), "note": EMULATION_NOTE}


def main(argv=None) -> int:
    """Prepare the emulated aarch64 environment (and ``emulator.json``); print its paths as JSON."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        paths = ensure_arm64_env(cache_dir=argv[0] if argv else None, log=lambda m: print(m, file=sys.stderr))
    except ProbscaleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(paths, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
