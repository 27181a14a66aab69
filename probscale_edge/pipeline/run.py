"""The build's shared state and the inputs it checks before any heavy work."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from probscale_edge.config import BuildConfig
from probscale_edge.errors import ProbscaleError


def log_stderr(msg):
    if os.environ.get("RANK", "0") == "0":  # one voice under torchrun
        print(msg, file=sys.stderr, flush=True)


def default_output(cfg: BuildConfig) -> Path:
    m = Path(str(cfg.source.model)).name or "model"
    t = Path(cfg.data.tasks[0].spec).stem
    return Path("bundles") / f"{m}-{t}-{cfg.target}"


def _inside(a: Path, b: Path) -> bool:
    """``a`` is ``b`` or lies inside it."""
    return a == b or b in a.parents


def check_output(out: Path, cfg: BuildConfig, inputs: list[Path]) -> None:
    """Refuse an output that would destroy what the build reads, or that is not a folder we may replace."""
    if out.exists() and not out.is_dir():
        raise ProbscaleError(f"output path {out} exists and is a file", "pass another --output folder")
    r, cwd = out.resolve(), Path.cwd().resolve()
    for p in [cwd, *(i.resolve() for i in inputs)]:
        if _inside(p, r) or (p != cwd and _inside(r, p)):  # the output is or holds p, or lies inside an input
            raise ProbscaleError(f"--output {out} is, holds or lies inside {p} (an input, the cache or the working "
                                 "folder), which the build would overwrite", "pass an --output folder of its own, "
                                 "e.g. bundles/NAME")
    if out.exists() and any(out.iterdir()) and not cfg.bundle.force:
        raise ProbscaleError(f"output folder {out} already exists", "pass --force to replace it, or another --output")
    parent = r.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ProbscaleError(f"cannot create the folder {parent}: part of that path is a file",
                             "pass an --output under a folder") from None
    if not os.access(parent, os.W_OK):
        raise ProbscaleError(f"cannot write to {parent}", "choose a writable --output location")


@dataclass
class Run:
    """One build in progress: its config, its log, its caches, the tasks, and every stage's report (the
    manifest's ``stages``)."""

    cfg: BuildConfig
    log: object
    out: Path
    src: object = None  # the resolved model (a folder, or a hub id)
    tasks: list = field(default_factory=list)
    stages: dict = field(default_factory=dict)
    t_start: float = field(default_factory=time.time)
    lengths: dict | None = None  # the teacher stage's decision: {"cap", "model", "tokenizer", "used"}
    recipe: dict | None = None  # probscale_edge.recipe.resolve: the values and who decided each
    dev: object = None  # ladder builds: the dev split held out of the training data
    spare: list = field(default_factory=list)  # ladder builds: texts of training rows neither trained on nor dev
    ladder: dict | None = None  # ladder builds: every rung and the choice (the manifest's "ladder")
    distill_texts: list = field(default_factory=list)  # embed builds: --distill-texts, the tasks' texts dropped

    @property
    def task(self):
        return self.tasks[0]

    @property
    def weights(self) -> list[float]:
        return [t.weight for t in self.cfg.data.tasks]

    @property
    def max_length(self) -> int:
        """Tokens per input: the cap, lowered to what the model and tokenizer take (decided by the teacher stage)."""
        return self.lengths["used"] if self.lengths else self.cfg.source.max_length

    def store(self, name: str):
        from probscale_edge.assets import cache_dir
        from probscale_edge.pipeline.store import StageStore

        return StageStore(cache_dir() / name, log=self.log)


def check_cache() -> None:
    """The cache (assets, teachers, training checkpoints, stage records) must be a writable folder: found now,
    not after the fine-tune."""
    import tempfile

    from probscale_edge.assets import cache_dir

    root = cache_dir()
    try:
        for sub in ("teachers", "stages"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root / "stages", prefix=".write-test-"):
            pass
    except OSError as e:
        raise ProbscaleError(f"the cache {root} is not a writable folder ({e.strerror})",
                             "point PROBSCALE_EDGE_CACHE at a writable folder") from None


