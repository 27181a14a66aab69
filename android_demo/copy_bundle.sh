#!/usr/bin/env bash
# Copy a probscale-edge bundle folder into the app's assets, after checking it against its manifest.
#   ./copy_bundle.sh /path/to/bundle [DEST]      (DEST defaults to app/src/main/assets/bundle)
# Same job as `./gradlew copyBundle -PbundleDir=...`, usable without Gradle. manifest.json must match its
# digest (manifest.sha256), every file it lists must match its sha256 and size, labels.json must equal its
# labels; links, special files and unlisted files are refused (the app refuses them too).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="${1:?usage: copy_bundle.sh /path/to/bundle [DEST]}"
dest="${2:-$here/app/src/main/assets/bundle}"
[ -f "$src/manifest.json" ] || { echo "copy_bundle: $src has no manifest.json, so it is not a probscale-edge bundle" >&2; exit 2; }
"${PYTHON:-python3}" - "$src" <<'PY'
import hashlib, json, os, stat, sys
from pathlib import Path
b = Path(sys.argv[1])
def fail(msg):
    sys.exit(f"copy_bundle: {msg}")
present = set()
for dirpath, dirs, names in os.walk(b):  # no links, no special files anywhere in the bundle
    for n in dirs + names:
        p = Path(dirpath, n)
        mode = os.lstat(p).st_mode
        rel = str(p.relative_to(b))
        if stat.S_ISLNK(mode):
            fail(f"bundle entry {rel} is a symbolic link")
        if stat.S_ISREG(mode):
            present.add(rel)
        elif not stat.S_ISDIR(mode):
            fail(f"bundle entry {rel} is not a regular file")
raw = (b / "manifest.json").read_bytes()
if len(raw) > 8 << 20:
    fail("manifest.json is larger than 8 MB")
digest = (b / "manifest.sha256").read_text() if (b / "manifest.sha256").is_file() else ""
if digest.split("  ")[0] != hashlib.sha256(raw).hexdigest():
    fail("manifest.json does not match its checksum in manifest.sha256 (or that file is missing)")
m = json.loads(raw)
files = m.get("files") or {}
if not isinstance(files, dict) or not files:
    fail("manifest.json lists no files")
def safe(name):
    return isinstance(name, str) and name and not name.startswith("/") and "\\" not in name and ":" not in name \
        and all(p and not p.startswith(".") for p in name.split("/"))
for name, meta in files.items():
    if not safe(name):
        fail(f"unsafe path {name!r} in manifest")
    if name not in present:
        fail(f"bundle file {name} is missing")
    p = b / name
    h = hashlib.sha256(p.read_bytes()).hexdigest()
    if h != meta["sha256"] or p.stat().st_size != meta["bytes"]:
        fail(f"bundle file {name} does not match its checksum (altered or corrupt)")
model = (m.get("model") or {}).get("file")
if model not in files:
    fail(f"model file {model!r} is not one of the bundle's checksummed files")
if "labels.json" in files and json.loads((b / "labels.json").read_text(encoding="utf-8")) != m.get("labels"):
    fail("labels.json and manifest.json disagree on the labels")
extra = sorted(present - set(files) - {"manifest.json", "manifest.sha256", "bundle.sig"})
if extra:
    fail("bundle has files not in its manifest: " + ", ".join(extra[:3]))
print(f"copy_bundle: {len(files)} files verified (model {model}, {m.get('model', {}).get('precision')}, labels {m.get('labels')})")
PY
rm -rf "$dest.tmp"
mkdir -p "$(dirname "$dest")"
cp -R "$src" "$dest.tmp"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "copy_bundle: copied into $dest"
