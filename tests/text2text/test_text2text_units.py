"""Text-to-text pieces that need no build: pairs loading and its one-line errors, the metrics, the block search
(pure data), the manifest schema of a text2text bundle."""

from __future__ import annotations

import itertools
import json

import pytest

from probscale_edge.errors import ProbscaleError
from probscale_edge.text2text import chrf, choose_metric, exact_match, load_pairs_task, read_pairs

from t5_tiny import pairs_rows, write_pairs


# ---------------------------------------------------------------------------------------------- data
def test_pairs_load_and_split(tmp_path):
    p = write_pairs(tmp_path / "p.csv", pairs_rows(100))
    t = load_pairs_task(str(p), text_column="source", target_column="target")
    assert (len(t.train), len(t.eval)) == (80, 20)
    assert t.metric == "exact_match" and t.label_words == ["neg", "pos"]
    assert set(t.train.sources) & set(t.eval.sources) <= set(t.train.sources)  # a split, not copies
    again = load_pairs_task(str(p), text_column="source", target_column="target")
    assert again.eval.sources == t.eval.sources  # fixed seed


def test_free_text_targets_are_scored_by_chrf(tmp_path):
    rows = [(f"say {i}", f"the number {i} in words") for i in range(60)]
    t = load_pairs_task(str(write_pairs(tmp_path / "p.csv", rows)), text_column="source", target_column="target")
    assert t.metric == "chrf" and t.label_words is None


def test_no_target_column_is_one_line(tmp_path):
    p = write_pairs(tmp_path / "p.csv", pairs_rows(30), target="label")
    with pytest.raises(ProbscaleError) as e:
        read_pairs(p, "source", "target")
    assert "no target column 'target'" in str(e.value) and "--target-column" in str(e.value)
    assert "\n" not in str(e.value)


def test_empty_targets_are_one_line(tmp_path):
    rows = pairs_rows(30)
    rows[7] = (rows[7][0], "  ")
    rows[9] = (rows[9][0], "")
    with pytest.raises(ProbscaleError) as e:
        read_pairs(write_pairs(tmp_path / "p.csv", rows), "source", "target")
    assert "2 of 30 rows have an empty target (first at line 9)" in str(e.value)


def test_builtin_task_framing():
    from probscale_edge.text2text import frame_builtin

    t = frame_builtin("trec6", max_train=60)
    assert t.label_words == ["abbr", "desc", "enty", "hum", "loc", "num"] and t.metric == "exact_match"
    assert all(s.startswith("trec6: ") for s in t.train.sources)
    assert set(t.train.targets) <= set(t.label_words)


# ---------------------------------------------------------------------------------------------- metrics
def test_exact_match_and_chrf_values():
    assert exact_match(["pos", " neg", "pos"], ["pos", "neg", "neg"]) == pytest.approx(2 / 3)
    assert chrf(["abc"], ["abc"]) == pytest.approx(1.0)
    # "ab" vs "abc": n=1 P 1 R 2/3, n=2 P 1 R 1/2 (no 3-grams in the output): P 1, R 7/12, F2 = 35/55
    assert chrf(["ab"], ["abc"]) == pytest.approx(35 / 55)
    assert chrf(["a b"], ["ab"]) == pytest.approx(1.0)  # whitespace is not counted
    assert chrf(["xyz"], ["abc"]) == 0.0


def test_metric_choice():
    from probscale_edge.text2text import Pairs

    assert choose_metric(Pairs(["a"] * 3, ["x", "y", "x"]), Pairs(["b"], ["y"]))[0] == "exact_match"
    assert choose_metric(Pairs(["a"] * 3, ["x", "y", "x"]), Pairs(["b"], ["z"]))[0] == "chrf"


# ---------------------------------------------------------------------------------------------- block search
def _brute(costs, curves, budget):
    ce, cd = costs["encoder"], costs["decoder"]
    e, d = curves["encoder"], curves["decoder"]
    ge = [e[i + 1] - e[i] for i in range(len(ce))]
    gd = [d[i + 1] - d[i] for i in range(len(cd))]
    limit = budget * (sum(ce) + sum(cd))
    best = None
    subsets = lambda n: [s for k in range(1, n + 1) for s in itertools.combinations(range(n), k)]  # noqa: E731
    for se in subsets(len(ce)):
        for sd in subsets(len(cd)):
            c = sum(ce[i] for i in se) + sum(cd[i] for i in sd)
            if c <= limit and (best is None or sum(ge[i] for i in se) + sum(gd[i] for i in sd) > best[0] + 1e-12):
                best = (sum(ge[i] for i in se) + sum(gd[i] for i in sd), se, sd)
    return best


