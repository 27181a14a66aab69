"""Data parsed strictly: each fault is one ProbscaleError line when the task is loaded, before any model work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from helpers import write_csv
from probscale_edge.data import MAX_CELL_BYTES, MIN_EVAL_EXAMPLES, label_key, load_local, load_task
from probscale_edge.errors import ProbscaleError


def refused(match, fn, *args, **kw):
    with pytest.raises(ProbscaleError, match=match) as e:
        fn(*args, **kw)
    line = str(e.value)
    assert " -- fix: " in line and "\n" not in line, line
    return line


def rows(n, classes=("a", "b")):
    return [(f"text number {i}", classes[i % len(classes)]) for i in range(n)]


def jsonl(path, objs):
    path.write_text("\n".join(o if isinstance(o, str) else json.dumps(o) for o in objs) + "\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- duplicate columns

@pytest.mark.parametrize("header,col", [(("text", "label", "label"), "label"), (("text", "text", "label"), "text")])
def test_duplicate_csv_column_is_refused(tmp_path, header, col):
    p = write_csv(tmp_path / "d.csv", [("t1", "x", "y"), ("t2", "y", "x")] * 30, header=header)
    refused(f"two columns named '{col}'", load_task, str(p))


def test_duplicate_tsv_column_and_json_key_are_refused(tmp_path):
    p = tmp_path / "d.tsv"
    p.write_text("label\ttext\tlabel\n" + "".join(f"a\tt{i}\tb\n" for i in range(60)))
    refused("two columns named 'label'", load_task, str(p))
    j = jsonl(tmp_path / "d.jsonl", ['{"text": "a", "label": 1}', '{"text": "b", "label": 0, "label": 1}'])
    refused(r"d.jsonl:2 has the key 'label' twice", load_task, str(j))


def test_extra_cells_in_a_row_are_refused(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(60)) + "hello, world,1\n")
    refused("line 62 has 3 cells but the header has 2", load_task, str(p))


# ----------------------------------------------------------------------------- label values by type

def test_label_key_normalizes_numbers_and_keeps_strings():
    for v in (1, 1.0, "1", "1.0", " 1 ", "+1", "1e0", "01"):
        assert label_key(v) == ("num", "1"), v
    assert label_key(0.5) == label_key("0.50") == ("num", "0.5")
    assert label_key(-0.0) == label_key("-0") == ("num", "0")
    assert label_key(True) == ("bool", "true") and label_key(False) == ("bool", "false")
    assert label_key(" Pos ") == ("str", "Pos") and label_key("pos") == ("str", "pos")  # case-sensitive
    for bad in (None, [1], {"a": 1}, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            label_key(bad)


def test_integral_numbers_are_one_class_in_jsonl_and_csv(tmp_path):
    values = [1, 1.0, "1", "1.0", 0, 0.0, "0", "0.0"]
    j = jsonl(tmp_path / "d.jsonl", [{"text": f"t{i}", "label": values[i % 8]} for i in range(80)])
    t = load_task(str(j))
    assert t.label_names == ["0", "1"]
    p = write_csv(tmp_path / "d.csv", [(f"t{i}", ["1", "1.0", " 1", "0", "0.0", "-0"][i % 6]) for i in range(60)])
    assert load_task(str(p)).label_names == ["0", "1"]
    # numbers sort by value, then strings
    p = write_csv(tmp_path / "m.csv", [(f"t{i}", ["10", "2", "-1", "other"][i % 4]) for i in range(80)])
    assert load_task(str(p)).label_names == ["-1", "2", "10", "other"]


def test_train_and_eval_normalized_the_same_way(tmp_path):
    tr = write_csv(tmp_path / "tr.csv", [(f"t{i}", str(i % 2)) for i in range(40)])
    ev = jsonl(tmp_path / "ev.jsonl", [{"text": f"e{i}", "label": float(i % 2)} for i in range(12)])
    t = load_task(str(tr), str(ev))
    assert t.label_names == ["0", "1"]
    assert t.eval.labels == [i % 2 for i in range(12)]


def test_booleans_mixed_with_numbers_are_refused(tmp_path):
    j = jsonl(tmp_path / "d.jsonl", [{"text": f"t{i}", "label": [True, 1, False, 0][i % 4]} for i in range(60)])
    refused(r"mixes boolean labels \(line 1: true\) with number labels \(line 2: 1\)", load_task, str(j))
    j = jsonl(tmp_path / "s.jsonl", [{"text": f"t{i}", "label": [True, "no"][i % 2]} for i in range(60)])
    refused("mixes boolean labels .* with string labels", load_task, str(j))


def test_boolean_labels_alone_are_classes_false_true(tmp_path):
    j = jsonl(tmp_path / "d.jsonl", [{"text": f"t{i}", "label": bool(i % 2)} for i in range(60)])
    assert load_task(str(j)).label_names == ["false", "true"]
    # a CSV's "true"/"false" are the same classes as JSON true/false
    ev = write_csv(tmp_path / "ev.csv", [(f"e{i}", ["true", "false"][i % 2]) for i in range(10)])
    assert load_task(str(j), str(ev)).eval.labels == [1, 0] * 5


@pytest.mark.parametrize("label,match", [([1], "a list is not a label"), ({"y": 1}, "an object is not a label"),
                                         ("NaN", "not a finite number")])
def test_label_that_is_not_a_value_is_refused(tmp_path, label, match):
    objs = [{"text": f"t{i}", "label": i % 2} for i in range(60)]
    lines = [json.dumps(o) for o in objs] + ['{"text": "x", "label": %s}' % (label if label == "NaN" else json.dumps(label))]
    refused(rf"line 61 has the label .*{match}", load_task, str(jsonl(tmp_path / "d.jsonl", lines)))


def test_text_that_is_a_json_object_is_refused(tmp_path):
    j = jsonl(tmp_path / "d.jsonl", [{"text": ["a", "b"] if i == 5 else f"t{i}", "label": i % 2} for i in range(60)])
    refused("line 6 has a JSON list as its 'text' value", load_task, str(j))


# ----------------------------------------------------------------------------- only regular files

def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "data.csv"
    os.mkfifo(fifo)
    result = {}

    def load():
        try:
            load_task(str(fifo))
        except ProbscaleError as e:
            result["err"] = str(e)

    th = threading.Thread(target=load, daemon=True)
    th.start()
    th.join(20)
    if th.is_alive():  # blocked in open(): give it a writer so the thread can finish, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("loading a FIFO blocked")
    assert "is a FIFO (named pipe), not a regular file -- fix: " in result["err"]


def test_device_and_folder_are_refused(tmp_path):
    refused("/dev/null is a character device, not a regular file", load_task, "/dev/null")
    refused("is a folder", load_task, str(tmp_path))
    tr = write_csv(tmp_path / "tr.csv", rows(60))
    refused("/dev/null is a character device", load_task, str(tr), "/dev/null")  # eval files too


# ----------------------------------------------------------------------------- eval split big enough

def test_eval_file_of_one_row_is_refused_up_front(tmp_path):
    tr = write_csv(tmp_path / "tr.csv", rows(60))
    ev = write_csv(tmp_path / "ev.csv", [("only one", "a")])
    refused(f"ev.csv has 1 example, fewer than {MIN_EVAL_EXAMPLES}: too few to measure", load_task, str(tr), str(ev))


def test_training_file_too_small_to_split_off_an_eval(tmp_path):
    refused(f"has 4 examples, fewer than {MIN_EVAL_EXAMPLES}.* or pass --eval FILE", load_task,
            str(write_csv(tmp_path / "small.csv", rows(20))))
    t = load_task(str(write_csv(tmp_path / "enough.csv", rows(50))))
    assert len(t.eval) == MIN_EVAL_EXAMPLES


# ----------------------------------------------------------------------------- large cells

def test_large_cell_is_accepted(tmp_path):
    big = "word " * 43_000  # 215 KB in one cell (the csv module's default limit is 128 KiB)
    p = write_csv(tmp_path / "big.csv", [(big if i == 0 else f"t{i}", i % 2) for i in range(60)])
    t = load_task(str(p))
    assert max(len(x) for x in t.train.texts + t.eval.texts) == len(big)


def test_cell_over_the_bounded_limit_is_refused(tmp_path):
    p = tmp_path / "huge.csv"
    with open(p, "w", encoding="utf-8") as f:
        f.write('text,label\n"')
        f.write("x" * (MAX_CELL_BYTES + 1))
        f.write('",1\nb,0\n')
    refused(f"is larger than {MAX_CELL_BYTES // 2**20} MB", load_local, p)


# ----------------------------------------------------------------------------- --max-train

@pytest.mark.parametrize("n,match", [(2, r"--max-train 2 keeps fewer than one example per class \(3 classes\)"),
                                     (0, "--max-train 0 keeps no training examples"),
                                     (-5, "--max-train -5 keeps no training examples")])
def test_max_train_below_the_number_of_classes(tmp_path, n, match):
    p = write_csv(tmp_path / "d.csv", rows(90, ("a", "b", "c")))
    refused(match, load_task, str(p), max_train=n)


def test_max_train_at_the_number_of_classes_keeps_one_each(tmp_path):
    t = load_task(str(write_csv(tmp_path / "d.csv", rows(90, ("a", "b", "c")))), max_train=3)
    assert sorted(t.train.labels) == [0, 1, 2]


# ----------------------------------------------------------------------------- through the CLI

def run_build(*args):
    return subprocess.run([sys.executable, "-m", "probscale_edge", "build", *args], capture_output=True, text=True)


def assert_one_line(proc, out, match):
    assert proc.returncode == 2, proc.stderr[-2000:]
    errs = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errs) == 1 and match in errs[0] and " -- fix: " in errs[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_cli_refuses_bad_data_before_the_model_loads(tmp_path, tiny_bert, toy_csv):
    out = tmp_path / "bundle"
    dup = write_csv(tmp_path / "dup.csv", [("t", "a", "b")] * 60, header=("text", "label", "label"))
    assert_one_line(run_build("--model", str(tiny_bert), "--data", str(dup), "-o", str(out)), out,
                    "two columns named 'label'")
    ev = write_csv(tmp_path / "ev.csv", [("one row", "pos")])
    p = run_build("--model", str(tiny_bert), "--data", str(toy_csv), "--eval", str(ev), "-o", str(out))
    assert_one_line(p, out, "has 1 example, fewer than 10")
    assert "fine-tuning" not in p.stderr
