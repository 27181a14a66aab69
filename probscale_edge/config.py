"""Typed configs: one frozen dataclass per stage, composed into :class:`BuildConfig`.

Torch- and numpy-free (a test checks it). Every field lives in exactly one config, and its name is
unique across all of them: the CLI flag for a field is ``--`` + its name with ``-`` for ``_``
(``--student-lr`` sets ``RecoverConfig.student_lr``), and :meth:`BuildConfig.create` takes the same
names flat. Each config checks its own values where they are defined (``__post_init__``), so the CLI,
the Python API and every stage refuse the same bad input with the same one line, before anything heavy
loads. A stage never changes its config: what it decides (the budget a compression ratio implies, the
latency table, ...) goes into its result.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

from probscale_edge.errors import ProbscaleError

CONFIG_VERSION = 1
TARGETS = ("arm64", "x86_64", "android", "avx2", "avx512", "avx512_vnni")
STRATEGIES = ("probscale", "bottom", "top", "random")
GRANULARITIES = ("layer", "unit")
RECOVER_MODES = ("none", "head", "finetune", "distill")
POOLINGS = ("mean", "cls")
PRECISIONS = ("int8", "fp32")
QUANT_MODES = ("dynamic", "static")
COMPRESSION_BASES = ("total", "non-embedding")
KINDS = ("classify", "embed", "text2text")
SEARCHES = ("auto", "ladder", "single")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def one_of(name: str, value, choices) -> None:
    if value not in choices:
        raise ProbscaleError(f"unknown {_flag(name)} {value!r}", f"use {_flag(name)} {'|'.join(choices)}")


def in_range(name: str, value, lo=None, hi=None, *, lo_open=False, hi_open=False, integer=False, optional=False,
             example=None) -> None:
    """``value`` is a finite number within [lo, hi] (open ends as asked); None passes when ``optional``."""
    if value is None and optional:
        return
    kind = "an integer" if integer else "a number"
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    ok = ok and not isinstance(value, bool) and math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if not ok:
        lo_s = "" if lo is None else (f"> {lo:g}" if lo_open else f">= {lo:g}")
        hi_s = "" if hi is None else (f"< {hi:g}" if hi_open else f"<= {hi:g}")
        bounds = " and ".join(s for s in (lo_s, hi_s) if s)
        raise ProbscaleError(f"{_flag(name)} {value!r} is not {kind}{' ' + bounds if bounds else ''}",
                             f"pass {_flag(name)} {example if example is not None else (lo if lo is not None else 1)}"
                             + (" (or leave it out)" if optional else ""))


class Config:
    """Serialization with a type and a version; ``replace`` returns a new, re-validated config."""

    def to_dict(self) -> dict:
        return {"type": type(self).__name__, "version": CONFIG_VERSION, **asdict(self)}

    def replace(self, **changes):
        return replace(self, **changes)

    @classmethod
    def from_dict(cls, d: dict):
        if not isinstance(d, dict):
            raise ProbscaleError(f"a {cls.__name__} must be a JSON object", f"pass the {cls.__name__} probscale-edge wrote")
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


@dataclass(frozen=True)
class TaskSpec:
    spec: str  # built-in task name, local file (.csv/.tsv/.jsonl) or datasets name
    weight: float = 1.0  # share of this task in the probe's task-weighted score
    eval: str | None = None  # eval file for a local task (default: a stratified 20% of the file)

    def __post_init__(self):
        if not isinstance(self.spec, str) or not self.spec.strip():
            raise ProbscaleError("a task needs a name or a file", "pass --task NAME or --data FILE")
        if not (isinstance(self.weight, (int, float)) and math.isfinite(self.weight) and self.weight > 0):
            raise ProbscaleError(f"task weight {self.weight!r} of {self.spec} must be positive",
                                 "write --task NAME:WEIGHT with WEIGHT > 0")


@dataclass(frozen=True)
class SourceConfig(Config):
    """The pre-trained model and how it reads text."""

    model: str = "all-MiniLM-L6-v2"  # built-in name, local Hugging Face folder, or hub id (online)
    pooling: str = "mean"  # how token states become one vector: mean | cls
    max_length: int = 128  # the most tokens per input, everywhere; lowered to what the model and tokenizer take
    allow_pickle: bool = False  # accept pytorch_model.bin (pickle can run code)
    allow_unused_weights: bool = False  # build even if the checkpoint holds weights the architecture ignores

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model.strip():
            raise ProbscaleError("--model is empty", "pass a built-in name or a model folder")
        one_of("pooling", self.pooling, POOLINGS)
        in_range("max_length", self.max_length, 2, 8192, integer=True, example=128)


@dataclass(frozen=True)
class DataConfig(Config):
    """The task(s): the first is the bundle's; the others only weight the probes."""

    tasks: tuple = (TaskSpec("rotten_tomatoes"),)
    text_column: str = "text"
    label_column: str = "label"
    text_pair_column: str | None = None  # second text column for pair tasks
    max_train: int | None = 4000  # cap on training examples (stratified)
    max_eval: int | None = None  # cap on eval examples (stratified)
    kind: str = "classify"  # classify | embed (sentence embeddings) | text2text (T5: source -> target text)
    target_column: str = "target"  # text2text: the column holding the target text
    # embed: a file of extra texts (its --text-column) the student is distilled on as well, the teacher's
    # embeddings of them the targets; not scored, not used to trim the vocabulary; eval texts are dropped from it
    distill_texts: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(self.tasks))
        one_of("kind", self.kind, KINDS)
        if not self.tasks:
            raise ProbscaleError("no task given", "pass --task NAME or --data FILE")
        if not all(isinstance(t, TaskSpec) for t in self.tasks):
            raise ProbscaleError("tasks must be TaskSpec objects", "pass tasks=[TaskSpec('rotten_tomatoes')]")
        in_range("max_train", self.max_train, 1, integer=True, optional=True, example=4000)
        in_range("max_eval", self.max_eval, 10, integer=True, optional=True, example=1000)  # data.MIN_EVAL_EXAMPLES
        if self.text_pair_column is not None and self.text_pair_column == self.text_column:
            raise ProbscaleError("--text-pair-column names the --text-column", "pass the second text column")
        if self.distill_texts is not None and self.kind != "embed":
            raise ProbscaleError(f"--distill-texts with --kind {self.kind}",
                                 "use it with --kind embed (or --task embed), or leave it out")


