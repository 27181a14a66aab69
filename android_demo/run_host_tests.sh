#!/usr/bin/env bash
# Host-side checks for the Android demo (no Android SDK, no device needed):
#  (a) installs what is missing: JUnit 4 (apt package junit4) and the ONNX Runtime Android AAR
#      (inside the npm package com.github.asus4.onnxruntime@0.4.9, cached under
#      ${PROBSCALE_EDGE_CACHE:-~/.cache/probscale-edge}/android);
#  (b) generates tokenizer vectors with Python `tokenizers` (tools/make_vectors.py) and recorded model outputs for
#      the pooling test (tools/make_pooling_vectors.py) into build/;
#  (c) compiles core/ + its tests with javac and runs them with JUnit 4;
#  (d) compile-checks the ORT-facing class (app/.../engine) + core with `javac --release 8` against the AAR's classes.jar;
#  (e) if a real bundle is available ($PROBSCALE_ANDROID_BUNDLE, else /tmp/shared_bundle), copies it with
#      copy_bundle.sh into a scratch assets folder and verifies it the way the app does.
# Exits non-zero on any failure.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
PY="${PYTHON:-python3}"
CACHE="${PROBSCALE_EDGE_CACHE:-$HOME/.cache/probscale-edge}/android"
BUILD="$here/build/host-tests"
ORT_PKG="com.github.asus4.onnxruntime@0.4.9"
ORT_TGZ="com.github.asus4.onnxruntime-0.4.9.tgz"
ORT_TGZ_SHA256="e59788788818fdde1b2e522e766a21ba0f7d8391de55737abf81e32cc801785d"
ORT_AAR_SHA256="98cddbac92640b4a6af72a03c42e0491851f366d3da66bbaeb5dd66310946cf2"
step() { echo; echo "== $*"; }

step "(a) dependencies"
JUNIT=/usr/share/java/junit4.jar
if [ ! -f "$JUNIT" ]; then
    echo "installing junit4 with apt-get"
    if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq junit4 >/dev/null
fi
HAMCREST=""
for h in /usr/share/java/hamcrest-core.jar /usr/share/java/hamcrest.jar; do
    [ -f "$h" ] && { HAMCREST="$h"; break; }
done
[ -n "$HAMCREST" ] || { echo "no hamcrest jar in /usr/share/java (apt-get install libhamcrest-java)" >&2; exit 1; }
echo "junit: $JUNIT, hamcrest: $HAMCREST"

mkdir -p "$CACHE"
AAR_DIR="$CACHE/onnxruntime-aar-0.4.9"
if [ ! -f "$AAR_DIR/classes.jar" ]; then
    if [ ! -f "$CACHE/$ORT_TGZ" ]; then
        echo "npm pack $ORT_PKG -> $CACHE"
        (cd "$CACHE" && npm pack --silent "$ORT_PKG" >/dev/null)
    fi
    echo "$ORT_TGZ_SHA256  $CACHE/$ORT_TGZ" | sha256sum -c --quiet -
    rm -rf "$AAR_DIR.tmp" && mkdir -p "$AAR_DIR.tmp/npm"
    tar -xzf "$CACHE/$ORT_TGZ" -C "$AAR_DIR.tmp/npm" package/LICENSE package/ThirdPartyNotices.txt package/Plugins/Android/onnxruntime.aar
    echo "$ORT_AAR_SHA256  $AAR_DIR.tmp/npm/package/Plugins/Android/onnxruntime.aar" | sha256sum -c --quiet -
    (cd "$AAR_DIR.tmp" && "$PY" -c "import zipfile,sys; z=zipfile.ZipFile('npm/package/Plugins/Android/onnxruntime.aar'); z.extract('classes.jar'); z.extract('AndroidManifest.xml')")
    rm -rf "$AAR_DIR" && mv "$AAR_DIR.tmp" "$AAR_DIR"
fi
echo "ORT classes.jar: $AAR_DIR/classes.jar"

