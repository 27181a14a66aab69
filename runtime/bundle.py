"""Bundle manifest: reading, checking and writing; checksum and signature verification (no torch).

Nothing in a bundle is trusted before it is checked:

* ``manifest.json`` is read once, at most ``MAX_MANIFEST_BYTES``, parsed with bounded nesting, no
  duplicate keys and no NaN, and its bytes must hash to the sha256 recorded in ``manifest.sha256``
  (written beside it by :func:`write_manifest`, in ``sha256sum -c`` format): a manifest changed in any
  byte is refused like a changed model file. Then it is checked against a schema (:func:`check_manifest`).
* every name the manifest uses (model, tokenizer, vocab, TFLite model, ``files``) is a plain relative
  path inside the bundle that ``files`` lists with its sha256 and size;
* the bundle holds regular files and folders only: a symbolic link or a special file (FIFO, socket,
  device) anywhere in it is refused, and files are opened with ``O_NOFOLLOW`` and checked with fstat;
* ``labels.json``, when listed, must equal the manifest's labels;
* with a public key (argument or ``$PROBSCALE_EDGE_PUBLIC_KEY``), ``bundle.sig`` must be a valid
  OpenSSF model-signing signature over every file, the manifest and its digest included
  (:mod:`probscale_edge.runtime.signing`).

The digest is integrity (any edit, accidental or not, is caught); authenticity comes from the signature.
Every refusal is one :class:`~probscale_edge.errors.BundleError` line.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
from pathlib import Path

from probscale_edge.errors import BundleError, ProbscaleError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DIGEST = "manifest.sha256"  # "<sha256 of manifest.json's bytes>  manifest.json\n"
SIGNATURE = "bundle.sig"  # optional: model-signing signature over every other file (runtime/signing.py)
LABELS = "labels.json"
RESERVED = (MANIFEST, DIGEST, SIGNATURE)  # files of a bundle that its manifest cannot list
PUBLIC_KEY_ENV = "PROBSCALE_EDGE_PUBLIC_KEY"

MAX_MANIFEST_BYTES = 8 << 20
MAX_JSON_DEPTH = 64
MAX_ENTRIES = 10_000  # files and folders in one bundle
MAX_FOLDER_DEPTH = 8
MAX_LABELS = 100_000
MIN_LENGTH, MAX_LENGTH = 2, 8192  # tokenizer.max_length and any fixed sequence length

REBUILD = "rebuild the bundle with `probscale-edge build`; do not edit its files"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DIGEST_LINE = re.compile(r"([0-9a-f]{64})  manifest\.json\n?")
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")
_O_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


# ---------------------------------------------------------------------------------------------- reading files
def _open_regular(path: Path, what: str):
    """``path`` opened for reading if it is a regular file (never through a symlink, never a FIFO)."""
    try:
        fd = os.open(path, _O_FLAGS)
    except FileNotFoundError:
        raise BundleError(f"bundle file {what} is missing", "copy the complete bundle folder, or rebuild it")
    except OSError as e:
        raise BundleError(f"bundle file {what} cannot be opened ({e.strerror}; a symbolic link or special file?)",
                          "a bundle holds regular files only: copy it again without links")
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise BundleError(f"bundle file {what} is not a regular file", "a bundle holds regular files only: "
                          "copy it again without links or special files")
    return os.fdopen(fd, "rb")


def _read_bounded(path: Path, what: str, limit: int) -> bytes:
    with _open_regular(path, what) as f:
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise BundleError(f"{what} is larger than {limit >> 20} MB", REBUILD)
    return raw


def sha256_file(path, chunk=1 << 20) -> str:
    """sha256 of any readable file (assets, caches); bundle files go through the checks of ``_hash_regular``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(chunk), b""):
            h.update(b)
    return h.hexdigest()


def _hash_regular(path: Path, what: str, chunk=1 << 20) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    with _open_regular(path, what) as f:
        for b in iter(lambda: f.read(chunk), b""):
            h.update(b)
            n += len(b)
    return h.hexdigest(), n


def _no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"duplicate key {k!r}")
        d[k] = v
    return d