@dataclass(frozen=True)
class FinetuneConfig(Config):
    """The teacher: the full model fine-tuned on the task (cached by content hash). Recovery trains with the
    same batch, warm-up, decay and precision."""

    epochs: float = 3.0
    lr: float = 5e-5  # learning rate of the teacher fine-tune
    batch_size: int = 32  # global batch (split across processes under torchrun)
    warmup: float = 0.1  # share of the steps with a linear warm-up
    weight_decay: float = 0.01
    freeze_word_embeddings: bool = True  # saves a third of the step time
    amp: bool = True  # bf16 autocast on GPUs (ignored on CPUs)
    checkpoint_every: int = 200  # steps between training-state checkpoints (0: none)

    def __post_init__(self):
        in_range("epochs", self.epochs, 0, 1000, lo_open=True, example=3)
        in_range("lr", self.lr, 0, 1, lo_open=True, example=5e-5)
        in_range("batch_size", self.batch_size, 1, 65536, integer=True, example=32)
        in_range("warmup", self.warmup, 0, 1, hi_open=True, example=0.1)
        in_range("weight_decay", self.weight_decay, 0, 1, example=0.01)
        in_range("checkpoint_every", self.checkpoint_every, 0, integer=True, example=200)


@dataclass(frozen=True)
class ProbeConfig(Config):
    """Stage 1: a linear probe on every layer's pooled states, per task."""

    probe_examples: int = 1500  # per task, a stratified sample of the train split
    probe_folds: int = 3  # cross-validation folds of the probe
    probe_batch_size: int = 64  # feature extraction batch

    def __post_init__(self):
        in_range("probe_examples", self.probe_examples, 2, integer=True, example=1500)
        in_range("probe_folds", self.probe_folds, 2, 20, integer=True, example=3)
        in_range("probe_batch_size", self.probe_batch_size, 1, 4096, integer=True, example=64)


