#!/usr/bin/env bash
# Copy a probscale-edge bundle folder into the app's assets, after checking it against its manifest.
#   ./copy_bundle.sh /path/to/bundle [DEST]      (DEST defaults to app/src/main/assets/bundle)
# Same job as `./gradlew copyBundle -PbundleDir=...`, usable without Gradle. Every file listed in
# manifest.json must match its sha256 and size; unlisted files are refused (the app refuses them too).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="${1:?usage: copy_bundle.sh /path/to/bundle [DEST]}"
dest="${2:-$here/app/src/main/assets/bundle}"
[ -f "$src/manifest.json" ] || { echo "copy_bundle: $src has no manifest.json, so it is not a probscale-edge bundle" >&2; exit 2; }
python3 - "$src" <<'PY'
import hashlib, json, os, sys
from pathlib import Path
b = Path(sys.argv[1])
m = json.loads((b / "manifest.json").read_text(encoding="utf-8"))
files = m.get("files") or {}
if not files:
    sys.exit("copy_bundle: manifest.json lists no files")
for name, meta in files.items():
    p = b / name
    if os.path.isabs(name) or ".." in Path(name).parts:
        sys.exit(f"copy_bundle: unsafe path {name!r} in manifest")
    if not p.is_file():
        sys.exit(f"copy_bundle: bundle file {name} is missing")
    h = hashlib.sha256(p.read_bytes()).hexdigest()
    if h != meta["sha256"] or p.stat().st_size != meta["bytes"]:
        sys.exit(f"copy_bundle: bundle file {name} does not match its checksum (altered or corrupt)")
extra = sorted({str(p.relative_to(b)) for p in b.rglob("*") if p.is_file()} - set(files) - {"manifest.json"})
if extra:
    sys.exit("copy_bundle: bundle has files not in its manifest: " + ", ".join(extra[:3]))
model = m.get("model", {}).get("file")
print(f"copy_bundle: {len(files)} files verified (model {model}, {m.get('model', {}).get('precision')}, labels {m.get('labels')})")
PY
rm -rf "$dest.tmp"
mkdir -p "$(dirname "$dest")"
cp -R "$src" "$dest.tmp"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "copy_bundle: copied into $dest"
