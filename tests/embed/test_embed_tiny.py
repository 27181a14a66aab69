"""The embedding route end to end on a random-init tiny BERT (shapes, parity, the bundle, the runtime, the CLI,
error paths; no accuracy claims: those are in test_embed_real.py and benchmarks/embeddings)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import venv

import numpy as np
import pytest

import helpers
from helpers import ROOT

TEXTS = ["good movie", "an awful, awful film", "", "ünïcödé 中文 😀 " * 40, "the team scored a goal in the match",
         "x"]


def _data(tmp):
    rng = random.Random(0)
    words = {0: ["good", "great", "fine", "lovely"], 1: ["bad", "awful", "poor", "sad"], 2: ["ball", "team", "goal"]}
    rows = [(" ".join(rng.choice(words[i % 3]) for _ in range(6)) + f" item {i}", str(i % 3)) for i in range(240)]
    lab = helpers.write_csv(tmp / "lab.csv", rows)
    plain = helpers.write_csv(tmp / "notes.csv", [(r[0] + " note",) for r in rows[:150]], header=("text",))
    return lab, plain


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_bert):
    from probscale_edge.pipeline import BuildConfig, TaskSpec, build

    tmp = tmp_path_factory.mktemp("embed")
    lab, plain = _data(tmp)
    out = tmp / "bundle"
    m = build(BuildConfig.create(model=str(tiny_bert), tasks=[TaskSpec(str(lab)), TaskSpec(str(plain))], kind="embed",
                                 output=str(out), budget=0.5, embedding_rank=8, trim_vocab=True, epochs=1,
                                 precision="fp32", target="x86_64", latency_runs=3, use_cache=False),
              log=lambda *_: None)
    return out, m


def test_manifest_of_an_embedding_bundle(built):
    out, m = built
    disk = json.loads((out / "manifest.json").read_text())
    assert disk["kind"] == "embed" and disk["labels"] == [] and "labels.json" not in disk["files"]
    assert disk["embedding"]["dimension"] == 32 and disk["embedding"]["pooling"] == "mean"
    assert disk["embedding"]["normalize"] is False  # a plain folder: no modules.json, no Normalize
    assert disk["model"]["outputs"] == ["token_embeddings"] and disk["model"]["precision"] == "fp32"
    per = disk["metrics"]["per_task"]["bundle"]
    assert set(per) == {"lab", "notes"} and "recall@10" in per["lab"] and "recall@10" not in per["notes"]
    assert disk["parameters"]["pruned"]["total"] < disk["parameters"]["original"]["total"]
    shapes = disk["subnetwork"]["layer_shapes"]
    assert len(shapes) == 4 and sum(s["ffn"] for s in shapes) < 4 * 64  # every layer kept, the width cut
    assert disk["validation"]["onnx_parity_max_abs"] <= 1e-5


def test_runtime_embed_equals_the_build_side(built):
    from probscale_edge.pipeline.embed import load_embedder
    from probscale_edge.runtime import Predictor
    from probscale_edge.sentence import embed_texts

    out, m = built
    student, tok, _ = load_embedder(m["stages"]["student"]["cache"])
    p = Predictor(out)
    got = p.embed(TEXTS)
    want = embed_texts(student, tok, TEXTS, p.max_length)
    assert got.shape == (len(TEXTS), 32) and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-5
    assert np.abs(p.embed(TEXTS[::-1])[::-1] - got).max() <= 1e-6  # batching and order do not change a row
    hits = p.search(["the team scored a goal in the match"], got, k=3)[0]
    assert hits[0][0] == 4 and hits[0][1] == pytest.approx(1.0, abs=1e-5) and len(hits) == 3


def test_embedding_bundle_refuses_classification_calls_and_edits(built, tmp_path):
    import shutil

    from probscale_edge.errors import BundleError, ProbscaleError
    from probscale_edge.runtime import Predictor
    from probscale_edge.runtime.bundle import manifest_digest

    out, _ = built
    with pytest.raises(ProbscaleError, match="embedding bundle"):
        Predictor(out).predict(["good"])
    bad = tmp_path / "b"
    shutil.copytree(out, bad)
    m = json.loads((bad / "manifest.json").read_text())
    m["embedding"]["dimension"] = 31  # re-digested, so only the width check can catch it
    raw = json.dumps(m).encode()
    (bad / "manifest.json").write_bytes(raw)
    (bad / "manifest.sha256").write_text(f"{manifest_digest(raw)}  manifest.json\n")
    with pytest.raises(BundleError, match="31"):
        Predictor(bad)
    m["labels"] = ["a"]
    raw = json.dumps(m).encode()
    (bad / "manifest.json").write_bytes(raw)
    (bad / "manifest.sha256").write_text(f"{manifest_digest(raw)}  manifest.json\n")
    with pytest.raises(BundleError, match="lists labels"):
        Predictor(bad)


def test_cli_predict_search_and_bench(built, tmp_path):
    out, _ = built
    cli = [sys.executable, "-m", "probscale_edge"]
    r = subprocess.run(cli + ["predict", str(out), "good movie"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout.splitlines()[0])
    assert row["dimension"] == 32 and len(row["embedding"]) == 32
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(TEXTS[:2] + TEXTS[4:]) + "\n")
    r = subprocess.run(cli + ["search", str(out), "an awful, awful film", "--corpus", str(corpus), "-k", "2"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)["results"]
    assert [x["text"] for x in res][:1] == ["an awful, awful film"] and len(res) == 2
    r = subprocess.run(cli + ["search", str(out), "q", "--corpus", str(tmp_path / "none.txt")], capture_output=True,
                       text=True)
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and " -- fix: " in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run(cli + ["bench", str(out), "--num-runs", "5", "--warmup-runs", "1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "embeddings/s at batch 1" in r.stdout


def test_text_file_without_the_text_column_is_refused(tmp_path, tiny_bert):
    bad = helpers.write_csv(tmp_path / "bad.csv", [(f"t {i}",) for i in range(80)], header=("body",))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "probscale_edge", "build", "--task", "embed", "--data", str(bad),
                        "--model", str(tiny_bert), "-o", str(out), "--no-cache"], capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "no text column 'text'" in err[0] and "--text-column" in err[0]
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


@pytest.fixture(scope="module")
def slim_env(tmp_path_factory):
    d = tmp_path_factory.mktemp("slim") / "venv"
    venv.create(d, with_pip=True)
    py = d / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(ROOT)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return py


def test_embed_without_torch_equals_the_build_side(built, slim_env, tmp_path):
    from probscale_edge.runtime import Predictor

    out, _ = built
    script = tmp_path / "slim.py"
    script.write_text("import sys, json\nfrom probscale_edge.runtime import Predictor\n"
                      f"e = Predictor({str(out)!r}).embed({TEXTS!r})\n"
                      "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
                      "print(json.dumps(e.tolist()))\n")
    r = subprocess.run([str(slim_env), str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    got = np.array(json.loads(r.stdout.strip().splitlines()[-1]))
    assert np.abs(got - Predictor(out).embed(TEXTS)).max() <= 1e-5


@pytest.mark.parametrize("flags,msg", [(["--recover-mode", "finetune"], "--recover-mode finetune with --kind embed"),
                                       (["--quant-mode", "static"], "--quant-mode static with --kind embed"),
                                       (["--text-pair-column", "b"], "--text-pair-column with --kind embed")])
def test_options_the_route_does_not_take_are_refused_first(tmp_path, tiny_bert, flags, msg):
    data = helpers.write_csv(tmp_path / "d.csv", [(f"text {i}", str(i % 2)) for i in range(60)])
    r = subprocess.run([sys.executable, "-m", "probscale_edge", "build", "--kind", "embed", "--data", str(data),
                        "--model", str(tiny_bert), "-o", str(tmp_path / "out"), *flags], capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr[-1500:]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("max_subsets,scored,search", [(64, 6, "exhaustive"), (3, 4 + 3, "forward")])
def test_layer_budget_drops_layers_chosen_by_the_composed_embedding(tmp_path, tiny_bert, monkeypatch, max_subsets,
                                                                    scored, search):
    from probscale_edge.pipeline import BuildConfig, TaskSpec, build
    from probscale_edge.pipeline import embed
    from probscale_edge.runtime import Predictor

    monkeypatch.setattr(embed, "MAX_LAYER_SUBSETS", max_subsets)  # past it: 4 candidates, then 3 (2 of 4 layers)

    lab, _ = _data(tmp_path)
    m = build(BuildConfig.create(model=str(tiny_bert), tasks=[TaskSpec(str(lab))], kind="embed",
                                 output=str(tmp_path / "b"), compression=1.5, layer_budget=0.5, epochs=1,
                                 target="x86_64", latency_runs=3, use_cache=False), log=lambda *_: None)
    kept = m["subnetwork"]["spec"]["keep_layers"]
    assert len(kept) == 2 and kept == m["stages"]["layers"]["kept"]
    assert m["stages"]["layers"]["candidates"] == scored and m["stages"]["layers"]["search"] == search
    assert len(m["subnetwork"]["layer_shapes"]) == 2
    assert set(m["subnetwork"]["spec"]["ffn"]) <= {str(i) for i in kept}  # width cut named by source layer
    assert m["parameters"]["ratio_total"] >= 1.5
    assert Predictor(tmp_path / "b").embed(["a b c"]).shape == (1, 32)


def test_distill_texts_are_trained_on_never_scored_and_eval_texts_are_dropped(tmp_path, tiny_bert):
    from probscale_edge.pipeline import BuildConfig, TaskSpec, build
    from probscale_edge.pipeline.embed import load_texts

    lab, _ = _data(tmp_path)
    cfg = BuildConfig.create(model=str(tiny_bert), tasks=[TaskSpec(str(lab))], kind="embed", output=str(tmp_path / "b"),
                             compression=1.5, epochs=1, precision="fp32", target="x86_64", latency_runs=3,
                             use_cache=False, distill_texts=str(tmp_path / "extra.csv"))
    task = load_texts(cfg.data.tasks[0], cfg.data)
    new = [f"an extra sentence number {i} about weather" for i in range(40)]
    leaked = [task.eval.texts[0].upper(), "  " + task.train.texts[0] + " "]  # a task's texts, case and spaces aside
    helpers.write_csv(tmp_path / "extra.csv", [(t,) for t in new + leaked + new[:5]], header=("text",))
    m = build(cfg, log=lambda *_: None)
    assert m["stages"]["teacher"]["distill_texts"] == 40
    rec = m["stages"]["recover"]
    assert rec["texts"] + rec["dev_texts"] == m["stages"]["teacher"]["train_texts"] + 40
    assert set(m["metrics"]["per_task"]["bundle"]) == {"lab"}  # scored on the task's eval texts only


@pytest.mark.parametrize("flags,msg", [(["--kind", "classify", "--distill-texts", "d.csv"],
                                        "--distill-texts with --kind classify"),
                                       (["--kind", "embed", "--distill-texts", "missing.csv"],
                                        "data file missing.csv does not exist")])
def test_bad_distill_texts_are_refused_in_one_line(tmp_path, tiny_bert, flags, msg):
    data = helpers.write_csv(tmp_path / "d.csv", [(f"text {i}", str(i % 2)) for i in range(60)])
    r = subprocess.run([sys.executable, "-m", "probscale_edge", "build", "--data", str(data), "--model", str(tiny_bert),
                        "-o", str(tmp_path / "out"), *flags], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr[-1500:]
    assert not (tmp_path / "out").exists()


def test_hidden_states_are_compared_only_on_texts_both_models_tokenized_alike(built, tiny_bert):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from probscale_edge.modeling import tokenize
    from probscale_edge.pipeline.embed import aligned_rows, teacher_ids

    student = PreTrainedTokenizerFast(tokenizer_file=str(built[0] / "tokenizer.json"), pad_token="[PAD]")
    teacher = AutoTokenizer.from_pretrained(str(tiny_bert))
    texts = ["good great fine lovely bad awful item 3", "cat", "ball team goal item 7"]  # "cat": not in the trim
    enc, tenc = tokenize(student, texts, None, 32), tokenize(teacher, texts, None, 32)
    assert student.tokenize("cat") != teacher.tokenize("cat")
    assert enc["input_ids"].shape == tenc["input_ids"].shape  # one padded shape: the old check took all three
    rows, width = aligned_rows(enc, tenc, teacher_ids(student, teacher))
    assert rows.tolist() == [True, False, True] and width == enc["input_ids"].shape[1]


def test_the_hidden_state_loss_reports_the_texts_it_covered(tmp_path, tiny_bert):
    from probscale_edge.pipeline import BuildConfig, TaskSpec, build

    lab, _ = _data(tmp_path)
    extra = [f"an extra sentence number {i} about weather" for i in range(40)]  # words the trim does not keep
    helpers.write_csv(tmp_path / "extra.csv", [(t,) for t in extra], header=("text",))
    cfg = BuildConfig.create(model=str(tiny_bert), tasks=[TaskSpec(str(lab))], kind="embed", output=str(tmp_path / "b"),
                             compression=1.5, epochs=1, precision="fp32", target="x86_64", latency_runs=3,
                             use_cache=False, trim_vocab=True, distill_hidden=1.0, distill_texts=str(tmp_path / "extra.csv"))
    rec = build(cfg, log=lambda *_: None)["stages"]["recover"]
    # the task's own training texts made the vocabulary, so they all tokenize alike; none of the 40 extra ones does
    # (the dev texts are a random share of both, so the covered share is close to, not exactly, the task's share)
    task_texts = rec["texts"] + rec["dev_texts"] - 40
    assert rec["hidden_weight"] == 1.0
    assert rec["hidden_loss_texts"] == pytest.approx(task_texts / (task_texts + 40), abs=0.03)
