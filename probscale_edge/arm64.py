"""ARM64 (aarch64) support without an ARM machine: CPU-feature detection and a qemu-user emulated runtime.

Two things live here:

* :func:`detect_cpu_features` reads ``/proc/cpuinfo`` (this machine's, or a device's text) and says
  which quantization preset fits the CPU, and warns when int8 is likely *slower* than fp32 there
  (ARM without the dot-product extension ``asimddp``; x86 without VNNI).
* :func:`ensure_arm64_env` builds, once, an aarch64 Python 3.11 sysroot from Debian's arm64
  packages, aarch64 wheels of numpy / onnxruntime / tokenizers, and a pure-Python copy of our
  runtime; :func:`run_emulated_predict` runs ``probscale_edge.runtime.Predictor`` inside it under
  ``qemu-aarch64-static``.

Emulation is for **correctness only** (do the aarch64 kernels give the same predictions as x86?).
It is 150-560x slower than a real ARM CPU: its timings are never ARM latency and are reported only
as ``emulated_seconds``.

Cache layout (under ``probscale_edge.assets.cache_dir()/arm64/``; every entry is built in a
temporary folder beside it and renamed into place, so an interrupted build leaves nothing half-made)::

    sysroot-py3.11/       Debian bookworm arm64 python3.11 + libstdc++ (+ proc/cpuinfo of a Neoverse-N1)
    site-<hash>/          aarch64 wheels (pip --target), pinned to the host's versions when possible
    pkg-<hash>/           probscale_edge/{__init__,errors}.py + probscale_edge/runtime/*.py
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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

# runtime files of our own package that run on the device (pure Python, no torch)
_PKG_FILES = ("probscale_edge/__init__.py", "probscale_edge/errors.py")
EMULATION_NOTE = ("aarch64 emulated with qemu-user on an x86 host: for correctness only; the time is "
                  "not ARM latency (emulation is 150-560x slower than a real ARM CPU)")


# ---------------------------------------------------------------------------------------------- CPU features
def arm_cpuinfo(features: str = NEOVERSE_N1_FEATURES, cpus: int = 1, part: str = "0xd0c") -> str:
    """A /proc/cpuinfo of an ARM CPU (default: Neoverse-N1, matching ``QEMU_CPU``)."""
    block = ("processor\t: {i}\nBogoMIPS\t: 50.00\nFeatures\t: {f}\nCPU implementer\t: 0x41\n"
             "CPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: {p}\nCPU revision\t: 1\n\n")
    return "".join(block.format(i=i, f=features, p=part) for i in range(max(1, cpus)))


def _cpuinfo_fields(text: str) -> dict:
    out: dict = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        k, v = line.split(":", 1)
        out.setdefault(k.strip().lower(), v.strip())  # first processor's value
    return out


def detect_cpu_features(cpuinfo_text: str | None = None, machine: str | None = None) -> dict:
    """CPU architecture, the int8-relevant features, the fitting quantization preset and a warning.

    ``cpuinfo_text``: the text of a /proc/cpuinfo (e.g. a device's); None reads this machine's.
    Returns ``{"arch", "model", "features": {name: bool}, "recommended_preset", "int8_warning"}``
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
    if "flags" in f:
        arch = "x86_64"
    elif "features" in f or "cpu implementer" in f:
        arch = "aarch64"
    else:
        m = (machine or "").lower()
        arch = "aarch64" if m in ("aarch64", "arm64", "armv8l", "armv8") else ("x86_64" if m in ("x86_64", "amd64")
                                                                               else (m or "unknown"))
    out = {"arch": arch, "model": f.get("model name") or f.get("hardware") or f.get("cpu part"), "features": {},
           "recommended_preset": None, "int8_warning": None, "source": "local /proc/cpuinfo" if local else "given"}
    if arch == "x86_64":
        flags = set(f.get("flags", "").split())
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
    elif arch == "aarch64":
        feats_text = f.get("features", "")
        flags = set(feats_text.split())
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
    else:
        out["int8_warning"] = f"unrecognised CPU architecture {arch!r}: int8 speed unknown"
    return out


# ---------------------------------------------------------------------------------------------- environment
def _root(cache_dir=None) -> Path:
    if cache_dir is None:
        from probscale_edge.assets import cache_dir as _cd

        return _cd() / "arm64"
    return Path(cache_dir)


def _lock(path: Path):
    from probscale_edge.assets import _locked  # one file-lock helper for every cache writer

    return _locked(path)


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
        _write_cpuinfo(root)
        proc = _run([qemu, "-L", str(root), str(py), "-c", "import platform, ssl, json; print(platform.machine())"],
                    what="the emulated aarch64 python", fix="reinstall qemu-user-static", env=_emu_env(root, []))
        if proc.stdout.strip() != "aarch64":
            raise ProbscaleError(f"emulated python reports machine {proc.stdout.strip()!r}, not aarch64",
                                 "reinstall qemu-user-static")
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
            proc = _pip_target(tmp / "site", pinned)
            used = pinned
            if proc.returncode != 0 and pinned != list(WHEELS):
                log("the host's exact versions have no aarch64 wheels; taking the newest ones")
                shutil.rmtree(tmp / "site", ignore_errors=True)
                used = list(WHEELS)
                proc = _pip_target(tmp / "site", used)
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-2:]
                raise ProbscaleError(f"could not download aarch64 wheels ({' | '.join(tail)})",
                                     "check that PyPI is reachable")
            env = _emu_env(sysroot, [tmp / "site"])
            _write_cpuinfo(sysroot)
            probe = ("import json, platform, numpy, onnxruntime, tokenizers; print(json.dumps({'machine': "
                     "platform.machine(), 'numpy': numpy.__version__, 'onnxruntime': onnxruntime.__version__, "
                     "'tokenizers': tokenizers.__version__}))")
            proc = _run([qemu, "-L", str(sysroot), str(sysroot / "usr/bin" / f"python{PYTHON_VERSION}"), "-c", probe],
                        what="importing the aarch64 wheels under qemu", fix="delete the arm64 cache folder and retry",
                        env=env)
            info = json.loads(proc.stdout.strip().splitlines()[-1])
            (tmp / "site" / ".complete").write_text(json.dumps({"requirements": used, "imported": info}, indent=1))
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(tmp / "site", dest)
            built.append("site")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


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
    return {"root": str(root), "qemu": qemu, "sysroot": str(sysroot), "native_arm": native,
            "python": str(sysroot / "usr" / "bin" / f"python{PYTHON_VERSION}"), "site": str(site), "pkg": str(pkg),
            "qemu_cpu": QEMU_CPU, "setup_seconds": round(time.time() - t0, 2), "built": built}