@dataclass(frozen=True)
class SelectConfig(Config):
    """Stage 2: the subnetwork under a budget (parameters, a compression ratio, or latency), or a given spec."""

    budget: float | None = None  # fraction of the layers' parameters kept (None: the ladder decides; 1/3 with
    # --search single)
    compression: float | None = None  # instead: reach this many times fewer parameters (sets the budget)
    compression_basis: str = "total"  # what --compression counts: total | non-embedding parameters
    strategy: str = "probscale"  # probscale | bottom | top | random (layer choice)
    granularity: str = "unit"  # layer: whole layers only | unit: layers, then heads and FFN neurons
    layer_budget: float | None = None  # unit: budget for choosing layers (default layer_factor x budget)
    layer_factor: float = 2.0  # unit: layers are chosen under this multiple of the budget
    prune_iterations: int | None = None  # unit: heads and neurons removed in this many re-scored steps (None: recipe)
    max_candidates: int = 6  # layer subsets checked by probing the composed subnetwork
    max_enumerate: int = 200_000  # exact enumeration limit
    max_latency_ms: float | None = None  # a latency budget (batch 1) instead of a parameter budget
    latency_table: str | None = None  # with max_latency_ms: the table measured on the target (default: here)
    spec: dict | None = None  # cut this SubnetworkSpec instead of selecting one

    def __post_init__(self):
        if self.budget is not None and not (isinstance(self.budget, (int, float)) and math.isfinite(self.budget)
                                            and 0 < self.budget <= 1):
            raise ProbscaleError(f"--budget {self.budget} is not a fraction in (0, 1]",
                                 "pass the fraction of non-embedding parameters to keep, e.g. --budget 0.33")
        in_range("compression", self.compression, 1, 1000, lo_open=True, optional=True, example=5)
        one_of("compression_basis", self.compression_basis, COMPRESSION_BASES)
        one_of("strategy", self.strategy, STRATEGIES)
        one_of("granularity", self.granularity, GRANULARITIES)
        in_range("layer_budget", self.layer_budget, 0, 1, lo_open=True, optional=True, example=0.66)
        in_range("layer_factor", self.layer_factor, 1, example=2)
        in_range("prune_iterations", self.prune_iterations, 1, 100, integer=True, optional=True, example=8)
        in_range("max_candidates", self.max_candidates, 1, integer=True, example=6)
        in_range("max_enumerate", self.max_enumerate, 1, integer=True, example=200000)
        in_range("max_latency_ms", self.max_latency_ms, 0, lo_open=True, optional=True, example=5)
        if self.max_latency_ms is not None and (self.compression or self.spec):
            raise ProbscaleError("--max-latency-ms sets the budget itself", "pass either --max-latency-ms or "
                                 "--compression/--spec, not both")
        if self.latency_table is not None and self.max_latency_ms is None:
            raise ProbscaleError("--latency-table without --max-latency-ms", "add --max-latency-ms MS")
        if self.spec is not None:
            from probscale_edge.specs import SubnetworkSpec

            SubnetworkSpec.from_dict(self.spec)  # refuse a malformed spec now, not after the fine-tune

    def pinned(self) -> bool:
        """A size the user fixed: a budget, a compression ratio or a spec (then there is no ladder)."""
        return self.budget is not None or self.compression is not None or self.spec is not None


@dataclass(frozen=True)
class PruneConfig(Config):
    """Stage 3: physical surgery, plus the embedding side (vocabulary, factorization)."""

    trim_vocab: bool | None = None  # keep only the embedding rows the task's training text uses (None: recipe)
    vocab_min_count: int = 1  # a token must occur this often to be kept
    embedding_rank: int | None = None  # low-rank (SVD) factorized word embedding (None: recipe; 0: off)
    embedding_dense_rows: int = 0  # with a rank: the most used tokens also keep their exact rows (0: none)

    def __post_init__(self):
        in_range("vocab_min_count", self.vocab_min_count, 1, integer=True, example=1)
        in_range("embedding_rank", self.embedding_rank, 0, 65536, integer=True, optional=True, example=64)
        in_range("embedding_dense_rows", self.embedding_dense_rows, 0, 10_000_000, integer=True, example=2000)
        if self.embedding_dense_rows and self.embedding_rank == 0:
            raise ProbscaleError("--embedding-dense-rows keeps rows beside a factorized embedding, and this build "
                                 "keeps its embedding whole (--embedding-rank 0, or a one-size build's recipe)",
                                 "pass --embedding-rank R as well, or leave --embedding-dense-rows out")


