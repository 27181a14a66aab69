"""`build --kind text2text` end to end on random-init tiny T5s (both FFN layouts): the bundle verifies, generates
torch-free, equals PyTorch's greedy outputs, benches, refuses tampering; the failure paths are one line each.

Tiny random models: shapes, parity and generation only (retention is measured in benchmarks/t5 on a T5 trained
from scratch on real task data)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from probscale_edge.errors import BundleError, ProbscaleError  # noqa: E402

from t5_tiny import make_t5, pairs_rows, write_pairs  # noqa: E402

ODD = ["", "ünïcödé 中文 😀 text", "good " * 200, "bad", "a"]  # empty, non-ASCII, truncated, one word


def _inputs(n=100):
    return ODD + [s for s, _ in pairs_rows(n - len(ODD), seed=5)]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    d = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROBSCALE_EDGE_CACHE", str(d))
        yield d


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("data") / "pairs.csv", pairs_rows(600))


def _build(cache, data, model, out, **over):
    from probscale_edge.config import BuildConfig, TaskSpec
    from probscale_edge.pipeline import build

    flat = dict(model=str(model), tasks=[TaskSpec(str(data))], kind="text2text", text_column="source",
                target_column="target", output=str(out), budget=0.5, epochs=1, lr=3e-3, student_lr=3e-3,
                parity_examples=100, latency_runs=3, target="x86_64")
    flat.update(over)
    try:
        cfg = BuildConfig.create(**flat, search="single")
    except ProbscaleError:
        cfg = BuildConfig.create(**flat)
    return build(cfg, log=lambda *_: None)


@pytest.fixture(scope="module", params=["v1.0", "v1.1"])
def fp32_bundle(request, cache, data, tmp_path_factory):
    """No recovery, fp32: the bundle's student is exactly the cut teacher, which the test rebuilds in PyTorch."""
    root = tmp_path_factory.mktemp(f"t5-{request.param}")
    model = make_t5(root / "t5", gated=request.param == "v1.1")
    m = _build(cache, data, model, root / "bundle", recover_mode="none", precision="fp32", epochs=0.2)
    return root / "bundle", m


@pytest.fixture(scope="module")
def int8_bundle(cache, data, tmp_path_factory):
    """The default recovery (distillation with early stopping), int8 behind the gate, arm64 (.ort too)."""
    root = tmp_path_factory.mktemp("t5-int8")
    model = make_t5(root / "t5")
    m = _build(cache, data, model, root / "bundle", budget=0.34, epochs=2, student_epochs=2, target="arm64")
    return root / "bundle", m


def _torch_student(cache, m):
    from transformers import AutoTokenizer

    from probscale_edge.seq2seq import Seq2SeqSpec, apply_seq2seq_spec, load_seq2seq

    folder = cache / "teachers" / m["stages"]["finetune"]["key"] / "model"
    teacher = load_seq2seq(folder)
    return apply_seq2seq_spec(teacher, Seq2SeqSpec.from_dict(m["subnetwork"]["spec"])), AutoTokenizer.from_pretrained(str(folder))


def test_fp32_bundle_generates_what_pytorch_generates(fp32_bundle, cache):
    from probscale_edge.runtime import Predictor
    from probscale_edge.text2text import generate_texts

    bundle, m = fp32_bundle
    student, tok = _torch_student(cache, m)
    texts = _inputs(100)
    want = generate_texts(student, tok, texts, m["generation"]["max_new_tokens"], m["tokenizer"]["max_length"])
    got = Predictor(bundle).generate(texts)
    assert sum(a == b for a, b in zip(got, want)) == 100, [(a, b) for a, b in zip(got, want) if a != b][:3]
    assert len(set(got)) > 1  # not one constant output: the comparison can tell models apart
    assert m["validation"]["greedy_equal"] == "100/100" and m["quantization"]["precision"] == "fp32"


def test_fp32_manifest_numbers_are_the_runtimes(fp32_bundle, data):
    from probscale_edge.runtime import Predictor
    from probscale_edge.text2text import exact_match, load_pairs_task

    bundle, m = fp32_bundle
    ev = load_pairs_task(str(data), text_column="source", target_column="target").eval
    p = Predictor(bundle)
    assert exact_match(p.generate(ev.sources), ev.targets) == pytest.approx(m["validation"]["accuracy"]["bundle"])
    assert m["labels"] == ["neg", "pos"] and json.loads((bundle / "labels.json").read_text()) == m["labels"]
    shapes = m["subnetwork"]["layer_shapes"]
    assert len(shapes["encoder"]) == len(m["subnetwork"]["spec"]["keep_layers"]["encoder"]) >= 1
    assert len(shapes["decoder"]) == len(m["subnetwork"]["spec"]["keep_layers"]["decoder"]) >= 1
    assert m["parameters"]["ratio_non_embedding"] >= 1.9  # budget 0.5 of the blocks (tiny: 16-neuron floors)