def _no_constants(name):
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes, what: str):
    """JSON from ``raw`` (UTF-8), with at most ``MAX_JSON_DEPTH`` levels of nesting, no duplicate keys, no NaN."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BundleError(f"{what} is not UTF-8 ({e.reason} at byte {e.start})", REBUILD)
    depth = deepest = 0
    for m in _BRACKET.finditer(_JSON_STRING.sub("", text)):
        depth += 1 if m.group() in "[{" else -1
        deepest = max(deepest, depth)
    if deepest > MAX_JSON_DEPTH:
        raise BundleError(f"{what} nests deeper than {MAX_JSON_DEPTH} levels", REBUILD)
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except (ValueError, RecursionError) as e:
        raise BundleError(f"{what} is not valid JSON ({str(e)[:200]})", REBUILD)


# ---------------------------------------------------------------------------------------------- names and layout
def check_name(name, where: str) -> str:
    """``name`` if it is a plain relative path inside a bundle ("/"-separated, no "..", no dot-files)."""
    if not isinstance(name, str) or not name:
        raise BundleError(f"{where} is not a file name ({type(name).__name__})", REBUILD)
    parts = name.split("/")
    bad = (len(name) > 1024 or name.startswith("/") or any(c in name for c in "\\:\0")
           or any(ord(c) < 32 for c in name) or any(not p or p.startswith(".") or len(p) > 255 for p in parts))
    if bad or os.path.isabs(name):
        raise BundleError(f"{where} is an unsafe path {name[:200]!r} (absolute, `..` or outside the bundle)", REBUILD)
    return name


def _walk(bundle: Path) -> set[str]:
    """Relative names of every regular file under ``bundle``; a symlink or special file anywhere is refused."""
    found: set[str] = set()
    count = 0

    def walk(folder: Path, rel: str, depth: int):
        nonlocal count
        if depth > MAX_FOLDER_DEPTH:
            raise BundleError(f"bundle folder {rel} is nested more than {MAX_FOLDER_DEPTH} levels deep", REBUILD)
        with os.scandir(folder) as it:
            for e in it:
                count += 1
                if count > MAX_ENTRIES:
                    raise BundleError(f"bundle holds more than {MAX_ENTRIES} files", REBUILD)
                name = f"{rel}{e.name}"
                mode = e.stat(follow_symlinks=False).st_mode
                if stat.S_ISLNK(mode):
                    raise BundleError(f"bundle entry {name} is a symbolic link",
                                      "a bundle holds regular files only: copy it again without links (cp -rL)")
                if stat.S_ISDIR(mode):
                    walk(Path(e.path), name + "/", depth + 1)
                elif stat.S_ISREG(mode):
                    found.add(name)
                else:
                    raise BundleError(f"bundle entry {name} is not a regular file (a FIFO, socket or device)",
                                      "remove it; a bundle holds regular files only")

    try:
        walk(bundle, "", 0)
    except OSError as e:
        raise BundleError(f"bundle {bundle} cannot be listed ({e.strerror})", "check the folder's permissions")
    return found


# ---------------------------------------------------------------------------------------------- the schema
def _want(ok, what: str, fix: str = REBUILD):
    if not ok:
        raise BundleError(what, fix)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _section(m: dict, key: str, required: bool = True) -> dict:
    v = m.get(key)
    if v is None and not required:
        return {}
    _want(isinstance(v, dict), f"manifest.json has no '{key}' object")
    return v


def _strings(v, where: str) -> list:
    _want(isinstance(v, list) and all(isinstance(s, str) for s in v), f"manifest.json {where} is not a list of strings")
    return v


def _length(v, where: str, limit: int | None, optional: bool = True):
    if v is None and optional:
        return
    top = min(MAX_LENGTH, limit) if limit else MAX_LENGTH
    _want(_is_int(v) and MIN_LENGTH <= v <= top,
          f"manifest.json {where} is {v!r}, not a whole number in [{MIN_LENGTH}, {top}]"
          + (f" (the model has {limit} positions)" if limit and limit < MAX_LENGTH else ""))


def _listed(m: dict, v, where: str, optional: bool = False):
    if v is None and optional:
        return
    check_name(v, f"manifest.json {where}")
    _want(v in m["files"], f"manifest.json {where} {v!r} is not one of the bundle's checksummed files")


def _check_files(files):
    _want(isinstance(files, dict), "manifest.json files is not an object of {name: {sha256, bytes}}")
    _want(files, "manifest.json lists no files")
    for name, meta in files.items():
        check_name(name, "manifest.json files entry")
        _want(name not in RESERVED, f"manifest.json lists {name}, which cannot checksum itself")
        _want(isinstance(meta, dict) and isinstance(meta.get("sha256"), str) and _HEX64.fullmatch(meta["sha256"])
              and _is_int(meta.get("bytes")) and meta["bytes"] >= 0,
              f"manifest.json entry for {name} has no valid sha256 (64 hex digits) and bytes (a size >= 0)")


EMBED_POOLINGS = ("mean", "cls")


def _check_embedding(m: dict) -> None:
    """An embedding bundle (``"kind": "embed"``) lists no labels and says how its token embeddings become one
    vector: ``embedding`` = {"dimension": width, "pooling": mean | cls, "normalize": true | false}."""
    _want(m.get("labels") in (None, []), "manifest.json of an embedding bundle lists labels")
    e = _section(m, "embedding")
    _want(_is_int(e.get("dimension")) and 1 <= e["dimension"] <= 65536,
          "manifest.json embedding.dimension is not a whole number in [1, 65536]")
    _want(e.get("pooling") in EMBED_POOLINGS, f"manifest.json embedding.pooling is not one of {', '.join(EMBED_POOLINGS)}")
    _want(isinstance(e.get("normalize"), bool), "manifest.json embedding.normalize is not true/false")


TEXT2TEXT_GRAPHS = ("encoder", "decoder", "decoder_with_past")
MAX_NEW_TOKENS = 512


def _check_text2text(m: dict) -> None:
    """A text2text bundle (``"kind": "text2text"``): ``labels`` the label words of a classification framing or
    empty (free text); ``model.graphs`` names its three graph files and ``model.spec_file`` the generation spec,
    each a checksummed file of the bundle; ``generation.max_new_tokens`` is a whole number in [1, 512]."""
    labels = _strings(m.get("labels", []), "labels")
    _want(len(labels) <= MAX_LABELS and len(set(labels)) == len(labels), "manifest.json labels are not unique")
    model = _section(m, "model")
    graphs = model.get("graphs")
    _want(isinstance(graphs, dict) and sorted(graphs) == sorted(TEXT2TEXT_GRAPHS),
          f"manifest.json model.graphs of a text2text bundle does not name {', '.join(TEXT2TEXT_GRAPHS)}")
    for g in TEXT2TEXT_GRAPHS:
        _listed(m, graphs[g], f"model.graphs.{g}")
    _listed(m, model.get("spec_file"), "model.spec_file")
    _want(_section(m, "tokenizer").get("clean_up_tokenization_spaces") in (None, True, False),
          "manifest.json tokenizer.clean_up_tokenization_spaces is not true/false")
    new = _section(m, "generation").get("max_new_tokens")
    _want(_is_int(new) and 1 <= new <= MAX_NEW_TOKENS,
          f"manifest.json generation.max_new_tokens is {new!r}, not a whole number in [1, {MAX_NEW_TOKENS}]")


def check_manifest(m) -> dict:
    """Refuse a manifest whose keys the runtime uses have the wrong type or an out-of-range value."""
    _want(isinstance(m, dict), "manifest.json is not a JSON object")
    fv = m.get("format_version")
    _want(_is_int(fv) and fv >= 1, "manifest.json has no format_version (a whole number)")
    _check_files(m.get("files"))
    if m.get("kind") == "embed":  # an embedding bundle: no labels, an "embedding" section instead
        _check_embedding(m)
    elif m.get("kind") == "text2text":  # a T5 bundle: three graphs, a generation spec, label words or none
        _check_text2text(m)
    else:
        labels = m.get("labels")
        _strings(labels, "labels")
        _want(0 < len(labels) <= MAX_LABELS, "manifest.json lists no labels" if not labels else "manifest.json lists too many labels")
        _want(len(set(labels)) == len(labels), "manifest.json labels are not unique")
    model, tok, tfl = _section(m, "model"), _section(m, "tokenizer"), _section(m, "tflite", required=False)
    _listed(m, model.get("file"), "model.file")
    for k in ("format", "precision"):
        _want(model.get(k) is None or isinstance(model[k], str), f"manifest.json model.{k} is not a string")
    for k in ("inputs", "outputs"):
        if model.get(k) is not None:
            _strings(model[k], f"model.{k}")
    positions = model.get("max_position_embeddings")
    _want(positions is None or (_is_int(positions) and positions >= MIN_LENGTH),
          "manifest.json model.max_position_embeddings is not a whole number >= 2")
    _listed(m, tok.get("file"), "tokenizer.file")
    _listed(m, tok.get("vocab_file"), "tokenizer.vocab_file", optional=True)
    _length(tok.get("max_length"), "tokenizer.max_length", positions, optional=False)
    _length(model.get("fixed_sequence_length"), "model.fixed_sequence_length", positions)
    pad = tok.get("pad_id", 0)
    _want(_is_int(pad) and 0 <= pad < 2**31, "manifest.json tokenizer.pad_id is not a token id")
    _want(tok.get("do_lower_case") is None or isinstance(tok["do_lower_case"], bool),
          "manifest.json tokenizer.do_lower_case is not true/false")
    if tfl.get("included"):
        _listed(m, tfl.get("file"), "tflite.file")
        _length(tfl.get("sequence_length"), "tflite.sequence_length", positions)
    for k in ("parameters", "task"):
        _section(m, k, required=False)
    return m


# ---------------------------------------------------------------------------------------------- the manifest
def manifest_digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def file_entries(folder: Path, names) -> dict:
    out = {}
    for n in sorted(names):
        digest, size = _hash_regular(Path(folder) / n, n)
        out[n] = {"sha256": digest, "bytes": size}
    return out


def _write_atomic(path: Path, data: bytes):
    tmp = path.with_name(f".{path.name}.part")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _finite(v):
    """``v`` with NaN and infinities as null (not JSON: parsers on devices refuse them)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def write_manifest(folder, manifest: dict) -> dict:
    """The one manifest writer (build, latency table, benchmarks): stamps ``format_version``, lists every
    other file of ``folder`` with its sha256 and size, checks the result against the schema, writes
    ``manifest.json`` and its digest ``manifest.sha256`` atomically and removes a ``bundle.sig`` made for an
    earlier manifest (sign again after writing). Returns the manifest as written."""
    folder = Path(folder)
    names = [n for n in _walk(folder) if n not in RESERVED and not any(p.startswith(".") for p in n.split("/"))]
    manifest = {"format_version": FORMAT_VERSION, **{k: v for k, v in manifest.items() if k != "format_version"}}
    manifest["files"] = file_entries(folder, names)
    raw = json.dumps(_finite(manifest), indent=2, default=str).encode("utf-8")
    written = check_manifest(parse_json(raw, MANIFEST))
    (folder / SIGNATURE).unlink(missing_ok=True)
    _write_atomic(folder / MANIFEST, raw)
    _write_atomic(folder / DIGEST, f"{manifest_digest(raw)}  {MANIFEST}\n".encode("ascii"))
    return written