@dataclass(frozen=True)
class RecoverConfig(Config):
    """Stage 4: recovering the pruned student's accuracy (batch, warm-up, decay: the fine-tune's)."""

    recover_mode: str = "distill"  # none | head | finetune | distill
    student_epochs: float | None = None  # recovery epochs (default: the fine-tune's --epochs)
    student_lr: float = 1e-4  # pruned models recover faster with a larger step
    temperature: float = 2.0  # distillation temperature
    alpha: float = 0.5  # weight of the hard-label loss when distilling
    # hidden-state distillation: each kept student layer's output is pulled towards its teacher layer's;
    # this weight times the mean relative squared error over layers is added to the loss. 0: logits only.
    distill_hidden: float | None = None  # None: the recipe's
    # augmented distillation: this many perturbed copies of every training example, labelled by the
    # teacher's logits only (see probscale_edge.augment). 0: the task's examples only.
    augment: int | None = None  # None: the recipe's
    # early stopping: a stratified dev split held out of the training data is scored every ``eval_every``
    # epochs; the best weights are kept, training stops after ``patience`` scores without gain. 0: off.
    dev_fraction: float = 0.1
    eval_every: float = 0.5
    patience: int = 3

    def __post_init__(self):
        one_of("recover_mode", self.recover_mode, RECOVER_MODES)
        in_range("student_epochs", self.student_epochs, 0, 1000, lo_open=True, optional=True, example=3)
        in_range("student_lr", self.student_lr, 0, 1, lo_open=True, example=1e-4)
        in_range("temperature", self.temperature, 0, 100, lo_open=True, example=2)
        in_range("alpha", self.alpha, 0, 1, example=0.5)
        in_range("dev_fraction", self.dev_fraction, 0, 0.5, hi_open=True, example=0.1)
        in_range("eval_every", self.eval_every, 0, lo_open=True, example=0.5)
        in_range("patience", self.patience, 1, integer=True, example=3)
        in_range("distill_hidden", self.distill_hidden, 0, optional=True, example=1)
        in_range("augment", self.augment, 0, 64, integer=True, optional=True, example=4)
        for name in ("distill_hidden", "augment"):
            if (getattr(self, name) or 0) > 0 and self.recover_mode != "distill":
                raise ProbscaleError(f"{_flag(name)} {getattr(self, name):g} with --recover-mode {self.recover_mode}",
                                     f"use {_flag(name)} together with --recover-mode distill")


@dataclass(frozen=True)
class ExportConfig(Config):
    """Stage 5: ONNX export, checked against PyTorch."""

    opset: int = 17
    dynamo: bool = False  # the legacy TorchScript exporter is ~10x faster here and as exact
    parity_examples: int = 256
    parity_tolerance: float = 1e-4  # max |delta logit| vs PyTorch

    def __post_init__(self):
        in_range("opset", self.opset, 14, 23, integer=True, example=17)
        in_range("parity_examples", self.parity_examples, 1, integer=True, example=256)
        in_range("parity_tolerance", self.parity_tolerance, 0, lo_open=True, example=1e-4)