def test_block_search_is_exact_where_the_stacks_cost_differently():
    from probscale_edge.seq2seq import choose_blocks

    costs = {"encoder": [10] * 4, "decoder": [16] * 4}
    curves = {"encoder": [0.5, 0.52, 0.70, 0.71, 0.75], "decoder": [0.3, 0.6, 0.61, 0.62, 0.8]}
    for budget in (0.3, 0.45, 0.6, 0.8):
        enc, dec = choose_blocks(costs, curves, budget)
        gain, se, sd = _brute(costs, curves, budget)
        e, d = curves["encoder"], curves["decoder"]
        got = sum(e[i + 1] - e[i] for i in enc) + sum(d[i + 1] - d[i] for i in dec)
        assert got == pytest.approx(gain), (budget, enc, dec, se, sd)
        assert sum(10 for _ in enc) + sum(16 for _ in dec) <= budget * 104 + 1e-9
    assert choose_blocks(costs, curves, 0.45) == ((1,), (0, 3))  # the blocks with the large gains (42 of 46.8)


def test_drop_top_keeps_the_first_blocks():
    from probscale_edge.seq2seq import choose_blocks

    costs = {"encoder": [10] * 4, "decoder": [16] * 4}
    enc, dec = choose_blocks(costs, None, 0.45, strategy="bottom")
    assert enc == tuple(range(len(enc))) and dec == tuple(range(len(dec)))
    assert 10 * len(enc) + 16 * len(dec) <= 0.45 * 104 and (len(enc), len(dec)) == (3, 1)  # 46 of 46.8 kept


def test_budget_below_one_block_of_each_stack():
    from probscale_edge.seq2seq import check_block_budget

    costs = {"encoder": [10] * 4, "decoder": [16] * 4}
    check_block_budget(costs, 26 / 104)
    with pytest.raises(ProbscaleError) as e:
        check_block_budget(costs, 25 / 104)
    assert "fewer than one encoder and one decoder block" in str(e.value) and "--budget 0.250" in str(e.value)


# ---------------------------------------------------------------------------------------------- schema
def test_text2text_manifest_schema(tmp_path):
    from probscale_edge.runtime.bundle import check_manifest, file_entries

    for n in ("e.onnx", "d.onnx", "dp.onnx", "s.json", "tok.json"):
        (tmp_path / n).write_text("x")
    m = {"format_version": 1, "kind": "text2text", "labels": [], "files": file_entries(tmp_path, ["e.onnx", "d.onnx",
         "dp.onnx", "s.json", "tok.json"]), "tokenizer": {"file": "tok.json", "max_length": 64},
         "model": {"file": "e.onnx", "graphs": {"encoder": "e.onnx", "decoder": "d.onnx", "decoder_with_past": "dp.onnx"},
                   "spec_file": "s.json"}, "generation": {"max_new_tokens": 8}}
    check_manifest(json.loads(json.dumps(m)))
    bad = [("model", {**m["model"], "graphs": {"encoder": "e.onnx", "decoder": "d.onnx"}}, "does not name"),
           ("model", {**m["model"], "graphs": {**m["model"]["graphs"], "decoder": "../d.onnx"}}, "unsafe path"),
           ("model", {**m["model"], "spec_file": "other.json"}, "not one of the bundle's checksummed files"),
           ("generation", {"max_new_tokens": 0}, "generation.max_new_tokens"),
           ("labels", ["pos", "pos"], "not unique")]
    for key, value, msg in bad:
        with pytest.raises(ProbscaleError) as e:
            check_manifest({**m, key: value})
        assert msg in str(e.value), (key, str(e.value))


def test_chrf_equals_sacrebleu_on_single_sentences():
    sacrebleu = pytest.importorskip("sacrebleu")
    import random

    rng = random.Random(0)
    words = "the cat sat on a mat dog ran far away quickly home ünï 中文".split()
    for _ in range(200):
        r = " ".join(rng.choice(words) for _ in range(rng.randint(1, 6)))
        h = " ".join(rng.choice(words) for _ in range(rng.randint(1, 6)))
        assert chrf([h], [r]) == pytest.approx(sacrebleu.sentence_chrf(h, [r]).score / 100, abs=1e-9), (h, r)


def test_runtime_decode_matches_transformers_decode(tmp_path):
    """Decoding drops special tokens, cuts at eos, and applies clean_up_tokenization_spaces as transformers does."""
    import numpy as np

    from probscale_edge.runtime.generate import Generator
    from probscale_edge.runtime.predictor import _load_tokenizer
    from probscale_edge.text2text import train_tokenizer

    texts = ["hello world . is it ? yes , it is ! i ' m sure it 's fine , isn't it", "we 've seen they 're here"]
    tok = train_tokenizer(texts * 20, vocab_size=60)
    tok.save_pretrained(str(tmp_path))
    g = Generator.__new__(Generator)  # decode needs only the tokenizer and the special ids
    g.tokenizer, g.eos = _load_tokenizer(tmp_path / "tokenizer.json", 64), 1
    for clean in (False, True):
        g.clean_up_spaces = clean
        for t in texts:
            ids = tok(t)["input_ids"]  # ends with </s> (1)
            row = np.array([[0] + ids + [0, 0]])  # start token first, padding after eos
            want = tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=clean).strip()
            assert g.decode(row) == [want]
    assert g.decode(np.array([[0] + tok("hello world .")["input_ids"]]))[0] == "hello world."