def test_int8_bundle_passes_its_gate_and_ships_ort(int8_bundle, data):
    from probscale_edge.runtime import Predictor
    from probscale_edge.runtime.generate import Generator
    from probscale_edge.text2text import exact_match, load_pairs_task

    bundle, m = int8_bundle
    q, v = m["quantization"], m["validation"]["accuracy"]
    assert q["attempts"] and q["attempts"][0]["setting"] == "preset, all three graphs"
    if q["precision"] == "int8":
        assert 100 * (v["pruned_onnx_fp32"] - v["bundle"]) <= q["max_accuracy_drop"] + 1e-9
    assert m["stages"]["recover"]["mode"] == "distill"
    assert m["stages"]["recover"]["train"]["dev_history"]  # early stopping scored the dev split
    assert m["parameters"]["ratio_non_embedding"] >= 2.7  # budget 0.34 (tiny: 16-neuron floors)
    ev = load_pairs_task(str(data), text_column="source", target_column="target").eval
    p = Predictor(bundle)
    got = p.generate(ev.sources)
    assert exact_match(got, ev.targets) == pytest.approx(v["bundle"])
    ort = {g: bundle / f"{g}.ort" for g in ("encoder", "decoder", "decoder_with_past")}
    g = Generator(ort, p.generator.spec, p.tokenizer, p.max_length)
    assert g.generate(ev.sources, max_new_tokens=m["generation"]["max_new_tokens"]) == got
    assert m["mobile"]["matches_onnx"] is True


def test_bench_reports_first_token_and_tokens_per_second(fp32_bundle):
    from probscale_edge.runtime.bench import BenchConfig, bench_bundle

    bundle, _ = fp32_bundle
    r = bench_bundle(bundle, BenchConfig(warmup_runs=1, num_runs=5, texts=["good film"]))
    assert r["kind"] == "text2text" and r["num_runs"] == 5
    assert 0 < r["time_to_first_token"]["p50_ms"] <= r["latency"]["p50_ms"]
    assert r["tokens_per_second"]["p50"] is None or r["tokens_per_second"]["p50"] > 0
    assert r["model_bytes"] == sum(r2["bytes"] for n, r2 in json.loads((bundle / "manifest.json").read_text())
                                   ["files"].items() if n.endswith(".onnx"))


def test_runtime_refuses_bad_calls(fp32_bundle):
    from probscale_edge.runtime import Predictor

    p = Predictor(fp32_bundle[0])
    for kw, msg in (({"num_beams": 2}, "greedily only"), ({"max_new_tokens": 0}, "max_new_tokens 0")):
        with pytest.raises(ProbscaleError, match=msg):
            p.generate(["x"], **kw)
    with pytest.raises(ProbscaleError, match="text2text bundle"):
        p.predict(["x"])