@dataclass(frozen=True)
class QuantizeConfig(Config):
    """Stage 6: int8 with the target's preset, gated on task accuracy (falls back step by step to fp32)."""

    precision: str = "int8"  # int8 | fp32
    max_accuracy_drop: float = 1.0  # points of accuracy on the eval split
    per_channel: bool | None = None  # None: the target preset's
    reduce_range: bool | None = None  # None: the target preset's
    exclude_nodes: tuple = ()  # node names kept in fp32
    quant_mode: str = "dynamic"  # dynamic | static (QDQ, activations calibrated on task data)
    calibration_examples: int = 256  # static: training examples for the activation ranges

    def __post_init__(self):
        object.__setattr__(self, "exclude_nodes", tuple(self.exclude_nodes))
        one_of("precision", self.precision, PRECISIONS)
        one_of("quant_mode", self.quant_mode, QUANT_MODES)
        in_range("max_accuracy_drop", self.max_accuracy_drop, -100, 100, example=1)
        in_range("calibration_examples", self.calibration_examples, 1, integer=True, example=256)


@dataclass(frozen=True)
class GoalConfig(Config):
    """What the app needs: the ladder build ships the smallest bundle that meets all of it."""

    search: str = "auto"  # auto: the ladder unless --budget/--compression/--spec | ladder | single (one budget)
    min_retention: float = 0.99  # share of the full fine-tuned model's dev accuracy every shipped rung keeps
    max_size_mb: float | None = None  # bytes of the shipped model file, in MB (10^6 bytes)
    ladder: tuple = (2.0, 3.0, 5.0, 8.0, 12.0, 16.0)  # rungs, in times fewer total parameters
    best_effort: bool = False  # when the constraints cannot all be met, ship the closest rung (marked so)
    # minutes for the whole build: no rung starts that the last one's time says would end past it (0: no cap)
    time_budget: float = 20.0
    rung_epochs: float = 1.0  # distillation epochs at each rung (the student carries them down the ladder)
    layer_floor: float = 0.5  # no kept layer falls below this share of the average kept heads / neurons
    # the least share of a rung the layers keep where the recipe picks the embedding rank (ladder.rung_rank);
    # 0.45 against 1/3 on all-MiniLM-L6-v2 at 10x, the same teachers: 98.76% against 98.51% mean retention
    # (benchmarks/compression, minilm-ladder-vs-textpruner-10x-*.json)
    layer_share: float = 0.45

    def __post_init__(self):
        object.__setattr__(self, "ladder", tuple(float(r) for r in self.ladder))
        one_of("search", self.search, SEARCHES)
        in_range("min_retention", self.min_retention, 0, 1, lo_open=True, example=0.99)
        in_range("max_size_mb", self.max_size_mb, 0, lo_open=True, optional=True, example=5)
        in_range("time_budget", self.time_budget, 0, example=20)
        in_range("rung_epochs", self.rung_epochs, 0, 100, lo_open=True, example=1)
        in_range("layer_floor", self.layer_floor, 0, 1, example=0.5)
        in_range("layer_share", self.layer_share, 0, 1, hi_open=True, example=0.45)
        if not self.ladder or any(not (math.isfinite(r) and r > 1) for r in self.ladder) \
                or list(self.ladder) != sorted(set(self.ladder)):
            raise ProbscaleError(f"--ladder {','.join(f'{r:g}' for r in self.ladder)} is not a rising list of "
                                 "ratios above 1", "pass e.g. --ladder 2,3,5,8,12,16")


@dataclass(frozen=True)
class BundleConfig(Config):
    """The bundle: where it goes and what it ships besides the ONNX model."""

    output: str | None = None  # bundle folder (default bundles/MODEL-TASK-TARGET)
    force: bool = False  # replace an existing bundle (atomically)
    tflite: bool = False  # also ship model.tflite (LiteRT int8, dynamic_wi8_afp32), accuracy-gated
    latency_runs: int = 50  # timed runs of the build's own latency line

    def __post_init__(self):
        in_range("latency_runs", self.latency_runs, 1, 100000, integer=True, example=50)


_SECTIONS = {"source": SourceConfig, "data": DataConfig, "finetune": FinetuneConfig, "probe": ProbeConfig,
             "select": SelectConfig, "prune": PruneConfig, "recover": RecoverConfig, "export": ExportConfig,
             "quantize": QuantizeConfig, "goal": GoalConfig, "bundle": BundleConfig}


