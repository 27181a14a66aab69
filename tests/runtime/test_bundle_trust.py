"""The bundle loader trusts nothing it has not checked: redirected, altered or malformed manifests, links and
special files, out-of-range benchmark settings and wrong signatures are each refused with one BundleError /
ProbscaleError line, by verify_bundle, Predictor, bench_bundle and the CLI (exit 2, no traceback).

The manifest cases rewrite manifest.sha256 to match (an adversary who recomputes the digest), so each
check is reached on its own; `_stale_digest` cases show that any edit without it is refused first."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from probscale_edge.errors import BundleError, ProbscaleError
from probscale_edge.runtime import Predictor, verify_bundle
from probscale_edge.runtime.bench import MAX_BATCH_SIZE, BenchConfig, bench_bundle, check_max_eval
from probscale_edge.runtime.bundle import DIGEST, MANIFEST, PUBLIC_KEY_ENV, SIGNATURE, write_manifest


# ---------------------------------------------------------------------------------------------- helpers
def write_raw(bundle: Path, raw: bytes, digest: bool = True):
    (bundle / MANIFEST).write_bytes(raw)
    if digest:
        (bundle / DIGEST).write_text(f"{hashlib.sha256(raw).hexdigest()}  {MANIFEST}\n")


def rewrite(bundle: Path, change, digest: bool = True):
    """Apply ``change`` to the manifest in place and write it back (its return value is ignored)."""
    m = json.loads((bundle / MANIFEST).read_text())
    change(m)
    write_raw(bundle, json.dumps(m, indent=1).encode(), digest)


def entry(path: Path) -> dict:
    return {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "bytes": path.stat().st_size}


def refused_everywhere(bundle: Path, match: str):
    for load in (verify_bundle, Predictor, lambda b: bench_bundle(b, BenchConfig(warmup_runs=0, num_runs=1))):
        with pytest.raises(ProbscaleError, match=match) as e:
            load(bundle)
        assert "\n" not in str(e.value) and " -- fix: " in str(e.value)


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "probscale_edge", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def assert_one_line(proc, match: str):
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-500:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and " -- fix: " in lines[0], proc.stderr[-2000:]
    assert match in lines[0], lines[0]


# ---------------------------------------------------------------------------------------------- manifest cases
def _outside_model(b: Path) -> str:
    other = b.parent / "elsewhere" / "other.onnx"
    other.parent.mkdir(exist_ok=True)
    shutil.copyfile(b / "model.onnx", other)
    return str(other)


def _model_absolute(b, m):
    m["model"]["file"] = _outside_model(b)


def _model_dotdot_listed(b, m):  # the redirected file also listed with its true checksum
    _outside_model(b)
    m["model"]["file"] = "../elsewhere/other.onnx"
    m["files"]["../elsewhere/other.onnx"] = entry(b.parent / "elsewhere" / "other.onnx")


def _model_not_listed(b, m):
    shutil.copyfile(b / "model.onnx", b / "other.onnx")
    m["model"]["file"] = "other.onnx"


def _labels_reversed(b, m):
    m["labels"] = m["labels"][::-1]


def _labels_json_altered(b, m):  # labels.json changed and re-checksummed: it must still equal the manifest's
    (b / "labels.json").write_text(json.dumps(m["labels"][::-1]))
    m["files"]["labels.json"] = entry(b / "labels.json")


def _set(path, value):
    def change(b, m):
        d = m
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
    return change


def _positions(b, m):
    m["model"]["max_position_embeddings"] = 8  # the bundle's max_length is 16


def _no_bytes(b, m):
    for meta in m["files"].values():
        del meta["bytes"]


MANIFEST_CASES = {
    "model_file_absolute": (_model_absolute, "unsafe path"),
    "model_file_dotdot": (_set(("model", "file"), "../../elsewhere/other.onnx"), "unsafe path"),
    "model_file_dotdot_listed": (_model_dotdot_listed, "unsafe path"),
    "model_file_not_listed": (_model_not_listed, "not one of the bundle's checksummed files"),
    "tokenizer_file_absolute": (_set(("tokenizer", "file"), "/etc/passwd"), "unsafe path"),
    "vocab_file_dotdot": (_set(("tokenizer", "vocab_file"), "../vocab.txt"), "unsafe path"),
    "labels_reversed": (_labels_reversed, "labels.json and manifest.json disagree"),
    "labels_json_altered": (_labels_json_altered, "labels.json and manifest.json disagree"),
    "labels_empty": (_set(("labels",), []), "lists no labels"),
    "labels_not_strings": (_set(("labels",), [0, 1]), "labels is not a list of strings"),
    "labels_duplicated": (_set(("labels",), ["pos", "pos"]), "not unique"),
    "max_length_huge": (_set(("tokenizer", "max_length"), 100000), "tokenizer.max_length is 100000"),
    "max_length_one": (_set(("tokenizer", "max_length"), 1), "tokenizer.max_length is 1"),
    "max_length_string": (_set(("tokenizer", "max_length"), "16"), "tokenizer.max_length"),
    "max_length_above_positions": (_positions, "the model has 8 positions"),
    "pad_id_negative": (_set(("tokenizer", "pad_id"), -1), "pad_id"),
    "format_version_string": (_set(("format_version",), "1"), "no format_version"),
    "files_as_list": (lambda b, m: m.update(files=sorted(m["files"])), "files is not an object"),
    "files_empty": (_set(("files",), {}), "lists no files"),
    "entries_without_bytes": (_no_bytes, "no valid sha256"),
    "entry_bad_sha": (lambda b, m: m["files"]["vocab.txt"].update(sha256="x" * 64), "no valid sha256"),
    "files_lists_manifest": (lambda b, m: m["files"].update({MANIFEST: entry(b / MANIFEST)}), "cannot checksum itself"),
    "model_not_object": (_set(("model",), "model.onnx"), "no 'model' object"),
    "tokenizer_missing": (lambda b, m: m.pop("tokenizer"), "no 'tokenizer' object"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_CASES))
def test_altered_manifest_is_refused(bundle_copy, case):
    change, match = MANIFEST_CASES[case]
    b = bundle_copy()
    rewrite(b, lambda m: change(b, m))
    refused_everywhere(b, match)


@pytest.mark.parametrize("case", ["labels_reversed", "model_file_not_listed", "max_length_huge"])
def test_any_manifest_edit_without_its_digest_is_refused(bundle_copy, case):
    change, _ = MANIFEST_CASES[case]
    b = bundle_copy()
    rewrite(b, lambda m: change(b, m), digest=False)
    refused_everywhere(b, "manifest.json does not match its checksum in manifest.sha256")


RAW_CASES = {
    "json_array": (b"[1, 2, 3]", "not a JSON object"),
    "not_json": (b"{\"format_version\": 1, ", "not valid JSON"),
    "not_utf8": (b"{\"labels\": [\"\xff\xfe\"]}", "not UTF-8"),
    "deep_nesting": (b"{\"x\": " + b"[" * 100 + b"]" * 100 + b"}", "nests deeper than 64"),
    "duplicate_key": (b"{\"format_version\": 1, \"format_version\": 1}", "duplicate key"),
    "nan": (b"{\"format_version\": NaN}", "not valid JSON"),
    "too_big": (b"{\"pad\": \"" + b"x" * (8 << 20) + b"\"}", "larger than 8 MB"),
}


@pytest.mark.parametrize("case", sorted(RAW_CASES))
def test_malformed_manifest_is_refused(bundle_copy, case):
    raw, match = RAW_CASES[case]
    b = bundle_copy()
    write_raw(b, raw)
    refused_everywhere(b, match)


def test_manifest_changed_in_one_byte_is_refused(bundle_copy):
    b = bundle_copy()
    (b / MANIFEST).write_bytes((b / MANIFEST).read_bytes() + b" ")
    refused_everywhere(b, "manifest.json does not match its checksum")


def test_missing_or_malformed_digest_is_refused(bundle_copy):
    b = bundle_copy("a")
    (b / DIGEST).unlink()
    refused_everywhere(b, "has no manifest.sha256")
    b = bundle_copy("b")
    (b / DIGEST).write_text("not a digest\n")
    refused_everywhere(b, "is not one line")


def test_newer_format_is_refused_before_the_digest(bundle_copy):
    b = bundle_copy()
    rewrite(b, lambda m: m.update(format_version=99), digest=False)
    refused_everywhere(b, "newer than this runtime")


# ---------------------------------------------------------------------------------------------- links, special files
def _link_to_outside_file(b):
    (b.parent / "secret.txt").write_text("x")
    (b / "notes.txt").symlink_to(b.parent / "secret.txt")


def _model_is_a_link(b):  # same bytes, so the checksum matches: the link itself is refused
    shutil.move(b / "model.onnx", b.parent / "model.onnx")
    (b / "model.onnx").symlink_to(b.parent / "model.onnx")


def _link_to_outside_folder(b):
    (b.parent / "outside").mkdir()
    (b / "data").symlink_to(b.parent / "outside", target_is_directory=True)


def _manifest_is_a_link(b):
    shutil.move(b / MANIFEST, b.parent / MANIFEST)
    (b / MANIFEST).symlink_to(b.parent / MANIFEST)


def _fifo(b):
    os.mkfifo(b / "pipe")


def _model_is_a_fifo(b):
    (b / "model.onnx").unlink()
    os.mkfifo(b / "model.onnx")


def _nested_link(b):
    (b / "sub").mkdir()
    (b / "sub" / "x").symlink_to("/etc/hostname")


LAYOUT_CASES = {
    "link_to_outside_file": (_link_to_outside_file, "notes.txt is a symbolic link"),
    "model_is_a_link": (_model_is_a_link, "model.onnx is a symbolic link"),
    "link_to_outside_folder": (_link_to_outside_folder, "data is a symbolic link"),
    "nested_link": (_nested_link, "sub/x is a symbolic link"),
    "manifest_is_a_link": (_manifest_is_a_link, "manifest.json cannot be opened"),
    "fifo": (_fifo, "pipe is not a regular file"),
    "model_is_a_fifo": (_model_is_a_fifo, "model.onnx is not a regular file"),
}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX links and FIFOs")
@pytest.mark.parametrize("case", sorted(LAYOUT_CASES))
def test_links_and_special_files_are_refused(bundle_copy, case):
    make, match = LAYOUT_CASES[case]
    b = bundle_copy()
    make(b)
    refused_everywhere(b, match)


def test_files_in_subfolders_are_checked(bundle_copy, bundle_kit):
    b = bundle_copy()
    (b / "extra").mkdir()
    (b / "extra" / "readme.txt").write_text("hello")
    m = write_manifest(b, json.loads((b / MANIFEST).read_text()))
    assert "extra/readme.txt" in verify_bundle(b)["files"] and "extra/readme.txt" in m["files"]
    (b / "extra" / "readme.txt").write_text("hellO")
    with pytest.raises(BundleError, match="extra/readme.txt does not match its checksum"):
        verify_bundle(b)


def test_write_manifest_refuses_a_link_and_writes_no_nan(bundle_copy):
    b = bundle_copy()
    m = write_manifest(b, {**json.loads((b / MANIFEST).read_text()), "validation": {"accuracy": float("nan")}})
    assert m["validation"]["accuracy"] is None and b"NaN" not in (b / MANIFEST).read_bytes()
    (b / "notes.txt").symlink_to("/etc/hostname")
    with pytest.raises(BundleError, match="notes.txt is a symbolic link"):
        write_manifest(b, m)


# ---------------------------------------------------------------------------------------------- the model itself
def test_model_output_width_must_equal_the_labels(tmp_path, bundle_kit):
    static = bundle_kit.make_bundle(tmp_path / "static", bundle_kit.tiny_onnx(width=3), bundle_kit.tokenizer_json())
    with pytest.raises(BundleError, match="gives 3 scores per text but the bundle has 2 labels"):
        Predictor(static)
    dynamic = bundle_kit.make_bundle(tmp_path / "dynamic", bundle_kit.tiny_onnx(width=3, static=False),
                                     bundle_kit.tokenizer_json())
    p = Predictor(dynamic)  # the graph does not say: the first result does
    with pytest.raises(BundleError, match="gives 3 scores per text"):
        p.predict(["good film"])
    ok = bundle_kit.make_bundle(tmp_path / "ok", bundle_kit.tiny_onnx(width=2, static=False), bundle_kit.tokenizer_json())
    assert [r.label for r in Predictor(ok).predict(["a good film", "an awful movie"])] == ["pos", "neg"]


def test_pad_id_outside_the_vocabulary_and_unlisted_model_file(bundle_copy):
    b = bundle_copy()
    rewrite(b, lambda m: m["tokenizer"].update(pad_id=999))
    with pytest.raises(BundleError, match="pad_id 999 is not in the tokenizer's vocabulary"):
        Predictor(b)
    with pytest.raises(BundleError, match="not one of the bundle's checksummed files"):
        Predictor(bundle_copy("b"), model_file="../elsewhere/other.onnx")


def test_a_garbage_model_with_a_true_checksum_is_one_line(bundle_copy):
    b = bundle_copy()
    (b / "model.onnx").write_bytes(b"not a model")
    write_manifest(b, json.loads((b / MANIFEST).read_text()))
    verify_bundle(b)  # consistent, so the checksums pass
    with pytest.raises(BundleError, match="cannot be loaded by ONNX Runtime"):
        Predictor(b)


def test_verify_false_still_checks_the_manifest_and_layout(bundle_copy):
    b = bundle_copy()
    (b / "vocab.txt").write_text("changed")
    Predictor(b, verify=False)  # no hashing asked for
    rewrite(b, lambda m: m["model"].update(file="/etc/passwd"))
    with pytest.raises(BundleError, match="unsafe path"):
        Predictor(b, verify=False)


# ---------------------------------------------------------------------------------------------- benchmark settings
@pytest.mark.parametrize("kw, match", [
    ({"batch_size": 0}, "batch size 0"), ({"batch_size": -1}, "batch size -1"),
    ({"batch_size": 100000}, "batch size 100000"), ({"batch_size": 1.5}, "batch size 1.5"),
    ({"num_runs": 0}, "number of runs 0"), ({"warmup_runs": -1}, "warm-up runs -1"),
    ({"sequence_length": -5}, "sequence length -5"), ({"sequence_length": 1}, "sequence length 1"),
    ({"sequence_length": 9000}, "sequence length 9000"), ({"threads": 0}, "threads 0"), ({"threads": -2}, "threads -2"),
    ({"backend": "tensorrt"}, "unknown backend"), ({"texts": "one text"}, "not a list of strings"),
])
def test_bench_config_refuses_what_cannot_be_measured(kw, match):
    with pytest.raises(ProbscaleError, match=match) as e:
        BenchConfig(**kw)
    assert " -- fix: " in str(e.value)


def test_max_eval_check():
    assert check_max_eval(None) is None and check_max_eval(5) == 5
    for bad in (-1, 0):
        with pytest.raises(ProbscaleError, match=f"--max-eval {bad} is not a whole number >= 1"):
            check_max_eval(bad)


def test_bench_bounds_sequence_length_and_memory(hand_bundle):
    with pytest.raises(ProbscaleError, match="above the bundle's max length 16"):
        bench_bundle(hand_bundle, BenchConfig(sequence_length=17, num_runs=1))
    texts = ["good " * 20]  # 16 tokens after truncation: 4096 x 16 = 65,536 tokens per call
    r = bench_bundle(hand_bundle, BenchConfig(batch_size=MAX_BATCH_SIZE, num_runs=2, warmup_runs=0, texts=texts))
    assert r["batch_size"] == MAX_BATCH_SIZE and r["sequence_length"] == 16


def test_bench_refuses_more_tokens_per_call_than_the_bound(tmp_path, bundle_kit):
    b = bundle_kit.make_bundle(tmp_path / "long", bundle_kit.tiny_onnx(), bundle_kit.tokenizer_json(),
                               bundle_kit.base_manifest(max_length=512))
    with pytest.raises(ProbscaleError, match="pass --batch-size 256 or less at 512 tokens"):
        bench_bundle(b, BenchConfig(batch_size=MAX_BATCH_SIZE, sequence_length=512, num_runs=1))


# ---------------------------------------------------------------------------------------------- signatures
@pytest.fixture
def signed(bundle_copy, ec_keys):
    from probscale_edge.runtime import sign_bundle

    b = bundle_copy("signed")
    assert sign_bundle(b, ec_keys["a"][0]) == b / SIGNATURE
    return b


def test_signed_bundle_verifies_with_its_key_only(signed, ec_keys, monkeypatch):
    from probscale_edge.runtime import verify_signature

    monkeypatch.delenv(PUBLIC_KEY_ENV, raising=False)
    pub_a, pub_b = ec_keys["a"][1], ec_keys["b"][1]
    assert verify_signature(signed, pub_a)["labels"] == ["neg", "pos"]
    verify_bundle(signed, public_key=pub_a)
    assert Predictor(signed, public_key=pub_a).predict(["good"])[0].label == "pos"
    verify_bundle(signed)  # no key: bundle.sig is the one extra file a bundle may carry
    for load in (lambda: verify_bundle(signed, public_key=pub_b), lambda: Predictor(signed, public_key=pub_b),
                 lambda: bench_bundle(signed, BenchConfig(num_runs=1), public_key=pub_b)):
        with pytest.raises(BundleError, match="does not verify with public key .*another key"):
            load()


def test_unsigned_bundle_is_refused_when_a_key_is_configured(bundle_copy, ec_keys, monkeypatch):
    b = bundle_copy()
    pub = ec_keys["a"][1]
    with pytest.raises(BundleError, match="is not signed"):
        verify_bundle(b, public_key=pub)
    monkeypatch.setenv(PUBLIC_KEY_ENV, str(pub))
    for load in (verify_bundle, Predictor, lambda x: bench_bundle(x, BenchConfig(num_runs=1))):
        with pytest.raises(BundleError, match="is not signed"):
            load(b)
    verify_bundle(b, public_key=False)  # build steps that check their own unsigned staging folder
    with pytest.raises(ProbscaleError, match="needs verify=True"):
        Predictor(b, verify=False, public_key=pub)
    Predictor(b, verify=False)  # the environment's key is not a reason to refuse an explicit opt-out


def test_signature_catches_a_consistent_rewrite(signed, ec_keys):
    """An adversary who rewrites a file, its checksum and the manifest digest passes verify without a key,
    but not the signature."""
    (signed / "labels.json").write_text(json.dumps(["pos", "neg"]))
    rewrite(signed, lambda m: (m.update(labels=["pos", "neg"]), m["files"].update({"labels.json": entry(signed / "labels.json")})))
    verify_bundle(signed, public_key=False)
    with pytest.raises(BundleError, match="files changed after signing"):
        verify_bundle(signed, public_key=ec_keys["a"][1])


def test_signature_covers_added_files_and_is_dropped_on_rewrite(signed, ec_keys):
    pub = ec_keys["a"][1]
    (signed / "bundle.sig.bak").write_bytes((signed / SIGNATURE).read_bytes())
    with pytest.raises(BundleError, match="files not in its manifest: bundle.sig.bak"):
        verify_bundle(signed, public_key=pub)
    (signed / "bundle.sig.bak").unlink()
    (signed / SIGNATURE).write_text("{}")
    with pytest.raises(BundleError, match="does not verify"):
        verify_bundle(signed, public_key=pub)
    write_manifest(signed, json.loads((signed / MANIFEST).read_text()))
    assert not (signed / SIGNATURE).exists()  # a signature of an older manifest is never left behind


def test_a_tampered_bundle_is_not_signed(bundle_copy, ec_keys):
    from probscale_edge.runtime import sign_bundle

    b = bundle_copy()
    (b / "vocab.txt").write_text("changed")
    with pytest.raises(BundleError, match="vocab.txt does not match its checksum"):
        sign_bundle(b, ec_keys["a"][0])
    assert not (b / SIGNATURE).exists()
    with pytest.raises(ProbscaleError, match="cannot be used"):
        sign_bundle(bundle_copy("b"), ec_keys["a"][1])  # a public key is not a private key


def test_importing_the_runtime_does_not_import_model_signing():
    code = ("import sys, probscale_edge.runtime, probscale_edge.runtime.bench, probscale_edge.runtime.signing; "
            "print(sorted(m for m in ('model_signing', 'sigstore', 'torch', 'transformers') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


# ---------------------------------------------------------------------------------------------- the CLI
CLI_CASES = ["model_file_absolute", "model_file_dotdot", "labels_reversed", "max_length_huge", "labels_empty",
             "files_as_list", "entries_without_bytes"]


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_refuses_with_one_line(bundle_copy, case):
    change, match = MANIFEST_CASES[case]
    b = bundle_copy()
    rewrite(b, lambda m: change(b, m))
    for args in (["verify", str(b)], ["predict", str(b), "good film"], ["bench", str(b), "--no-accuracy"]):
        assert_one_line(run_cli(*args), match)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX links and FIFOs")
def test_cli_refuses_links_and_fifos(bundle_copy):
    a, f = bundle_copy("a"), bundle_copy("f")
    _link_to_outside_folder(a)
    _model_is_a_fifo(f)
    for b, match in ((a, "data is a symbolic link"), (f, "model.onnx is not a regular file")):
        for args in (["verify", str(b)], ["predict", str(b), "good"], ["bench", str(b), "--no-accuracy"]):
            assert_one_line(run_cli(*args), match)


@pytest.mark.parametrize("opt, match", [
    (["--batch-size", "0"], "batch size 0"), (["--batch-size", "-1"], "batch size -1"),
    (["--batch-size", "100000"], "batch size 100000"), (["--num-runs", "0"], "number of runs 0"),
    (["--sequence-length", "-5"], "sequence length -5"),
])
def test_cli_bench_options(hand_bundle, opt, match):
    assert_one_line(run_cli("bench", str(hand_bundle), "--no-accuracy", *opt), match)


def test_cli_with_a_public_key_in_the_environment(signed, bundle_copy, ec_keys):
    env = {PUBLIC_KEY_ENV: str(ec_keys["a"][1])}
    assert run_cli("verify", str(signed), env=env).returncode == 0
    assert run_cli("predict", str(signed), "good", env=env).returncode == 0
    assert_one_line(run_cli("verify", str(bundle_copy("unsigned")), env=env), "is not signed")
    assert_one_line(run_cli("predict", str(signed), "good", env={PUBLIC_KEY_ENV: str(ec_keys["b"][1])}),
                    "does not verify with public key")


# ---------------------------------------------------------------------------------------------- a real build
def test_built_bundle_is_trusted_and_its_altered_copies_are_not(tiny_bundle, tmp_path):
    out, _ = tiny_bundle
    m = verify_bundle(out)
    assert (out / DIGEST).is_file() and "labels.json" in m["files"]
    b = Path(shutil.copytree(out, tmp_path / "reversed"))
    rewrite(b, lambda x: x.update(labels=x["labels"][::-1]))
    refused_everywhere(b, "labels.json and manifest.json disagree")
    b = Path(shutil.copytree(out, tmp_path / "redirected"))
    rewrite(b, lambda x: x["model"].update(file=str(out / x["model"]["file"])))
    refused_everywhere(b, "unsafe path")