def _bundle_dir(bundle) -> Path:
    bundle = Path(bundle)
    if not bundle.exists():
        raise BundleError(f"bundle {bundle} does not exist", "pass the folder written by `probscale-edge build`")
    if not bundle.is_dir():
        raise BundleError(f"bundle {bundle} is not a folder", "pass the folder written by `probscale-edge build`")
    return bundle


def load_manifest(bundle) -> dict:
    """The bundle's manifest: bounded read, format version, digest (``manifest.sha256``), schema."""
    bundle = _bundle_dir(bundle)
    if not os.path.lexists(bundle / MANIFEST):
        raise BundleError(f"{bundle} has no {MANIFEST}, so it is not a probscale-edge bundle (or is incomplete)",
                          "rebuild it with `probscale-edge build`")
    raw = _read_bounded(bundle / MANIFEST, MANIFEST, MAX_MANIFEST_BYTES)
    manifest = parse_json(raw, f"{bundle}/{MANIFEST}")
    fv = manifest.get("format_version") if isinstance(manifest, dict) else None
    if _is_int(fv) and fv > FORMAT_VERSION:
        raise BundleError(f"bundle format {fv} is newer than this runtime supports ({FORMAT_VERSION})",
                          "upgrade probscale-edge to read it")
    if not os.path.lexists(bundle / DIGEST):
        raise BundleError(f"{bundle} has no {DIGEST} (the digest of its manifest)",
                          "rebuild the bundle with this probscale-edge (older builds did not write it)")
    m = _DIGEST_LINE.fullmatch(_read_bounded(bundle / DIGEST, DIGEST, 1024).decode("ascii", "replace"))
    _want(m is not None, f"{DIGEST} is not one line '<sha256>  {MANIFEST}'")
    if m.group(1) != manifest_digest(raw):
        raise BundleError(f"{MANIFEST} does not match its checksum in {DIGEST} (altered or corrupt)",
                          "copy the bundle again from its source, or rebuild it; do not edit manifest.json")
    return check_manifest(manifest)