@dataclass(frozen=True)
class BuildConfig(Config):
    """The whole pipeline: one config per stage, plus what every stage shares."""

    source: SourceConfig = field(default_factory=SourceConfig)
    data: DataConfig = field(default_factory=DataConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    recover: RecoverConfig = field(default_factory=RecoverConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    goal: GoalConfig = field(default_factory=GoalConfig)
    bundle: BundleConfig = field(default_factory=BundleConfig)
    target: str = "arm64"  # arm64 | x86_64 | android | avx2 | avx512 | avx512_vnni (quantization preset, formats)
    seed: int = 0  # one seed for every random choice (head init, batches, dev split, probes)
    use_cache: bool = True  # reuse a cached fine-tuned teacher and probe features (content hash)
    resume: bool = False  # reuse stages an interrupted build finished (probe, select, student)

    def __post_init__(self):
        for name, cls in _SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise ProbscaleError(f"BuildConfig.{name} must be a {cls.__name__}", f"pass {name}={cls.__name__}(...)")
        one_of("target", self.target, TARGETS)
        in_range("seed", self.seed, 0, 2**32 - 1, integer=True, example=0)
        if self.goal.search == "ladder" and self.select.pinned():
            raise ProbscaleError("--search ladder with --budget, --compression or --spec",
                                 "drop those (the ladder chooses the size), or pass --search single")

    @property
    def walks_ladder(self) -> bool:
        """Whether this build walks the ladder (else: one budget, as given)."""
        return self.goal.search == "ladder" or (self.goal.search == "auto" and not self.select.pinned()
                                                 and self.select.granularity == "unit"
                                                 and self.select.strategy == "probscale")

    @classmethod
    def create(cls, **flat) -> "BuildConfig":
        """A BuildConfig from flat field names (the CLI's flags): ``create(model=..., budget=0.5, epochs=1)``."""
        parts = {name: {} for name in _SECTIONS}
        top = {f.name for f in fields(cls)} - set(_SECTIONS)
        owner = {f.name: name for name, c in _SECTIONS.items() for f in fields(c)}
        kw = {}
        for k, v in flat.items():
            if k in top:
                kw[k] = v
            elif k in owner:
                parts[owner[k]][k] = v
            else:
                raise ProbscaleError(f"BuildConfig has no field {k!r}", "see probscale_edge.config for the fields")
        if "tasks" in parts["data"]:
            parts["data"]["tasks"] = tuple(parts["data"]["tasks"])
        return cls(**{name: _SECTIONS[name](**parts[name]) for name in _SECTIONS}, **kw)

    def flat(self) -> dict:
        """Every field by its (unique) name: the inverse of :meth:`create`."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _SECTIONS}
        for name in _SECTIONS:
            section = getattr(self, name)
            out.update({f.name: getattr(section, f.name) for f in fields(section)})
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "BuildConfig":
        if not isinstance(d, dict):
            raise ProbscaleError("a BuildConfig must be a JSON object", "pass the build_config a manifest holds")
        sections = {}
        for name, c in _SECTIONS.items():
            sd = dict(d.get(name) or {})
            if name == "data" and "tasks" in sd:
                sd["tasks"] = tuple(TaskSpec(**t) if isinstance(t, dict) else t for t in sd["tasks"])
            sections[name] = c.from_dict(sd)
        top = {f.name: d[f.name] for f in fields(cls) if f.name not in _SECTIONS and f.name in d}
        return cls(**sections, **top)


def field_names() -> dict:
    """{field name: section} for every field (``None``: a top-level field of BuildConfig)."""
    out = {f.name: None for f in fields(BuildConfig) if f.name not in _SECTIONS}
    for name, c in _SECTIONS.items():
        out.update({f.name: name for f in fields(c)})
    return out


def _unique_names() -> None:  # the rule the flags rely on, checked at import
    seen = {}
    for f in fields(BuildConfig):
        if f.name not in _SECTIONS:
            seen[f.name] = "BuildConfig"
    for name, c in _SECTIONS.items():
        for f in fields(c):
            assert f.name not in seen, f"field {f.name} in {c.__name__} and {seen[f.name]}"
            seen[f.name] = c.__name__


_unique_names()
