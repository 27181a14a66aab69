"""Bundle manifest: reading, checksum verification, format-version checks (no torch)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from probscale_edge.errors import BundleError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def sha256_file(path, chunk=1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(chunk), b""):
            h.update(b)
    return h.hexdigest()


def file_entries(folder: Path, names) -> dict:
    return {n: {"sha256": sha256_file(folder / n), "bytes": (folder / n).stat().st_size} for n in sorted(names)}


def write_manifest(folder, manifest: dict) -> dict:
    """The one manifest writer (build, latency table, benchmarks): stamps ``format_version``, lists every
    other file of ``folder`` with its sha256 and size, and writes ``manifest.json`` atomically. Returns the
    manifest as written."""
    folder = Path(folder)
    names = [p.name for p in folder.iterdir() if p.name != MANIFEST and not p.name.startswith(".")]
    manifest = {"format_version": FORMAT_VERSION, **{k: v for k, v in manifest.items() if k != "format_version"}}
    manifest["files"] = file_entries(folder, names)
    tmp = folder / f".{MANIFEST}.part"
    tmp.write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, folder / MANIFEST)
    return manifest


def load_manifest(bundle) -> dict:
    bundle = Path(bundle)
    if not bundle.exists():
        raise BundleError(f"bundle {bundle} does not exist", "pass the folder written by `probscale-edge build`")
    if not bundle.is_dir():
        raise BundleError(f"bundle {bundle} is not a folder", "pass the folder written by `probscale-edge build`")
    mp = bundle / MANIFEST
    if not mp.exists():
        raise BundleError(f"{bundle} has no {MANIFEST}, so it is not a probscale-edge bundle (or is incomplete)",
                          "rebuild it with `probscale-edge build`")
    try:
        manifest = json.loads(mp.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{mp} is not valid JSON ({e})", "rebuild the bundle")
    fv = manifest.get("format_version")
    if not isinstance(fv, int):
        raise BundleError(f"{mp} has no format_version", "rebuild the bundle")
    if fv > FORMAT_VERSION:
        raise BundleError(f"bundle format {fv} is newer than this runtime supports ({FORMAT_VERSION})",
                          "upgrade probscale-edge to read it")
    return manifest


def verify_bundle(bundle, manifest: dict | None = None, allow_extra: bool = False) -> dict:
    """Check every file against the manifest's sha256 and size; refuse missing, extra or altered files."""
    bundle = Path(bundle)
    manifest = manifest or load_manifest(bundle)
    files = manifest.get("files", {})
    if not files:
        raise BundleError(f"{bundle}/{MANIFEST} lists no files", "rebuild the bundle")
    for name, meta in files.items():
        if os.path.isabs(name) or ".." in Path(name).parts:
            raise BundleError(f"manifest lists an unsafe path {name!r}", "rebuild the bundle; do not edit manifest.json")
        p = bundle / name
        if not p.is_file():
            raise BundleError(f"bundle file {name} is missing", "copy the complete bundle folder, or rebuild it")
        if p.stat().st_size != meta["bytes"] or sha256_file(p) != meta["sha256"]:
            raise BundleError(f"bundle file {name} does not match its checksum (altered or corrupt)",
                              "copy the bundle again from its source, or rebuild it")
    if not allow_extra:
        present = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()} - {MANIFEST}
        extra = sorted(present - set(files))
        if extra:
            raise BundleError(f"bundle has files not in its manifest: {', '.join(extra[:3])}",
                              "remove them, or rebuild the bundle")
    return manifest
