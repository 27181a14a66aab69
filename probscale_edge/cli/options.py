"""Options shared by several commands, and reading the files they name."""

from __future__ import annotations

import json
from pathlib import Path

import click

from probscale_edge.errors import ProbscaleError


def parse_task(s: str):
    from probscale_edge.config import TaskSpec

    name, sep, w = s.rpartition(":")
    if sep and name and not name.endswith((":", "\\")) and _is_number(w):
        return TaskSpec(name, float(w))
    return TaskSpec(s, 1.0)


def _is_number(x):
    try:
        float(x)
        return True
    except ValueError:
        return False


def task_specs(task, data, eval_path) -> tuple:
    """The TaskSpecs of ``--task``/``--data``/``--eval`` (default: rotten_tomatoes)."""
    from probscale_edge.config import TaskSpec

    if eval_path and not data:
        raise ProbscaleError("--eval needs --data", "pass --data TRAIN_FILE with --eval EVAL_FILE")
    specs = ([TaskSpec(data, 1.0, eval_path)] if data else []) + [parse_task(t) for t in task]
    return tuple(specs) or (TaskSpec("rotten_tomatoes"),)


data_options = [
    click.option("--task", "task", multiple=True, help="Built-in task (rotten_tomatoes, sms_spam, trec6, reuters_r8), "
                 "local file or datasets name; NAME:WEIGHT to weight several tasks. Repeatable."),
    click.option("--data", type=click.Path(), help="Local training file (.csv, .tsv, .jsonl)."),
    click.option("--eval", "eval_path", type=click.Path(), help="Local eval file (default: a stratified 20% of --data)."),
    click.option("--text-column", default="text", show_default=True),
    click.option("--label-column", default="label", show_default=True),
    click.option("--text-pair-column", default=None, help="Second text column for pair tasks."),
    click.option("--max-train", type=int, default=4000, show_default=True, help="Cap on training examples (stratified)."),
]


def with_data(f):
    for opt in reversed(data_options):
        f = opt(f)
    return f


def load_tasks(task, data, eval_path, text_column, label_column, text_pair_column, max_train):
    """Load the tasks the data options name, checked by the same DataConfig the build uses."""
    from probscale_edge.config import DataConfig
    from probscale_edge.data import load_task

    d = DataConfig(task_specs(task, data, eval_path), text_column, label_column, text_pair_column, max_train)
    return d, [load_task(s.spec, s.eval, d.text_column, d.label_column, d.text_pair_column, d.max_train) for s in d.tasks]


def read_spec(path) -> dict:
    """A SubnetworkSpec dict from a JSON file: the spec itself, a selection, or a build manifest."""
    from probscale_edge.specs import SubnetworkSpec

    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProbscaleError(f"cannot read the spec {path} ({type(e).__name__})", "pass a JSON file with keep_layers")
    for key in ("subnetwork", "spec"):  # a manifest, then a selection
        if isinstance(d, dict) and isinstance(d.get(key), dict) and "keep_layers" not in d:
            d = d[key]
    if not isinstance(d, dict) or "keep_layers" not in d:
        raise ProbscaleError(f"{path} has no subnetwork spec (a keep_layers list)",
                             "pass the JSON written by `probscale-edge select`, or {\"keep_layers\": [...], \"heads\": {...}, \"ffn\": {...}}")
    return SubnetworkSpec.from_dict(d).to_dict()


def stage_model(model: str, num_labels: int | None = None, pooling: str = "mean"):
    """A probscale-edge model folder as saved, or a Hugging Face encoder with a new task head of
    ``num_labels`` (refused when not given: a silent default would not match the task)."""
    from probscale_edge.modeling import EncoderClassifier, load_classifier, load_encoder

    if (Path(model) / "probscale.json").exists():
        m, tok, meta = load_classifier(model)
        return m, tok, meta.get("labels")
    if num_labels is None:
        num_labels = _checkpoint_labels(model)
    if num_labels is None:
        raise ProbscaleError(f"{model} is not a probscale-edge model folder or a classification checkpoint, so its "
                             "label count is unknown", "pass --num-labels N (the task's number of classes)")
    enc, tok, _ = load_encoder(model)
    return EncoderClassifier(enc, num_labels, pooling), tok, [str(i) for i in range(num_labels)]


def _checkpoint_labels(model) -> int | None:
    """The label count of a Hugging Face *ForSequenceClassification folder (its config's id2label), else None."""
    from probscale_edge.modeling import classification_architecture

    if not classification_architecture(model):
        return None
    id2label = json.loads((Path(model) / "config.json").read_text(encoding="utf-8")).get("id2label")
    return len(id2label) if isinstance(id2label, dict) else None


def check_json_path(path) -> None:
    """A --json path must be a file we can create: checked before the work that fills it."""
    p = Path(path)
    if p.is_dir():
        raise ProbscaleError(f"--json {path} is a folder", "pass a file path, e.g. --json summary.json")
    for up in p.absolute().parents:
        if up.exists():
            if not up.is_dir():
                raise ProbscaleError(f"--json {path}: {up} is a file, not a folder", "pass a path under a folder")
            break


def write_json_out(obj, path) -> None:
    """Write a JSON result file; a folder or an unwritable path is one line."""
    from probscale_edge.runtime.bench import write_json

    check_json_path(path)
    write_json(obj, Path(path))
