#!/usr/bin/env bash
# Installs the TFLite / LiteRT toolchain, pinned, idempotently (re-running changes nothing).
#
#  * main environment ($PYTHON, default python3): only the runtime interpreter, ai-edge-litert
#    (adds ai-edge-litert + backports.strenum; touches nothing else). Used by runtime/predictor.py's
#    LiteRT backend and by tests/test_tflite.py.
#  * .venv-tflite (created with --system-site-packages, so it reuses the main environment's torch 2.13.0,
#    transformers and an editable probscale-edge): the converter, litert-torch + ai-edge-quantizer
#    (~0.8 GB with jax). They cannot share the main environment: xdsl (a litert-torch dependency) pins
#    typing-extensions<4.13, which drags pydantic down to 2.11 and breaks packages there that need
#    pydantic 2.13. Inside the venv those older versions shadow the main ones; the main env is untouched.
#
# Run the converter with:  .venv-tflite/bin/python -m probscale_edge.converters.tflite MODEL_FOLDER OUT.tflite ...
# Needs the main environment installed first (scripts/install-test-deps.sh: torch==2.13.0 + -e .[build,test]).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${TFLITE_VENV:-.venv-tflite}

LITERT_RUNTIME="ai-edge-litert==2.3.0"
CONVERTER_PKGS=("litert-torch==0.10.0" "ai-edge-quantizer==0.10.0" "litert-converter==0.5.0" "$LITERT_RUNTIME")
TORCH_PIN="torch==2.13.0"   # a CPU build; never let pip replace it (an unpinned torch pulls a multi-GB CUDA build)

constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "$TORCH_PIN" > "$constraints"

have() {  # have PYTHON "dist==version" ... : all installed at exactly these versions
  local py=$1; shift
  "$py" - "$@" <<'EOF'
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

"$PY" -c "import torch, transformers, probscale_edge" 2>/dev/null || {
  echo "the main environment lacks torch/transformers/probscale-edge: run scripts/install-test-deps.sh first" >&2
  exit 1
}

# 1. runtime interpreter in the main environment
if ! have "$PY" "$LITERT_RUNTIME"; then
  "$PY" -m pip install --quiet --disable-pip-version-check -c "$constraints" "$LITERT_RUNTIME"
fi

# 2. converter venv
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv --system-site-packages "$VENV"
fi
if ! have "$VENV/bin/python" "${CONVERTER_PKGS[@]}"; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c "$constraints" "${CONVERTER_PKGS[@]}"
fi

# 3. the venv must still see the main environment's torch and probscale-edge
"$VENV/bin/python" - <<'EOF'
import torch, probscale_edge
import litert_torch, ai_edge_quantizer  # noqa: F401
from ai_edge_litert.interpreter import Interpreter  # noqa: F401
assert torch.__version__.startswith("2.13.0"), torch.__version__
EOF
"$PY" -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
echo "TFLite toolchain installed: $LITERT_RUNTIME in $PY; litert-torch 0.10.0 + ai-edge-quantizer 0.10.0 in $VENV"