def check_inputs(cfg: BuildConfig, out: Path, log):
    """The output against the inputs (data files, model folder, cache: never inside it), then the model:
    resolved and, for a folder, checked. Every route's prepare runs this before loading anything; -> the model."""
    from probscale_edge.assets import cache_dir
    from probscale_edge.modeling import check_model_folder, resolve_model

    inputs = [Path(t.spec) for t in cfg.data.tasks if Path(t.spec).exists()]
    inputs += [Path(t.eval) for t in cfg.data.tasks if t.eval and Path(t.eval).exists()]
    inputs += [Path(p) for p in [cfg.data.distill_texts] if p and Path(p).exists()]
    if Path(cfg.source.model).exists():
        inputs.append(Path(cfg.source.model))
    check_output(out, cfg, inputs + [cache_dir()])
    src = resolve_model(cfg.source.model, log=log)
    if isinstance(src, Path):
        check_model_folder(src, allow_pickle=cfg.source.allow_pickle)
    return src


def prepare(cfg: BuildConfig, log) -> Run:
    """Cheap checks first (the configs checked themselves when made): the output, the cache, the converter, the
    model folder, the data. Nothing heavy is loaded before the inputs are known to be usable."""
    out = Path(cfg.bundle.output) if cfg.bundle.output else default_output(cfg)
    check_cache()
    if cfg.bundle.tflite:
        from probscale_edge.converters.tflite_env import converter_python

        converter_python()
    if cfg.select.latency_table:
        from probscale_edge.specs import LatencyTable

        LatencyTable.load(cfg.select.latency_table)
    from probscale_edge.recipe import resolve

    src = check_inputs(cfg, out, log)
    cfg, recipe = resolve(cfg, src)  # every field the recipe decides is concrete from here on
    run = Run(cfg, log, out, src, recipe=recipe)
    run.tasks = _load_tasks(cfg, log, uncapped_first=cfg.walks_ladder)
    if cfg.walks_ladder:  # the rungs are judged on a dev split the teacher never trains on
        run.dev, run.spare = _hold_out_dev(run.task, cfg.data.max_train, cfg.recover.dev_fraction or 0.1, cfg.seed,
                                           log)
    return run


DEV_MAX = 2000  # rows of unused training data taken for the ladder's dev split (a 1-point floor needs many)


def _hold_out_dev(task, max_train, fraction: float, seed: int, log):
    """A stratified dev split out of the task's training examples, then the ``max_train`` cap on the rest. Rows the
    cap would leave unused go to the dev split first (up to ``DEV_MAX``), so training keeps ``max_train`` rows;
    at least ``fraction`` of the training rows (and 2 per class) are held out in any case. -> (the dev split, the
    texts of the rows left over: the vocabulary and the embedding's token weights read them, nothing trains on them)"""
    from probscale_edge.data import cap_train, stratified_sample

    n_all = len(task.train)
    used = min(n_all, max_train or n_all)
    n = min(n_all - task.num_labels, max(2 * task.num_labels, int(round(fraction * used)),
                                         min(DEV_MAX, n_all - used)))
    dev_idx = set(stratified_sample(task.train.labels, n, seed=seed))
    dev = task.train.subset(sorted(dev_idx))
    rest = task.train.subset([i for i in range(n_all) if i not in dev_idx])
    task.train = cap_train(rest, task.num_labels, max_train)
    used_texts = set(task.train.texts)
    spare = [x for x in rest.texts if x not in used_texts]
    _two_per_class(task)
    log(f"  dev split for the ladder: {len(dev)} examples held out of training ({len(task.train)} left to train on; "
        "the eval split stays for the report)")
    return dev, spare


def _two_per_class(t) -> None:
    """The probe cross-validates per class, early stopping holds out per class."""
    counts = [t.train.labels.count(c) for c in range(t.num_labels)]
    if min(counts) < 2:
        raise ProbscaleError(f"task {t.name}: a class has {min(counts)} training example(s); the probe and the "
                             "dev split need at least 2 per class",
                             f"pass --max-train {2 * t.num_labels} or more, or give more data")


def _load_tasks(cfg: BuildConfig, log, uncapped_first: bool = False) -> list:
    """The tasks, each capped to ``--max-train`` (``uncapped_first``: the first one whole, for the dev split)."""
    from probscale_edge.data import load_task, stratified_sample

    d = cfg.data
    tasks = [load_task(ts.spec, ts.eval, d.text_column, d.label_column, d.text_pair_column,
                       max_train=None if uncapped_first and i == 0 else d.max_train, log=log)
             for i, ts in enumerate(d.tasks)]
    for t in tasks:
        _two_per_class(t)
    task = tasks[0]
    if d.max_eval and len(task.eval) > d.max_eval:
        task.eval = task.eval.subset(stratified_sample(task.eval.labels, d.max_eval))
    log(f"task {task.name}: {len(task.train)} train / {len(task.eval)} eval examples, {task.num_labels} labels")
    return tasks