step "(b) tokenizer vectors from Python tokenizers"
rm -rf "$BUILD" && mkdir -p "$BUILD/vectors" "$BUILD/classes/main" "$BUILD/classes/test" "$BUILD/classes/ortcheck"
"$PY" tools/make_vectors.py "$BUILD/vectors"
# recorded model outputs for the pooling test (an embedding bundle's with $PROBSCALE_ANDROID_EMBED_BUNDLE)
"$PY" tools/make_pooling_vectors.py "$BUILD/pooling"
if ! "$PY" tools/gen_char_tables.py --check; then
    echo "WARNING: BertCharTables.java was generated with another tokenizers version (the vectors below decide)"
fi

step "(c) JUnit on the host JVM"
mapfile -t MAIN_SRC < <(find core/src/main/java -name '*.java' | sort)
mapfile -t TEST_SRC < <(find core/src/test/java -name '*.java' | sort)
if grep -l '^import android\.' "${MAIN_SRC[@]}"; then echo "core must not import android.*" >&2; exit 1; fi
javac --release 8 -Xlint:all -Werror -encoding UTF-8 -d "$BUILD/classes/main" "${MAIN_SRC[@]}"
javac --release 8 -encoding UTF-8 -cp "$BUILD/classes/main:$JUNIT" -d "$BUILD/classes/test" "${TEST_SRC[@]}"
TEST_CLASSES=$(cd core/src/test/java && grep -l '@Test' $(find . -name '*Test.java') | sed 's|^\./||; s|\.java$||; s|/|.|g' | sort)
set +e
java -Xss4m -Dvectors.dir="$BUILD/vectors" -Dpooling.dir="$BUILD/pooling" -cp "$BUILD/classes/main:$BUILD/classes/test:$JUNIT:$HAMCREST" \
    org.junit.runner.JUnitCore $TEST_CLASSES 2>&1 | tee "$BUILD/junit.log"
junit_rc=${PIPESTATUS[0]}
set -e
summary=$(grep -E '^(OK \(|Tests run:)' "$BUILD/junit.log" | tail -1 || true)
echo "JUNIT_SUMMARY ${summary:-none}"
[ "$junit_rc" = 0 ] || { echo "JUnit failed (exit $junit_rc)" >&2; exit 1; }
grep -q '^TOKENIZER_VECTORS_MATCHED ' "$BUILD/junit.log" || { echo "tokenizer vectors were not compared" >&2; exit 1; }
grep -q '^POOLING_VECTORS_MATCHED ' "$BUILD/junit.log" || { echo "pooling vectors were not compared" >&2; exit 1; }

step "(d) ONNX Runtime compile check (javac --release 8 against the ORT Android AAR classes.jar)"
ENGINE_SRC=(app/src/main/java/io/probscale/edge/demo/engine/*.java)
if grep -l '^import android\.' "${ENGINE_SRC[@]}"; then echo "the ORT-facing class must not import android.*" >&2; exit 1; fi
javac --release 8 -Xlint:all -Werror -encoding UTF-8 -cp "$AAR_DIR/classes.jar" -d "$BUILD/classes/ortcheck" \
    "${MAIN_SRC[@]}" "${ENGINE_SRC[@]}"
echo "ORT_COMPILE_CHECK OK (${#ENGINE_SRC[@]} ORT-facing + ${#MAIN_SRC[@]} core classes against the classes.jar of onnxruntime.aar from $ORT_PKG, ONNX Runtime 1.29.0)"
echo "(Activities in app/src/main/java/io/probscale/edge/demo/*.java need android.jar and are not compiled here)"

step "(e) bundle -> assets wiring"
BUNDLE="${PROBSCALE_ANDROID_BUNDLE:-/tmp/shared_bundle}"
if [ -f "$BUNDLE/manifest.json" ]; then
    ./copy_bundle.sh "$BUNDLE" "$BUILD/assets/bundle"
    java -cp "$BUILD/classes/main:$BUILD/classes/test" io.probscale.edge.core.HostBundleCheck "$BUILD/assets/bundle"
else
    echo "BUNDLE_SKIPPED no bundle at $BUNDLE (set PROBSCALE_ANDROID_BUNDLE to check one)"
fi

echo
echo "HOST_TESTS_PASSED"