def resolve_public_key(public_key=None):
    """The public key to check signatures with: ``public_key`` (a path), else ``$PROBSCALE_EDGE_PUBLIC_KEY``;
    ``False`` means none, whatever the environment says (build steps that check their own staging folder)."""
    if public_key is False:
        return None
    if public_key is None:
        public_key = os.environ.get(PUBLIC_KEY_ENV) or None
    return Path(public_key) if public_key else None


def check_labels_file(bundle: Path, manifest: dict):
    """``labels.json``, when the bundle lists it, holds exactly the manifest's labels (in order)."""
    if LABELS not in manifest["files"]:
        return
    labels = parse_json(_read_bounded(bundle / LABELS, LABELS, MAX_MANIFEST_BYTES), LABELS)
    _want(labels == manifest.get("labels", []), f"{LABELS} and manifest.json disagree on the labels "
          f"({str(labels)[:80]} vs {str(manifest.get('labels', []))[:80]})")


def verify_bundle(bundle, public_key=None, *, allow_extra: bool = False, checksums: bool = True) -> dict:
    """Check the bundle (see the module's docstring) and return its manifest.

    ``public_key``: an EC public key (PEM) whose private key signed ``bundle.sig``; None reads
    ``$PROBSCALE_EDGE_PUBLIC_KEY``; False checks no signature. An unsigned or wrongly signed bundle is refused
    when a key is given. ``checksums=False`` checks the manifest and layout but hashes no file (and so
    checks no signature)."""
    bundle = _bundle_dir(bundle)
    manifest = load_manifest(bundle)
    present = _walk(bundle)
    files = manifest["files"]
    for name, meta in files.items():
        if name not in present:
            raise BundleError(f"bundle file {name} is missing", "copy the complete bundle folder, or rebuild it")
        if checksums and _hash_regular(bundle / name, name) != (meta["sha256"], meta["bytes"]):
            raise BundleError(f"bundle file {name} does not match its checksum (altered or corrupt)",
                              "copy the bundle again from its source, or rebuild it")
    check_labels_file(bundle, manifest)
    extra = sorted(present - set(files) - set(RESERVED))
    if extra and not allow_extra:
        raise BundleError(f"bundle has files not in its manifest: {', '.join(extra[:3])}",
                          "remove them, or rebuild the bundle")
    key = resolve_public_key(public_key)
    if key is not None:
        if not checksums:
            raise ProbscaleError("a signature is checked only with the checksums", "verify with checksums=True")
        from probscale_edge.runtime.signing import check_signature

        check_signature(bundle, key)
    return manifest


def bundle_files(manifest: dict, bundle=None) -> list[str]:
    """Every file that belongs to a bundle (what to copy): the listed files, the manifest, its digest and
    (when ``bundle`` holds one) the signature."""
    extra = [SIGNATURE] if bundle is not None and os.path.lexists(Path(bundle) / SIGNATURE) else []
    return [*manifest["files"], MANIFEST, DIGEST, *extra]