def test_tampered_bundle_is_refused(fp32_bundle, tmp_path):
    from probscale_edge.runtime import Predictor

    for name in ("decoder_with_past.onnx", "seq2seq.json"):
        b = tmp_path / name
        shutil.copytree(fp32_bundle[0], b)
        raw = bytearray((b / name).read_bytes())
        raw[len(raw) // 2] ^= 1
        (b / name).write_bytes(bytes(raw))
        with pytest.raises(BundleError, match=f"{name} does not match its checksum"):
            Predictor(b)


BLOCK_TORCH = ("import sys\n"
               "class _Block:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] in ('torch', 'transformers'):\n"
               "            raise ImportError('blocked in this test: ' + name)\n"
               "sys.meta_path.insert(0, _Block())\n")


def test_generates_where_torch_cannot_be_imported(fp32_bundle, tmp_path):
    from probscale_edge.runtime import Predictor

    bundle, _ = fp32_bundle
    texts = _inputs(20)
    script = tmp_path / "slim.py"
    script.write_text(BLOCK_TORCH + "import json\nfrom probscale_edge.runtime import Predictor\n"
                      f"out = Predictor({str(bundle)!r}).generate({texts!r})\n"
                      "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
                      "print(json.dumps(out))\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == Predictor(bundle).generate(texts)
    cli = tmp_path / "cli.py"
    cli.write_text(BLOCK_TORCH + "from probscale_edge.cli import main\nmain()\n")
    for args in (["verify", str(bundle)], ["predict", str(bundle), "good film", "bad plot"],
                 ["bench", str(bundle), "--no-accuracy", "--num-runs", "3", "--warmup-runs", "1"]):
        r = subprocess.run([sys.executable, str(cli), *args], capture_output=True, text=True)
        assert r.returncode == 0, (args, r.stderr[-2000:])
    assert "time to first token p50" in r.stdout


# ---------------------------------------------------------------------------------------------- failure paths
def _cli_build(tmp_path, model, data, *extra):
    out = tmp_path / "out"
    env = {**os.environ, "PROBSCALE_EDGE_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "probscale_edge", "build", "--model", str(model), "--data", str(data),
                        "--kind", "text2text", "--text-column", "source", "--target-column", "target", "-o", str(out),
                        "--target", "x86_64", "--epochs", "1", *extra], capture_output=True, text=True, env=env)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
    assert r.returncode != 0 and len(lines) == 1, r.stderr[-2000:]
    assert " -- fix: " in lines[0]
    assert not out.exists() and not any(p.name.startswith(".out.build-") for p in tmp_path.iterdir())
    return lines[0]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return make_t5(tmp_path_factory.mktemp("t5-err") / "t5")


def test_no_target_column(tmp_path, tiny_folder):
    data = write_pairs(tmp_path / "p.csv", pairs_rows(60), target="label")
    assert "has no target column 'target'" in _cli_build(tmp_path, tiny_folder, data)


def test_empty_targets(tmp_path, tiny_folder):
    rows = pairs_rows(60)
    rows[3] = (rows[3][0], "")
    assert "rows have an empty target (first at line 5)" in _cli_build(tmp_path, tiny_folder,
                                                                       write_pairs(tmp_path / "p.csv", rows))


def test_budget_below_one_block_of_each_stack(tmp_path, tiny_folder):
    data = write_pairs(tmp_path / "p.csv", pairs_rows(60))
    line = _cli_build(tmp_path, tiny_folder, data, "--budget", "0.05")
    assert "fewer than one encoder and one decoder block" in line
    assert not (tmp_path / "cache" / "teachers").exists() or not any((tmp_path / "cache" / "teachers").iterdir())


def test_a_classifier_folder_is_refused(tmp_path, tiny_folder):
    cfg = json.loads((tiny_folder / "config.json").read_text())
    bert = tmp_path / "notT5"
    shutil.copytree(tiny_folder, bert)
    (bert / "config.json").write_text(json.dumps({**cfg, "model_type": "bert"}))
    line = _cli_build(tmp_path, bert, write_pairs(tmp_path / "p.csv", pairs_rows(60)))
    assert "needs a T5 encoder-decoder" in line or "model_type" in line


def test_teacher_is_cached_and_reused(fp32_bundle, cache, data, tmp_path):
    bundle, m = fp32_bundle
    model = bundle.parent / "t5"
    logs = []
    from probscale_edge.config import BuildConfig, TaskSpec
    from probscale_edge.pipeline import build

    flat = dict(model=str(model), tasks=[TaskSpec(str(data))], kind="text2text", text_column="source",
                target_column="target", output=str(tmp_path / "again"), budget=0.5, epochs=0.2, lr=3e-3,
                student_lr=3e-3, parity_examples=100, latency_runs=3, target="x86_64", recover_mode="none",
                precision="fp32")
    try:
        cfg = BuildConfig.create(**flat, search="single")
    except ProbscaleError:
        cfg = BuildConfig.create(**flat)
    m2 = build(cfg, log=logs.append)
    assert any(f"teacher: cached fine-tune {m['stages']['finetune']['key']}" in line for line in logs), logs[:5]
    assert m2["validation"]["accuracy"] == m["validation"]["accuracy"]  # same teacher, same cut, same numbers


def test_unsupported_options_are_one_line(tmp_path, tiny_folder):
    data = write_pairs(tmp_path / "p.csv", pairs_rows(60))
    line = _cli_build(tmp_path, tiny_folder, data, "--distill-hidden", "1")
    assert "--distill-hidden is not supported for --kind text2text" in line


def test_probe_curves_of_both_stacks(tiny_folder):
    from transformers import AutoTokenizer

    from probscale_edge.seq2seq import load_seq2seq
    from probscale_edge.text2text import Pairs, probe_curves, weighted_curves

    model, tok = load_seq2seq(tiny_folder), AutoTokenizer.from_pretrained(str(tiny_folder))
    rows = pairs_rows(80)
    c = probe_curves(model, tok, Pairs([s for s, _ in rows], [t for _, t in rows]), max_examples=80, folds=2)
    assert len(c["encoder"]) == 5 and len(c["decoder"]) == 5  # embeddings + 4 blocks each
    assert all(0.0 <= a <= 1.0 for a in c["encoder"] + c["decoder"]) and c["classes"] == 2
    # the decoder's input at its first position is the start token alone: a constant, so the majority rate
    first = sum(t == "pos" for _, t in rows) / len(rows)
    assert c["decoder"][0] == pytest.approx(max(first, 1 - first), abs=0.05)
    w = weighted_curves([c, {"encoder": [0.0] * 5, "decoder": [1.0] * 5}], [3.0, 1.0])
    assert w["encoder"][2] == pytest.approx(0.75 * c["encoder"][2]) and w["decoder"][1] == pytest.approx(
        0.75 * c["decoder"][1] + 0.25)
