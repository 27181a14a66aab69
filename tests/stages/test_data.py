"""Task data: built-in parsing and splits, local files, and clear errors for bad data."""

from __future__ import annotations

import json

import pytest

from helpers import write_csv
from probscale_edge.data import load_local, load_task, stratified_split
from probscale_edge.errors import ProbscaleError


def test_stratified_split_is_deterministic_and_stratified():
    labels = [0] * 70 + [1] * 30
    a = stratified_split(labels)
    b = stratified_split(labels)
    assert a == b
    tr, ev = a
    assert len(ev) == 20 and sum(labels[i] for i in ev) == 6
    assert not set(tr) & set(ev)


@pytest.mark.parametrize("name,n_labels,total", [
    ("rotten_tomatoes", 2, 12808), ("sms_spam", 2, 5574), ("trec6", 6, 5381), ("reuters_r8", 8, 7674)])
def test_builtin_tasks_real_sizes(name, n_labels, total):
    t = load_task(name, max_train=None)
    assert t.num_labels == n_labels
    assert len(t.train) + len(t.eval) == total
    assert t.fingerprint() == load_task(name, max_train=None).fingerprint()  # fixed split


def test_local_csv_tsv_jsonl(tmp_path):
    rows = [(f"text {i}", "a" if i % 2 else "b") for i in range(20)]
    c = load_local(write_csv(tmp_path / "d.csv", rows))
    assert c.label_names == ["a", "b"] and len(c.train) == 16 and len(c.eval) == 4
    (tmp_path / "d.tsv").write_text("text\tlabel\n" + "\n".join(f"{t}\t{y}" for t, y in rows))
    assert len(load_local(tmp_path / "d.tsv").train) == 16
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps({"sentence": t, "y": y}) for t, y in rows))
    j = load_local(tmp_path / "d.jsonl", text_column="sentence", label_column="y")
    assert j.num_labels == 2


def test_pair_columns(tmp_path):
    rows = [(f"q {i}", f"a {i}", str(i % 2)) for i in range(10)]
    t = load_local(write_csv(tmp_path / "p.csv", rows, ("text", "text_pair", "label")), text_pair_column="text_pair")
    assert t.train.pairs is not None and len(t.train.pairs) == len(t.train.texts)


@pytest.mark.parametrize("content,match", [
    ("text,y\na,1\nb,0\n", "no label column 'label'"),
    ("text,label\na,1\nb,1\nc,1\n", "only one class"),
    ("", "is empty"),
    ("text,label\n", "no data rows"),
])
def test_bad_csv(tmp_path, content, match):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(ProbscaleError, match=match) as e:
        load_local(p)
    assert "fix:" in str(e.value) and "\n" not in str(e.value)


def test_non_utf8_and_bad_json(tmp_path):
    p = tmp_path / "latin1.csv"
    p.write_bytes("text,label\ncaf\xe9,1\nthé,0\n".encode("latin-1"))
    with pytest.raises(ProbscaleError, match="not UTF-8"):
        load_local(p)
    j = tmp_path / "bad.jsonl"
    j.write_text('{"text": "a", "label": 1}\n{not json}\n')
    with pytest.raises(ProbscaleError, match="not valid JSON"):
        load_local(j)


def test_eval_labels_unseen_in_training(tmp_path):
    tr = write_csv(tmp_path / "tr.csv", [("a", "x"), ("b", "y"), ("c", "x"), ("d", "y")])
    ev = write_csv(tmp_path / "ev.csv", [("e", "x"), ("f", "z")])
    with pytest.raises(ProbscaleError, match="never seen in training: z"):
        load_local(tr, ev)


def test_unknown_task():
    with pytest.raises(ProbscaleError, match="unknown task"):
        load_task("not_a_task")
