#!/usr/bin/env bash
# Installs the TFLite / LiteRT toolchain, pinned, idempotently (re-running changes nothing).
#
#  * main environment ($PYTHON, default: the active virtual environment's python, else python3): only the
#    runtime interpreter, ai-edge-litert (adds ai-edge-litert + backports.strenum; touches nothing else). Used
#    by runtime/predictor.py's LiteRT backend and by tests/converters/test_tflite.py.
#  * .venv-tflite, next to the project: the converter, litert-torch + ai-edge-quantizer (~0.8 GB with jax).
#    They cannot share the main environment: xdsl (a litert-torch dependency) pins typing-extensions<4.13,
#    which drags pydantic down to 2.11 and breaks packages there that need pydantic 2.13.
#    The venv is layered over the main environment: a .pth file in its site-packages calls
#    site.addsitedir() on each of the main environment's site-packages folders, so it sees that environment's
#    torch 2.13.0, transformers and (editable) probscale-edge, with the main environment's own .pth files
#    processed (the editable-install finder among them). Those folders come after the venv's own
#    site-packages on sys.path, so the venv's pinned converter packages (and their older typing-extensions /
#    pydantic) shadow the main ones; the main environment is untouched. (`venv --system-site-packages` would
#    not do: it exposes the BASE interpreter's packages, not those of a virtual environment it is run from.)
#    Re-running from another environment re-points .venv-tflite at that one.
#
# Run the converter with:  .venv-tflite/bin/python -m probscale_edge.converters.tflite MODEL_FOLDER OUT.tflite ...
# Needs the main environment installed first (scripts/install-test-deps.sh: torch==2.13.0 + -e .[build,test]).
set -euo pipefail
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then PY=$VIRTUAL_ENV/bin/python
else PY=python3; fi
PY=$("$PY" -c "import sys; print(sys.executable)") || { echo "no Python interpreter at $PY" >&2; exit 1; }
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${TFLITE_VENV:-.venv-tflite}
case "$VENV" in /*) ;; *) VENV=$ROOT/$VENV ;; esac
PTH_NAME="zz-probscale-edge-main-env.pth"   # "zz": processed after the venv's own .pth files

LITERT_RUNTIME="ai-edge-litert==2.3.0"
CONVERTER_PKGS=("litert-torch==0.10.0" "ai-edge-quantizer==0.10.0" "litert-converter==0.5.0" "$LITERT_RUNTIME")
TORCH_PIN="torch==2.13.0"   # a CPU build; never let pip replace it (an unpinned torch pulls a multi-GB CUDA build)

# every import check runs outside the project: from its root, the checkout itself is on sys.path (cwd) and
# probscale_edge imports even where it is not installed
CHECK_DIR=$(mktemp -d)
constraints=$(mktemp)
trap 'rm -rf "$constraints" "$CHECK_DIR"' EXIT
echo "$TORCH_PIN" > "$constraints"
outside() { (cd "$CHECK_DIR" && "$@"); }

have() {  # have PYTHON "dist==version" ... : all installed at exactly these versions
  local py=$1; shift
  outside "$py" - "$@" <<'EOF'
import sys
from importlib import metadata
for spec in sys.argv[1:]:
    name, ver = spec.split("==")
    try:
        if metadata.version(name) != ver:
            sys.exit(1)
    except metadata.PackageNotFoundError:
        sys.exit(1)
EOF
}

outside "$PY" -c "import torch, transformers, probscale_edge.converters.tflite" 2>/dev/null || {
  echo "the main environment ($PY) lacks torch/transformers/probscale-edge: run scripts/install-test-deps.sh first" >&2
  exit 1
}

# 1. runtime interpreter in the main environment
if ! have "$PY" "$LITERT_RUNTIME"; then
  "$PY" -m pip install --quiet --disable-pip-version-check -c "$constraints" "$LITERT_RUNTIME"
fi

# 2. converter venv, layered over the main environment (before pip runs there, so that pip sees torch and the
#    rest as installed and puts only what the converter pins differently into the venv)
main_version=$(outside "$PY" -c "import sys; print('%d.%d' % sys.version_info[:2])")
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
venv_version=$(outside "$VENV/bin/python" -c "import sys; print('%d.%d' % sys.version_info[:2])")
if [ "$venv_version" != "$main_version" ]; then
  echo "$VENV is Python $venv_version but $PY is Python $main_version: remove $VENV (or set TFLITE_VENV) and re-run" >&2
  exit 1
fi
venv_site=$(outside "$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
pth=$(outside "$PY" - <<'EOF'
import os, site
dirs = list(site.getsitepackages())
if site.ENABLE_USER_SITE:
    dirs.append(site.getusersitepackages())
seen = []
for d in map(os.path.realpath, dirs):
    if os.path.isdir(d) and d not in seen:
        seen.append(d)
print("# written by scripts/install-tflite.sh: the main environment's site-packages (torch, transformers, "
      "probscale-edge), after this venv's own")
for d in seen:  # one line each: a .pth line is exec'd in a function scope, where a comprehension can't see `site`
    print(f"import site; site.addsitedir({d!r})")
EOF
)
if [ ! -f "$venv_site/$PTH_NAME" ] || [ "$(cat "$venv_site/$PTH_NAME")" != "$pth" ]; then
  printf '%s\n' "$pth" > "$venv_site/$PTH_NAME"
  echo "$VENV now layered over $PY's site-packages"
fi
# before pip runs there: a venv that does not see the main torch would get its own copy (~0.8 GB)
outside "$VENV/bin/python" -c "import torch, transformers, probscale_edge.converters.tflite" || {
  echo "$VENV does not see $PY's torch/transformers/probscale-edge through $venv_site/$PTH_NAME" >&2; exit 1; }
if ! have "$VENV/bin/python" "${CONVERTER_PKGS[@]}"; then
  (cd "$CHECK_DIR" && "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c "$constraints" \
     "${CONVERTER_PKGS[@]}")
fi

# 3. from outside the project: the venv has the converter and sees the main environment's torch, transformers
#    and the same probscale-edge, and runs the converter module the way the build does (python -m ...)
main_pkg=$(outside "$PY" -c "import probscale_edge.converters.tflite as m; print(m.__file__)")
outside "$VENV/bin/python" - "$main_pkg" <<'EOF'
import os, sys
import torch, transformers  # noqa: F401
import probscale_edge.converters.tflite as m
import litert_torch, ai_edge_quantizer  # noqa: F401
from ai_edge_litert.interpreter import Interpreter  # noqa: F401
assert torch.__version__.startswith("2.13.0"), torch.__version__
assert os.path.realpath(m.__file__) == os.path.realpath(sys.argv[1]), (m.__file__, sys.argv[1])
EOF
outside "$VENV/bin/python" -m probscale_edge.converters.tflite --help >/dev/null
outside "$PY" -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
echo "TFLite toolchain installed: $LITERT_RUNTIME in $PY; litert-torch 0.10.0 + ai-edge-quantizer 0.10.0 in $VENV"
