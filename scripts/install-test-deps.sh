#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian/Ubuntu machine: the Python build + test extras,
# and the system tools some tests drive for real (qemu-user for emulated aarch64, OpenSSH for the profiling
# test, a JDK + JUnit for android_demo).
#
# Python packages go into the environment you run it from: $PYTHON if set, else the active virtual
# environment ($VIRTUAL_ENV), else python3. Run it as yourself (not with sudo, which drops the virtual
# environment); it calls sudo only for apt-get, and only when not root.
set -euo pipefail
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then PY=$VIRTUAL_ENV/bin/python
else PY=python3; fi
PY=$("$PY" -c "import sys; print(sys.executable)")  # absolute, resolved before the cd below
cd "$(dirname "$0")/.."
echo "installing the Python test dependencies into $("$PY" -c "import sys; print(sys.prefix)") ($PY)"

# torch first, pinned: a CPU build (an unpinned torch would pull a multi-GB CUDA build)
"$PY" -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
"$PY" -m pip install --quiet --disable-pip-version-check -c <(echo "torch==2.13.0") -e ".[build,test]"
# TextPruner, the peer in benchmarks/compression (tests/test_textpruner_baseline.py); its own pins are loose
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps "textpruner==1.1.post2"
# TFLite/LiteRT (tests/converters/test_tflite.py): ai-edge-litert here, litert-torch + ai-edge-quantizer in .venv-tflite
PYTHON="$PY" bash scripts/install-tflite.sh

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v javac >/dev/null || need+=(openjdk-17-jdk-headless)
[ -f /usr/share/java/junit4.jar ] || need+=(junit4)
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "test dependencies installed"