# ---------------------------------------------------------------------------------------------- running
_PREDICT_SCRIPT = r'''
import json, platform, sys, time
t0 = time.time()
import numpy as np
import onnxruntime, tokenizers
import probscale_edge
from probscale_edge.runtime import Predictor
args = json.load(open(sys.argv[1], encoding="utf-8"))
p = Predictor(args["bundle"], threads=args["threads"])
t1 = time.time()
lg = p.logits(args["texts"], batch_size=args["batch_size"])
t2 = time.time()
np.save(args["out"], lg.astype(np.float32))
info = {"machine": platform.machine(), "python": platform.python_version(), "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__, "tokenizers": tokenizers.__version__,
        "probscale_edge_file": probscale_edge.__file__, "examples": len(args["texts"]),
        "emulated_load_seconds": round(t1 - t0, 2), "emulated_predict_seconds": round(t2 - t1, 2)}
with open(args["info"], "w") as f:
    json.dump(info, f)
print("MACHINE=" + platform.machine())
'''


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
        (tmp / "predict.py").write_text(_PREDICT_SCRIPT)
        args = {"bundle": str(bundle), "texts": [str(t) for t in texts], "threads": threads, "batch_size": batch_size,
                "out": str(tmp / "logits.npy"), "info": str(tmp / "info.json")}
        (tmp / "args.json").write_text(json.dumps(args), encoding="utf-8")
        t0 = time.time()
        try:
            proc = run_emulated(paths, [tmp / "predict.py", tmp / "args.json"], timeout=timeout)
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


def exact_int32_model(src, dst) -> int:
    """Rewrite an int8 ONNX model so that x86 computes its integer matrix products without saturation.

    Every ``MatMulInteger(A_u8, B_s8, a_zp, b_zp)`` becomes ``Cast<int32>(MatMul((float(A) - a_zp),
    (float(B) - b_zp)))``: the same integers as an exact int32 accumulation (ARM sdot, x86 VNNI) -- float32 holds
    them exactly below 2^24 -- instead of ORT's AVX2 kernel, whose int16 pair sums saturate. Everything else
    (dynamic activation quantization, scales, the rest of the graph) is unchanged. Needs ``onnx`` (build extra).
    Returns the number of rewritten nodes."""
    import onnx
    from onnx import TensorProto, helper

    m = onnx.load(str(src))
    nodes, n = [], 0
    for node in m.graph.node:
        if node.op_type != "MatMulInteger":
            nodes.append(node)
            continue
        n += 1
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
        new += [helper.make_node("MatMul", [a0, b0], [p + "y"]),
                helper.make_node("Cast", [p + "y"], [node.output[0]], to=TensorProto.INT32)]
        nodes.extend(new)
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
    extra = {}
    if exact_reference:
        t1 = time.time()
        ref, nodes = _exact_reference_logits(bundle, texts, threads)
        extra["exact_reference"] = {**_agreement(emu, ref), "rewritten_matmuls": nodes,
                                    "native_saturating_vs_exact": _agreement(native, ref),
                                    "seconds": round(time.time() - t1, 2),
                                    "what": "x86 ORT on the same int8 model with MatMulInteger rewritten to exact "
                                            "int32 products (no AVX2 int16 saturation)"}
    return {**extra, "examples": len(texts), "argmax_agree": agree, "argmax_all_equal": agree == len(texts),
            "max_abs_logit_diff": diff, "mean_abs_logit_diff": float(np.abs(emu - native).mean()) if len(texts) else 0.0,
            "max_abs_logit": float(np.abs(native).max()) if len(texts) else 0.0,
            "min_top2_margin": float(margin.min()) if len(texts) else None,
            "class_counts": np.bincount(native.argmax(-1), minlength=native.shape[-1]).tolist(),
            "x86_int8_saturation_expected": sat, "saturation_reason": why,
            "native_machine": platform.machine(), "emulated": info,
            "native_seconds": round(native_s, 2), "note": EMULATION_NOTE}
