"""The embedding route (``--kind embed`` / ``--task embed``): a sentence-embedding bundle.

    prepare -> teacher (the model as published: its pooling and normalization, no fine-tune; its embeddings
    of every text) -> budget (a total-parameter ratio, the embedding sized first) -> importance (Fisher of the
    embedding, :func:`probscale_edge.sentence.embedding_importance`) -> width cut (every layer kept, heads and
    FFN neurons cut: ``importance.allocate``) -> trimmed vocabulary + factorized embedding -> distillation of
    the teacher's sentence embeddings (cosine + in-batch similarity structure, hidden states optional) ->
    ONNX (token embeddings out; pooling and normalization run in the runtime) -> int8 gated on recall@10 ->
    ORT mobile format -> bundle (``"kind": "embed"``, no labels).

Every task given contributes its training texts; each task's eval texts are scored separately (the teacher
and every student measured the same way): mean cosine to the teacher, Spearman of pairwise similarities,
and where the task has labels recall@10 / nDCG@10 of same-label neighbours and k-NN accuracy. Stages reuse
the classification route's helpers (budget, surgery, vocabulary, factorization, quantization gate,
manifest writer, staging); what is specific to embeddings lives here and in :mod:`probscale_edge.sentence`.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from probscale_edge.errors import ProbscaleError
from probscale_edge.faults import fault
from probscale_edge.pipeline.run import Run

# what this route uses where a PruneConfig / RecoverConfig / SelectConfig field is left to the recipe (None)
DEFAULT_COMPRESSION = 5.0
DEFAULT_RANK_FRACTION = 0.25  # embedding rank = this x hidden size
DEFAULT_MAX_EVAL = 2000  # eval texts per task (stratified): retrieval is quadratic in them
IMPORTANCE_TEXTS = 1024  # texts whose Fisher scores the heads and neurons
MAX_LAYER_SUBSETS = 64  # --layer-budget: every subset of layers scored up to this many, else forward selection
STRUCTURE_WEIGHT = 1.0  # weight of the in-batch similarity-structure loss (no config field yet)
ROUTE_VERSION = "embed-v2"  # v2: the factorization weighted by token counts


@dataclass
class EmbedTeacher:
    model: object  # SentenceEncoder, the model as published
    tokenizer: object
    sentence: object  # SentenceConfig
    train_texts: list  # every task's training texts (deduplicated, in order)
    train_emb: np.ndarray
    eval_emb: dict  # task name -> [n, d]
    metrics: dict  # task name -> retrieval metrics of the teacher
    key: str
    distill_texts: list | None = None  # --distill-texts (distillation inputs only: never scored, never trimmed on)
    distill_emb: np.ndarray | None = None


@dataclass
class EmbedStudent:
    model: object
    tokenizer: object
    spec: object  # SubnetworkSpec
    parameters: dict
    metrics: dict  # task name -> fidelity + retrieval (PyTorch fp32)


# ----------------------------------------------------------------------------------------- prepare
def default_embed_output(cfg) -> Path:
    return Path("bundles") / f"{Path(str(cfg.source.model)).name or 'model'}-embed-{cfg.target}"


def prepare_embed(cfg, log) -> Run:
    """Cheap checks first: the output, the cache, the model folder, then the texts (labels optional)."""
    from probscale_edge.pipeline.run import check_cache, check_inputs

    check_embed_config(cfg)
    out = Path(cfg.bundle.output) if cfg.bundle.output else default_embed_output(cfg)
    check_cache()
    run = Run(cfg, log, out, check_inputs(cfg, out, log))
    extra = texts_of(Path(cfg.data.distill_texts), cfg.data.text_column) if cfg.data.distill_texts else []
    run.tasks = [load_texts(ts, cfg.data, log) for ts in cfg.data.tasks]
    for t in run.tasks:
        log(f"task {t.name}: {len(t.train)} train / {len(t.eval)} eval texts"
            + (f", {t.num_labels} labels (retrieval scored against them)" if t.label_names else ", no labels"))
    if extra:
        run.distill_texts = distill_texts_of(extra, run.tasks, cfg.data.distill_texts, log)
    return run


def check_embed_config(cfg) -> None:
    """Options the embedding route does not take, refused before anything loads."""
    if cfg.recover.recover_mode not in ("distill", "none"):
        raise ProbscaleError(f"--recover-mode {cfg.recover.recover_mode} with --kind embed (there are no labels to "
                             "fine-tune on)", "use --recover-mode distill (the default) or none")
    if cfg.quantize.quant_mode != "dynamic":
        raise ProbscaleError("--quant-mode static with --kind embed", "use --quant-mode dynamic (the default)")
    if cfg.data.text_pair_column:
        raise ProbscaleError("--text-pair-column with --kind embed (an embedding is of one text)",
                             "leave --text-pair-column out; each text is embedded on its own")
    if cfg.bundle.tflite:
        raise ProbscaleError("--tflite with --kind embed is not supported yet", "leave --tflite out")


def load_texts(ts, d, log=None):
    """A task's texts: a built-in task, or a local file with a text column; the label column is optional
    (without it, retrieval against labels is not scored). Eval capped at ``--max-eval`` (default 2000)."""
    from probscale_edge.assets import BUILTIN_TASKS
    from probscale_edge.data import load_task, stratified_sample

    path = Path(ts.spec)
    if ts.spec not in BUILTIN_TASKS and path.is_file() and not _has_column(path, d.label_column):
        task = _unlabelled(path, ts.eval, d)
    else:
        task = load_task(ts.spec, ts.eval, d.text_column, d.label_column, None, max_train=d.max_train, log=log)
    cap = d.max_eval or DEFAULT_MAX_EVAL
    if len(task.eval) > cap:
        idx = stratified_sample(task.eval.labels, cap) if task.label_names else list(range(cap))
        task.eval = task.eval.subset(sorted(idx))
    return task


def _has_column(path: Path, column: str) -> bool:
    from probscale_edge.data import _read_table

    rows = _read_table(path)
    return bool(rows) and column in rows[0]


def _unlabelled(path: Path, eval_path, d):
    """A text-only file: texts from ``--text-column``, a fixed 80/20 split (seed 0) unless ``--eval`` is given."""
    import random

    from probscale_edge.data import MIN_EVAL_EXAMPLES, Split, TaskData, task_name

    texts = texts_of(path, d.text_column)
    if eval_path:
        train, ev = texts, texts_of(Path(eval_path), d.text_column)
    else:
        idx = list(range(len(texts)))
        random.Random(0).shuffle(idx)
        n_eval = max(MIN_EVAL_EXAMPLES, len(texts) // 5)
        ev, train = [texts[i] for i in sorted(idx[:n_eval])], [texts[i] for i in sorted(idx[n_eval:])]
    if len(ev) < MIN_EVAL_EXAMPLES or len(train) < 2:
        raise ProbscaleError(f"{path} has {len(texts)} texts: too few for a training and an eval split",
                             f"give at least {MIN_EVAL_EXAMPLES * 5} texts, or pass --eval FILE")
    if d.max_train and len(train) > d.max_train:
        train = train[:d.max_train]
    return TaskData(task_name(path), [], Split(train, [-1] * len(train)), Split(ev, [-1] * len(ev)),
                    source={"builtin": False, "train_file": str(path), "eval_file": str(eval_path or ""),
                            "labels": False})


def texts_of(path: Path, column: str) -> list:
    """The non-empty texts of a file's ``column``."""
    from probscale_edge.data import _read_table

    rows = _read_table(path)
    if not rows or column not in rows[0]:
        cols = ", ".join(sorted(map(str, rows[0]))) if rows else "none"
        raise ProbscaleError(f"{path} has no text column {column!r} (columns: {cols})",
                             "rename the column or pass --text-column NAME")
    return [str(r[column]) for r in rows if str(r.get(column) or "").strip()]


def distill_texts_of(texts: list, tasks, path, log=None) -> list:
    """``--distill-texts``: the file's texts, deduplicated, less every text some task has (eval texts would
    leak into training; training texts are there already), compared case- and space-insensitively."""
    def norm(x: str) -> str:
        return " ".join(x.lower().split())

    seen = {norm(x) for t in tasks for x in t.train.texts + t.eval.texts}
    kept = []
    for x in texts:
        k = norm(x)
        if k not in seen:
            seen.add(k)
            kept.append(x)
    if not kept:
        raise ProbscaleError(f"--distill-texts {path}: every text is a task's text or a repeat",
                             "give texts that are not the tasks' own")
    if log:
        log(f"distillation texts from {path}: {len(kept):,} of {len(texts):,} kept (repeats and the tasks' own "
            "texts dropped)")
    return kept


@contextmanager
def on_device(*models):
    """The models on this process's training device (its GPU where there is one, ``PROBSCALE_EDGE_DEVICE=cpu``
    to stay off it) for the block, back on the CPU after it (export, quantization and scoring run there)."""
    from probscale_edge import distributed as dist

    dev = dist.device()
    try:
        for m in models:
            m.to(dev)
        yield dev
    finally:
        for m in models:
            m.to("cpu")


# ----------------------------------------------------------------------------------------- teacher
def teacher_embed(run: Run) -> EmbedTeacher:
    """The model as published (pooling and normalization from its sentence-transformers files) and its
    embeddings of every training and eval text (cached by content key)."""
    from probscale_edge.modeling import length_limits, load_encoder, stored_dtype
    from probscale_edge.pipeline.store import content_key, model_fingerprint
    from probscale_edge.sentence import SentenceEncoder, embed_texts, read_sentence_config

    cfg = run.cfg
    fault("finetune")
    t0 = time.time()
    encoder, tok, run.src = load_encoder(cfg.source.model, allow_pickle=cfg.source.allow_pickle, log=run.log,
                                         allow_unused_weights=cfg.source.allow_unused_weights)
    sc = read_sentence_config(run.src, str(cfg.source.model), cfg.source.pooling)
    model = SentenceEncoder(encoder, sc)
    run.lengths = {**length_limits(encoder, tok, cfg.source.max_length), "stored_dtype": stored_dtype(run.src)}
    train = list(dict.fromkeys(t for task in run.tasks for t in task.train.texts))
    key = content_key(ROUTE_VERSION, "teacher", model_fingerprint(run.src), sc.to_dict(), run.max_length,
                      [t.fingerprint() for t in run.tasks], *([run.distill_texts] if run.distill_texts else []))
    store = run.store("teachers")
    found = store.get_dir(key) if cfg.use_cache else None
    if found is not None:
        z = np.load(found / "embeddings.npz")
        train_emb, eval_emb = z["train"], {t.name: z[f"eval/{t.name}"] for t in run.tasks}
        distill_emb = z["distill"] if run.distill_texts else None
        run.log(f"[cache] teacher embeddings {key}")
    else:
        run.log(f"teacher embeddings of {len(train):,} training texts, {len(run.distill_texts):,} distillation texts "
                f"and the eval texts ({sc.pooling} pooling{', normalized' if sc.normalize else ''}; {sc.source}) ...")
        with on_device(model):
            train_emb = embed_texts(model, tok, train, run.max_length)
            eval_emb = {t.name: embed_texts(model, tok, t.eval.texts, run.max_length) for t in run.tasks}
            distill_emb = embed_texts(model, tok, run.distill_texts, run.max_length) if run.distill_texts else None
        if cfg.use_cache:
            extra = {"distill": distill_emb} if run.distill_texts else {}
            store.put_dir(key, lambda d: np.savez(d / "embeddings.npz", train=train_emb, **extra,
                                                  **{f"eval/{k}": v for k, v in eval_emb.items()}))
    metrics = {t.name: task_metrics(eval_emb[t.name], eval_emb[t.name], t) for t in run.tasks}
    run.stages["teacher"] = {"sentence": sc.to_dict(), "parameters": model.param_counts(), "key": key,
                             "train_texts": len(train), "distill_texts": len(run.distill_texts), "metrics": metrics,
                             "cached": found is not None, "seconds": round(time.time() - t0, 1)}
    run.log("teacher recall@10 (same-label): " + _fmt(metrics, "recall@10"))
    return EmbedTeacher(model, tok, sc, train, train_emb, eval_emb, metrics, key, run.distill_texts, distill_emb)


def task_metrics(emb: np.ndarray, teacher_emb: np.ndarray, task) -> dict:
    """Fidelity to the teacher and, where the task has labels, same-label retrieval."""
    from probscale_edge.sentence import fidelity, retrieval_metrics

    out = fidelity(emb, teacher_emb)
    if task.label_names:
        out.update(retrieval_metrics(emb, task.eval.labels))
    return out


def _fmt(metrics: dict, key: str) -> str:
    return "  ".join(f"{k} {v[key]:.4f}" for k, v in metrics.items() if v.get(key) is not None)


def mean_of(metrics: dict, key: str):
    vals = [v[key] for v in metrics.values() if v.get(key) is not None]
    return float(np.mean(vals)) if vals else None


# ----------------------------------------------------------------------------------------- the cut
def prune_settings(cfg, model) -> dict:
    """The embedding side and the ratio, with this route's defaults where the config leaves them to the recipe."""
    hidden = model.adapter.word_embeddings(model.encoder).weight.shape[1]
    rank = cfg.prune.embedding_rank
    rank = max(8, int(round(hidden * DEFAULT_RANK_FRACTION))) if rank is None else (rank or None)
    trim = True if cfg.prune.trim_vocab is None else bool(cfg.prune.trim_vocab)
    sc = cfg.select
    compression = sc.compression if sc.compression else (None if sc.budget is not None or sc.spec else
                                                         DEFAULT_COMPRESSION)
    return {"trim_vocab": trim, "embedding_rank": rank, "compression": compression,
            "iterations": sc.prune_iterations or 1}


def width_spec(run: Run, t: EmbedTeacher, ps: dict):
    """Every layer kept; heads and FFN neurons cut by their Fisher importance for the embedding to the
    layer budget the ratio implies. Returns (SubnetworkSpec, layer budget)."""
    from probscale_edge.importance import allocate
    from probscale_edge.pipeline.stages import budget_for_compression
    from probscale_edge.prune import apply_spec
    from probscale_edge.select import layer_costs
    from probscale_edge.sentence import embedding_importance
    from probscale_edge.specs import SubnetworkSpec

    cfg = run.cfg
    if cfg.select.spec:
        return SubnetworkSpec.from_dict(cfg.select.spec), None
    if ps["compression"]:
        eff = cfg.replace(select=cfg.select.replace(compression=ps["compression"], budget=cfg.select.budget or 1 / 3),
                          prune=cfg.prune.replace(trim_vocab=ps["trim_vocab"], embedding_rank=ps["embedding_rank"]))
        texts = _TextsOnly(t.train_texts)
        budget = budget_for_compression(eff, t.model, t.tokenizer, texts, run.max_length)
    else:
        budget = cfg.select.budget
    costs = layer_costs(t.model)
    target = int(budget * sum(costs))
    rng = np.random.default_rng(cfg.seed)
    pick = np.sort(rng.choice(len(t.train_texts), min(IMPORTANCE_TEXTS, len(t.train_texts)), replace=False))
    texts, targets = [t.train_texts[i] for i in pick], t.train_emb[pick]
    with on_device(t.model):  # the search and the Fisher scores on this process's GPU where there is one
        layers = keep_layers(run, t, texts[:256], targets[:256], len(costs))
        model = t.model if len(layers) == len(costs) else apply_spec(t.model, SubnetworkSpec(layers))
        keep, start = None, sum(layer_costs(model))
        for r in range(1, ps["iterations"] + 1):
            step = int(round(start - (start - target) * r / ps["iterations"]))
            scores = embedding_importance(model, t.tokenizer, texts, targets, run.max_length, keep=keep, seed=cfg.seed)
            keep = allocate(model, list(range(len(layers))), scores, step)
            run.log(f"  width cut step {r}/{ps['iterations']}: layers hold {keep['params']:,} of {start:,} parameters")
        model.to("cpu")
    # the allocation indexes the kept layers in order; the spec names them by their source index
    src = {str(i): str(layer) for i, layer in enumerate(layers)}
    return SubnetworkSpec(layers, {src[k]: v for k, v in keep["heads"].items()},
                          {src[k]: v for k, v in keep["ffn"].items()}), budget


def keep_layers(run: Run, t: EmbedTeacher, texts, targets, n: int) -> list:
    """Every layer (the width cut), or with ``--layer-budget F`` the round(F x n) layers whose composed
    network (the teacher with the others dropped, no training) gives embeddings closest to the teacher's
    (mean cosine on ``texts``), as the classification route checks composed subnetworks with probes. Every
    subset of k is scored where there are at most ``MAX_LAYER_SUBSETS`` (MiniLM: 20 for 3 of 6); past that
    (mpnet, 3 of 12: 220) the layers are added one at a time, each the one whose addition scores best."""
    import itertools
    import math

    from probscale_edge.prune import apply_spec
    from probscale_edge.sentence import embed_texts, fidelity
    from probscale_edge.specs import SubnetworkSpec

    lb = run.cfg.select.layer_budget
    k = n if not lb else max(1, min(n, int(round(lb * n))))
    if k == n:
        return list(range(n))
    scored = []

    def score(subset) -> float:
        e = embed_texts(apply_spec(t.model, SubnetworkSpec(list(subset))), t.tokenizer, texts, run.max_length)
        scored.append((float(fidelity(e, targets, max_pairs=10)["mean_cosine"]), list(subset)))
        return scored[-1][0]

    exhaustive = math.comb(n, k) <= MAX_LAYER_SUBSETS
    if exhaustive:
        for subset in itertools.combinations(range(n), k):
            score(subset)
        best = max(scored)
    else:
        chosen = []
        while len(chosen) < k:
            chosen = max((sorted(chosen + [i]) for i in range(n) if i not in chosen), key=score)
        best = (next(c for c, s in reversed(scored) if s == chosen), chosen)
    how = f"of {len(scored)} subsets of {k}" if exhaustive else f"added one at a time: {len(scored)} subsets scored"
    run.stages["layers"] = {"kept": best[1], "composed_mean_cosine": best[0], "candidates": len(scored),
                            "search": "exhaustive" if exhaustive else "forward"}
    run.log(f"  layers kept: {best[1]} ({how}: composed mean cosine {best[0]:.4f}, no training)")
    return best[1]


@dataclass
class _TextsOnly:
    """What ``budget_for_compression`` reads of a task: its training texts."""

    texts: list

    @property
    def train(self):
        return self

    pairs = None


def cut(run: Run, t: EmbedTeacher, spec, ps: dict):
    """The width cut, the trimmed vocabulary and the factorized embedding; returns (model, tokenizer)."""
    from probscale_edge.prune import apply_spec

    model, tok = apply_spec(t.model, spec), t.tokenizer
    if ps["trim_vocab"]:
        from probscale_edge.vocab import trim_vocabulary

        tok, vrep = trim_vocabulary(model, t.tokenizer, t.train_texts, None, run.cfg.prune.vocab_min_count,
                                    run.max_length)
        run.stages["vocab"] = asdict(vrep)
        run.log(f"  vocabulary trimmed to the training texts' tokens: {vrep.original:,} -> {vrep.kept:,} "
                f"([UNK] rate {vrep.unk_rate_before:.2%} -> {vrep.unk_rate_after:.2%})")
    if ps["embedding_rank"]:
        from probscale_edge.embedding import dense_rows_note, factorize_embeddings, token_weights

        # weighted by how often the training texts use each token, as the classification route does: at rank 96
        # the untrained MiniLM keeps a mean cosine of 0.87 to the teacher this way, 0.64 with a plain SVD, 0.92
        # with rank 64 and 2,018 exact rows at the same size (benchmarks/embeddings/embedding_cap.py)
        vocab = model.adapter.word_embeddings(model.encoder).weight.shape[0]
        frep = factorize_embeddings(model, ps["embedding_rank"], token_weights(tok, t.train_texts, vocab, run.max_length),
                                    run.cfg.prune.embedding_dense_rows)
        run.stages["embedding"] = {**asdict(frep), "weighted_by": "token counts in the training texts"}
        run.log(f"  word embedding factorized to rank {frep.rank}: {frep.params_before:,} -> {frep.params_after:,} "
                f"parameters ({frep.energy_kept:.1%} of the energy, weighted by the training texts' token counts)"
                + dense_rows_note(frep))
    return model, tok


# ----------------------------------------------------------------------------------------- save / reload
def save_embedder(model, tok, folder: Path, extra: dict | None = None) -> Path:
    """A reloadable folder: the encoder (save_pretrained), the tokenizer, probscale.json (shapes, rank, pooling)."""
    import shutil
    import tempfile

    from probscale_edge.embedding import embedding_form

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        model.encoder.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        meta = {"format": 1, "kind": "embed", "sentence": model.sentence_config.to_dict(),
                "layer_shapes": model.layer_shapes(), "model_type": model.encoder.config.model_type,
                "embedding_rank": None, **embedding_form(model), **(extra or {})}
        (tmp / "probscale.json").write_text(json.dumps(meta, indent=2, default=str))
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def load_embedder(folder):
    """Reload a folder written by :func:`save_embedder` -> (SentenceEncoder, tokenizer, meta)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from probscale_edge.adapters import get_adapter
    from probscale_edge.modeling import apply_layer_shapes
    from probscale_edge.sentence import SentenceConfig, SentenceEncoder

    folder = Path(folder)
    if not (folder / "probscale.json").is_file():
        raise ProbscaleError(f"{folder} is not a probscale-edge embedding folder (no probscale.json)",
                             "pass a folder written by the embedding build")
    meta = json.loads((folder / "probscale.json").read_text())
    config = AutoConfig.from_pretrained(str(folder))
    encoder = AutoModel.from_config(config)
    adapter = get_adapter(config.model_type)
    adapter.drop_pooler(encoder)
    apply_layer_shapes(encoder, meta["layer_shapes"])
    from probscale_edge.embedding import install_from

    install_from(encoder, meta)
    state = load_file(str(folder / "model.safetensors"))
    prefix = getattr(encoder, "base_model_prefix", "")
    own = encoder.state_dict()
    fixed = {_own_name(k, own, prefix): v for k, v in state.items()}
    missing, unexpected = encoder.load_state_dict(fixed, strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise ProbscaleError(f"{folder} weights do not match its shapes (missing {missing[:3]}, unexpected "
                             f"{unexpected[:3]})", "rebuild the model folder")
    model = SentenceEncoder(encoder, SentenceConfig(**meta["sentence"])).eval()
    return model, AutoTokenizer.from_pretrained(str(folder)), meta


def _own_name(key: str, own: dict, prefix: str) -> str:
    """A saved weight's name in the model's state dict: without the base-model prefix, and LayerNorm's
    ``gamma``/``beta`` (the legacy names some transformers versions write back on save) as ``weight``/``bias``."""
    if key not in own and key.startswith(prefix + "."):
        key = key[len(prefix) + 1:]
    for old, new in ((".gamma", ".weight"), (".beta", ".bias")):
        if key not in own and key.endswith(old) and key[:-len(old)] + new in own:
            key = key[:-len(old)] + new
    return key


# ----------------------------------------------------------------------------------------- distillation
def distill(run: Run, t: EmbedTeacher, model, tok) -> dict:
    """Train the student towards the teacher's sentence embeddings (cosine + in-batch similarity structure;
    with ``--distill-hidden W`` also each layer's hidden states, relative squared error, on the texts that both
    models tokenized alike: ``hidden_loss_texts`` is their share), without dropout;
    the best of the per-epoch dev scores (mean cosine on held-out training texts) is kept. Runs on this
    process's GPU where there is one."""
    import torch

    from probscale_edge.progress import progress_bar

    cfg, fc, rc = run.cfg, run.cfg.finetune, run.cfg.recover
    texts, targets = _training_texts(run, t)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(texts))
    n_dev = min(500, max(32, len(texts) // 20))
    held, fit = order[:n_dev], order[n_dev:]
    epochs = rc.student_epochs or fc.epochs
    steps_per_epoch = int(np.ceil(len(fit) / fc.batch_size))
    total = max(1, int(round(steps_per_epoch * epochs)))
    opt, sched = _optimizer(model, rc.student_lr, fc.weight_decay, fc.warmup, total)
    hidden_w = float(rc.distill_hidden or 0.0)
    layer_map = run.stages.get("layers", {}).get("kept")  # student layer i <- teacher layer layer_map[i]
    torch.manual_seed(cfg.seed)
    best, best_state, step, t0 = -1.0, None, 0, time.time()
    hist = [{"step": 0, "dev_mean_cosine": _dev_cosine(model, tok, [texts[i] for i in held], targets[held], run.max_length)}]
    run.log(f"  before distillation: dev mean cosine {hist[0]['dev_mean_cosine']:.4f}")
    lengths = [len(x) for x in texts]
    on = [model] + ([t.model] if hidden_w > 0 else [])  # the teacher's hidden states are computed as we go
    to_teacher = teacher_ids(tok, t.tokenizer) if hidden_w > 0 else None
    aligned = seen = 0
    with on_device(*on) as dev, progress_bar(total, "distil embeddings") as bar:
        while step < total:
            model.eval()  # no dropout: the targets are the deterministic teacher's (a small student fits them better)
            for b in _length_batches(fit, lengths, fc.batch_size, rng):
                if step >= total:
                    break
                loss, cos, kl, n = _step(model, t, tok, [texts[i] for i in b], targets[b], run.max_length, hidden_w,
                                         layer_map, dev, to_teacher)
                aligned, seen = aligned + n, seen + len(b)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
                opt.step()
                sched.step()
                step += 1
                bar.update(1, loss=loss.item())
                if step % steps_per_epoch == 0 or step == total:
                    score = _dev_cosine(model, tok, [texts[i] for i in held], targets[held], run.max_length)
                    hist.append({"step": step, "dev_mean_cosine": score, "loss": float(loss), "cos": float(cos),
                                 "structure": float(kl)})
                    run.log(f"  step {step}/{total}: dev mean cosine {score:.4f}")
                    if score > best:
                        best, best_state = score, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.eval()
    if hidden_w > 0:
        run.log(f"  the hidden-state loss covered {aligned / max(1, seen):.1%} of the training texts (the rest were "
                "tokenized apart by the trimmed vocabulary)")
    return {"steps": step, "epochs": epochs, "lr": rc.student_lr, "batch_size": fc.batch_size, "texts": len(fit),
            "dev_texts": len(held), "structure_weight": STRUCTURE_WEIGHT, "hidden_weight": hidden_w,
            "best_dev_mean_cosine": best, "history": hist, "train_seconds": round(time.time() - t0, 1),
            "device": dev.type, "hidden_loss_texts": aligned / seen if hidden_w > 0 and seen else None}


def _training_texts(run: Run, t: EmbedTeacher):
    """The training texts (and ``--distill-texts``) and the teacher's embeddings of them, plus ``--augment N``
    perturbed copies of each training text (word masks, neighbour swaps and spans as for classification:
    probscale_edge.augment)."""
    n_aug = int(run.cfg.recover.augment or 0)
    base, base_emb = t.train_texts, t.train_emb
    if t.distill_texts:
        base, base_emb = t.train_texts + t.distill_texts, np.concatenate([t.train_emb, t.distill_emb])
    if n_aug <= 0:
        return base, base_emb
    from probscale_edge.augment import AugmentConfig, augment_texts, embedding_of_words, task_vocabulary, word_neighbours
    from probscale_edge.sentence import embed_texts

    ac = AugmentConfig(copies=n_aug, seed=run.cfg.seed)
    neighbours = word_neighbours(task_vocabulary(t.train_texts, ac.min_count), embedding_of_words(t.model, t.tokenizer),
                                 ac.neighbours)
    extra, _, _ = augment_texts(t.train_texts, None, ac, neighbours, getattr(t.tokenizer, "mask_token", None))
    run.log(f"  augmentation: {len(extra):,} perturbed texts embedded by the teacher ...")
    with on_device(t.model):
        emb = embed_texts(t.model, t.tokenizer, extra, run.max_length)
    run.stages["augment"] = {"copies": n_aug, "added": len(extra)}
    return base + extra, np.concatenate([base_emb, emb])


def _optimizer(model, lr, weight_decay, warmup, total):
    import torch

    emb = model.adapter.word_embeddings(model.encoder)
    if not hasattr(emb, "proj"):  # a dense table stays frozen (as in recovery); a factorized one is trained
        emb.weight.requires_grad = False
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
                             {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], lr=lr)
    warm = int(warmup * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, warm) if s < warm else max(0.0, (total - s) / max(1, total - warm)))
    return opt, sched


def _length_batches(idx, lengths, batch_size, rng):
    """Shuffled batches of similar lengths (chunks of 50 batches sorted by length, then shuffled)."""
    idx = list(rng.permutation(idx))
    out = []
    for s in range(0, len(idx), batch_size * 50):
        part = sorted(idx[s:s + batch_size * 50], key=lambda i: lengths[i])
        out += [part[j:j + batch_size] for j in range(0, len(part), batch_size)]
    return [np.asarray(out[i]) for i in rng.permutation(len(out))]


def _step(model, t: EmbedTeacher, tok, texts, targets, max_length, hidden_w, layer_map=None, dev="cpu",
          to_teacher=None):
    """One batch's loss -> (loss, cosine part, structure part, texts the hidden-state loss covered)."""
    import torch

    from probscale_edge.modeling import tokenize
    from probscale_edge.sentence import distill_loss

    enc = {k: v.to(dev) for k, v in tokenize(tok, texts, None, max_length).items()}
    args = (enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))
    targets = torch.as_tensor(targets).to(dev)
    if hidden_w <= 0:
        loss, cos, kl = distill_loss(model(*args), targets, STRUCTURE_WEIGHT)
        return loss, cos, kl, 0
    tenc = {k: v.to(dev) for k, v in tokenize(t.tokenizer, texts, None, max_length).items()}
    with torch.no_grad():
        tstates = t.model.hidden_states(tenc["input_ids"], tenc["attention_mask"], tenc.get("token_type_ids"))
    with model.capture_states() as states:
        tokens = model.token_embeddings(*args)
    loss, cos, kl = distill_loss(model.embed_from_tokens(tokens, enc["attention_mask"]), targets, STRUCTURE_WEIGHT)
    rows, width = aligned_rows(enc, tenc, to_teacher)
    if rows.any():  # hidden states are compared token by token, so only on the texts both tokenized alike
        w = (tenc["attention_mask"][:, :width] * rows[:, None]).unsqueeze(-1).float()
        pairs = [(states[i + 1][:, :width], tstates[j + 1][:, :width])
                 for i, j in enumerate(layer_map or range(len(states) - 1))]
        hl = sum(((s.float() - ts.float()) ** 2 * w).sum() / ((ts.float() ** 2) * w).sum().clamp(min=1e-6)
                 for s, ts in pairs) / len(pairs)
        loss = loss + hidden_w * hl
    return loss, cos, kl, int(rows.sum())


def teacher_ids(tok, teacher_tok):
    """A tensor that maps each student token id to the teacher's id of the same piece (-1 where it has none)."""
    import torch

    theirs, ours = teacher_tok.get_vocab(), tok.get_vocab()
    out = torch.full((max(ours.values()) + 1,), -1, dtype=torch.long)
    for piece, i in ours.items():
        out[i] = theirs.get(piece, -1)
    return out


def aligned_rows(enc, tenc, to_teacher):
    """Which texts of a batch the student and the teacher tokenized alike -> (bool [B], the narrower width).
    A trimmed vocabulary splits the words its texts never had into more (or other) pieces, and then the
    positions of the two models' hidden states no longer match."""
    width = min(enc["input_ids"].shape[1], tenc["input_ids"].shape[1])
    sm, tm = enc["attention_mask"], tenc["attention_mask"]
    ids = to_teacher.to(enc["input_ids"].device)[enc["input_ids"][:, :width]]
    same = ((ids == tenc["input_ids"][:, :width]) | (tm[:, :width] == 0)).all(1)
    return same & (sm.sum(1) == tm.sum(1)), width


def _dev_cosine(model, tok, texts, targets, max_length) -> float:
    from probscale_edge.sentence import embed_texts, fidelity

    return float(fidelity(embed_texts(model, tok, texts, max_length), targets, max_pairs=1000)["mean_cosine"])


# ----------------------------------------------------------------------------------------- the student stage
def student_embed(run: Run, t: EmbedTeacher, work: Path) -> EmbedStudent:
    """Cut, check the reload, distil, score; the result is one cache entry (content key), reused with --resume."""
    from probscale_edge.pipeline.store import content_key
    from probscale_edge.sentence import embed_texts
    from probscale_edge.specs import SubnetworkSpec

    cfg = run.cfg
    ps = prune_settings(cfg, t.model)
    key = content_key(ROUTE_VERSION, "student", t.key, cfg.select.to_dict(), cfg.prune.to_dict(), cfg.recover.to_dict(),
                      cfg.finetune.to_dict(), ps, run.max_length, cfg.seed, STRUCTURE_WEIGHT, IMPORTANCE_TEXTS,
                      MAX_LAYER_SUBSETS)
    store = run.store("stages")
    found = store.get_dir(key) if cfg.resume else None
    if found is not None:
        run.log("[resume] pruned and distilled embedding student")
        model, tok, meta = load_embedder(found)
        run.stages.update(meta["stages"])
        spec = SubnetworkSpec.from_dict(meta["spec"])
    else:
        fault("select")
        t0 = time.time()
        depth = "every layer kept" if not cfg.select.layer_budget else f"layers by --layer-budget {cfg.select.layer_budget:g}"
        run.log(f"width cut ({depth}): heads and FFN neurons by their Fisher importance for the embedding "
                f"({ps['compression'] or '-'}x total parameters; rank {ps['embedding_rank']}, trimmed vocabulary "
                f"{ps['trim_vocab']}) ...")
        spec, budget = width_spec(run, t, ps)
        fault("prune")
        model, tok = cut(run, t, spec, ps)
        diff = _reload_diff(run, t, model, tok, work / "pruned")
        run.stages["prune"] = {"reload_max_abs": diff, "parameters": model.param_counts(), "settings": ps,
                               "layer_budget": budget, "layer_shapes": model.layer_shapes(),
                               "seconds": round(time.time() - t0, 1)}
        fault("recover")
        run.log(f"distilling the teacher's sentence embeddings ({model.param_counts()['total']:,} parameters) ...")
        run.stages["recover"] = distill(run, t, model, tok) if cfg.recover.recover_mode == "distill" else {"mode": "none"}
        fault("checkpoint")
        stages = {k: run.stages[k] for k in ("prune", "recover", "vocab", "embedding", "augment") if k in run.stages}
        store.put_dir(key, lambda d: save_embedder(model, tok, d / "model", {"spec": spec.to_dict(),
                                                                            "stages": stages}) and None)
    run.stages["student"] = {"key": key, "cache": str(store.path(key) / "model"), "resumed": found is not None}
    metrics = {tk.name: task_metrics(embed_texts(model, tok, tk.eval.texts, run.max_length), t.eval_emb[tk.name], tk)
               for tk in run.tasks}
    run.log("student (PyTorch fp32) mean cosine: " + _fmt(metrics, "mean_cosine"))
    return EmbedStudent(model, tok, spec, model.param_counts(), metrics)


def _reload_diff(run: Run, t: EmbedTeacher, model, tok, folder: Path) -> float:
    from probscale_edge.sentence import embed_texts

    save_embedder(model, tok, folder)
    reloaded, rtok, _ = load_embedder(folder)
    sample = run.tasks[0].eval.texts[:64]
    diff = float(np.abs(embed_texts(model, tok, sample, run.max_length)
                        - embed_texts(reloaded, rtok, sample, run.max_length)).max())
    run.log(f"[{'PASS' if diff <= 1e-5 else 'FAIL'}] pruned model saves and reloads: max |Δembedding| {diff:.1e}")
    if diff > 1e-5:
        raise ProbscaleError("the pruned embedding model does not reload to the same outputs", "report this model family")
    return diff


# ----------------------------------------------------------------------------------------- export, int8
def embedding_section(model) -> dict:
    """The manifest's ``embedding``: how the runtime turns the graph's token embeddings into one vector."""
    sc = model.sentence_config
    width = model.adapter.word_embeddings(model.encoder).embedding_dim
    return {"dimension": int(width), "pooling": sc.pooling, "normalize": bool(sc.normalize),
            "output": "token_embeddings", "source": sc.source}


def export_onnx_embed(model, tok, path: Path, opset: int = 17, max_length: int = 128) -> list:
    """The encoder as ONNX: (input_ids, attention_mask[, token_type_ids]) -> token_embeddings [batch, tokens,
    hidden], dynamic batch and sequence axes; eager attention (as the classification export). Returns the inputs."""
    import os

    import torch

    from probscale_edge.converters.onnx_export import eager_attention
    from probscale_edge.modeling import tokenize

    class Tokens(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            return self.m.token_embeddings(input_ids, attention_mask, token_type_ids)

    names = model.adapter.input_names()
    sample = tokenize(tok, ["probscale edge export sample", "a second, longer sample sentence for shapes"], None,
                      max_length)
    args = tuple(sample[n] if n in sample else torch.zeros_like(sample["input_ids"]) for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["token_embeddings"] = {0: "batch", 1: "sequence"}
    tmp = path.with_suffix(".onnx.part")
    try:
        with torch.no_grad(), eager_attention(model):
            torch.onnx.export(Tokens(model).eval(), args, str(tmp), input_names=names, output_names=["token_embeddings"],
                              dynamic_axes=axes, opset_version=opset, dynamo=False, do_constant_folding=True)
        os.replace(tmp, path)
    except Exception as e:  # noqa: BLE001
        tmp.unlink(missing_ok=True)
        raise ProbscaleError(f"ONNX export failed ({type(e).__name__}: {str(e).splitlines()[0][:160]})",
                             "report the model family; try --opset 18") from e
    return names


def runtime_predictor(model_path: Path, tok_dir: Path, section: dict, max_length: int, pad_id: int, threads=None):
    from probscale_edge.runtime.predictor import Predictor

    return Predictor.from_files(model_path, tok_dir / "tokenizer.json", [], max_length, pad_id, threads=threads,
                                embedding=section)


def runtime_metrics(run: Run, t: EmbedTeacher, predictor) -> tuple[dict, dict]:
    """Per-task metrics of a model run through the runtime's own code path; also its embeddings."""
    embs = {tk.name: predictor.embed(tk.eval.texts) for tk in run.tasks}
    return {tk.name: task_metrics(embs[tk.name], t.eval_emb[tk.name], tk) for tk in run.tasks}, embs


def gate_score(metrics: dict) -> float:
    """What the int8 gate compares: mean recall@10 over the labelled tasks (mean cosine without labels)."""
    r = mean_of(metrics, "recall@10")
    return r if r is not None else mean_of(metrics, "mean_cosine")


def export_and_quantize(run: Run, t: EmbedTeacher, s: EmbedStudent, work: Path) -> dict:
    """fp32 ONNX (parity with PyTorch through the runtime), then int8 kept only within the gate
    (``--max-accuracy-drop`` in points of mean recall@10)."""
    from probscale_edge.converters.quantize import quantize_with_gate
    from probscale_edge.sentence import embed_texts

    cfg, t0 = run.cfg, time.time()
    fault("export")
    fp32, tok_dir = work / "model_fp32.onnx", work / "runtime_tokenizer"
    inputs = export_onnx_embed(s.model, s.tokenizer, fp32, cfg.export.opset, run.max_length)
    s.tokenizer.save_pretrained(str(tok_dir))
    section, pad = embedding_section(s.model), int(s.tokenizer.pad_token_id or 0)
    p32 = runtime_predictor(fp32, tok_dir, section, run.max_length, pad)
    m32, e32 = runtime_metrics(run, t, p32)
    torch_emb = {tk.name: embed_texts(s.model, s.tokenizer, tk.eval.texts, run.max_length) for tk in run.tasks}
    parity = max(float(np.abs(e32[k] - torch_emb[k]).max()) for k in e32)
    ok = parity <= cfg.export.parity_tolerance
    run.log(f"[{'PASS' if ok else 'FAIL'}] ONNX fp32 (runtime, numpy pooling) vs PyTorch: max |Δembedding| "
            f"{parity:.2e} over {sum(len(v) for v in e32.values()):,} eval texts")
    if not ok:
        raise ProbscaleError(f"ONNX export does not match PyTorch (max |Δembedding| {parity:.2e})",
                             "try --opset 18, or report the model family")
    run.stages["export"] = {"opset": cfg.export.opset, "inputs": inputs, "outputs": ["token_embeddings"],
                            "parity_max_abs": parity, "parity_pass": ok, "metrics": m32, "bytes": fp32.stat().st_size}
    fault("quantize")
    q = quantize_with_gate(fp32, work / "model.onnx", cfg.quantize,
                           lambda path: gate_score(runtime_metrics(run, t, runtime_predictor(
                               path, tok_dir, section, run.max_length, pad))[0]),
                           gate_score(m32), log=run.log, target=cfg.target)
    q["gate_metric"] = "mean recall@10 over the labelled tasks (points)" if mean_of(m32, "recall@10") is not None \
        else "mean cosine to the teacher (points)"
    p8 = runtime_predictor(work / "model.onnx", tok_dir, section, run.max_length, pad)
    m8, _ = runtime_metrics(run, t, p8)
    q["seconds"] = round(time.time() - t0, 1)
    run.stages["quantize"] = q
    return {"fp32": fp32, "tokenizer": tok_dir, "section": section, "metrics_fp32": m32, "metrics": m8,
            "inputs": inputs, "gate": q, "parity": parity}


# ----------------------------------------------------------------------------------------- bundle
def mobile_embed(run: Run, t: EmbedTeacher, x: dict, work: Path, pad: int) -> dict | None:
    """The ORT mobile format for ARM / Android targets, checked to give the ONNX model's embeddings."""
    if run.cfg.target not in ("arm64", "android"):
        return None
    from probscale_edge.converters.mobile import to_ort

    t0 = time.time()
    mob = to_ort(work / "model.onnx", work / "mobile", target_platform="arm")
    texts = run.tasks[0].eval.texts[:256]
    a = runtime_predictor(mob["ort"], x["tokenizer"], x["section"], run.max_length, pad).embed(texts)
    b = runtime_predictor(work / "model.onnx", x["tokenizer"], x["section"], run.max_length, pad).embed(texts)
    diff = float(np.abs(a - b).max())
    rep = {"file": "model.ort", "required_operators": "required_operators.config", "bytes": mob["ort"].stat().st_size,
           "max_abs_vs_onnx": diff, "matches_onnx": diff <= 1e-5, "seconds": round(time.time() - t0, 1)}
    run.log(f"[{'PASS' if rep['matches_onnx'] else 'FAIL'}] ORT mobile format (.ort): max |Δembedding| vs ONNX {diff:.1e}")
    run.stages["mobile"] = rep
    return rep


def stage_embed_files(run: Run, s: EmbedStudent, work: Path) -> tuple[Path, str]:
    import shutil

    from probscale_edge.pipeline.manifest import write_wordpiece_vocab

    stage, target = work / "bundle", run.cfg.target
    stage.mkdir()
    model_file = "model.ort" if target == "android" else "model.onnx"
    if target != "android":
        shutil.copyfile(work / "model.onnx", stage / "model.onnx")
    if "mobile" in run.stages:
        shutil.copyfile(work / "mobile" / "model.ort", stage / "model.ort")
        shutil.copyfile(work / "mobile" / "required_operators.config", stage / "required_operators.config")
    shutil.copyfile(work / "runtime_tokenizer" / "tokenizer.json", stage / "tokenizer.json")
    write_wordpiece_vocab(stage / "tokenizer.json", stage / "vocab.txt")
    return stage, model_file


def embed_manifest(run: Run, t: EmbedTeacher, s: EmbedStudent, x: dict, stage: Path, model_file: str) -> dict:
    """The manifest: ``kind`` embed, the ``embedding`` section, every metric per task and averaged. The keys
    the classification summary reads (validation.accuracy, ...) hold mean recall@10 (``accuracy_is``)."""
    from probscale_edge.pipeline.manifest import tool_versions

    cfg, st, q = run.cfg, run.stages, x["gate"]
    full, mine = t.model.param_counts(), s.parameters
    tj = json.loads((stage / "tokenizer.json").read_text(encoding="utf-8"))
    score = {"teacher": t.metrics, "student_torch_fp32": s.metrics, "student_onnx_fp32": x["metrics_fp32"],
             "bundle": x["metrics"]}
    means = {name: {k: mean_of(m, k) for k in ("mean_cosine", "spearman", "recall@10", "ndcg@10", "knn_accuracy")}
             for name, m in score.items()}
    retention = {tk.name: (x["metrics"][tk.name]["recall@10"] / t.metrics[tk.name]["recall@10"])
                 for tk in run.tasks if tk.label_names}
    return {
        "created_by": "probscale-edge", "created_unix": int(time.time()), "kind": "embed", "labels": [],
        "source_model": {"name": str(cfg.source.model), "path": str(run.src),
                         "model_type": t.model.encoder.config.model_type, "sentence": t.sentence.to_dict(),
                         "max_length": {k: v for k, v in (run.lengths or {}).items() if k != "stored_dtype"},
                         "stored_dtype": (run.lengths or {}).get("stored_dtype")},
        "task": {"name": "embed: " + "+".join(tk.name for tk in run.tasks), "tasks": [tk.summary() for tk in run.tasks]},
        "target": cfg.target,
        "embedding": x["section"],
        "model": {"file": model_file, "format": "ort" if model_file.endswith(".ort") else "onnx",
                  "precision": q["precision"], "inputs": x["inputs"], "outputs": ["token_embeddings"],
                  "pooling": t.sentence.pooling, "opset": cfg.export.opset},
        "tokenizer": {"file": "tokenizer.json", "vocab_file": "vocab.txt" if (stage / "vocab.txt").exists() else None,
                      "max_length": run.max_length, "pad_id": int(s.tokenizer.pad_token_id or 0),
                      "do_lower_case": bool((tj.get("normalizer") or {}).get("lowercase", False)),
                      "class": type(s.tokenizer).__name__},
        "parameters": {"original": full, "pruned": mine, "ratio_total": full["total"] / mine["total"],
                       "ratio_non_embedding": full["non_embedding"] / mine["non_embedding"]},
        "vocabulary": st.get("vocab"),
        "subnetwork": {"spec": s.spec.to_dict(), "layer_shapes": st["prune"]["layer_shapes"], "strategy": "width",
                       "budget": st["prune"].get("layer_budget")},
        "metrics": {"per_task": score, "mean": means, "recall@10_retention": retention,
                    "mean_recall@10_retention": float(np.mean(list(retention.values()))) if retention else None},
        "validation": {
            "eval_examples": sum(len(tk.eval) for tk in run.tasks),
            "accuracy_is": "mean recall@10 of same-label neighbours over the labelled tasks",
            "accuracy": {"full_finetuned_torch_fp32": means["teacher"]["recall@10"],
                         "pruned_torch_fp32": means["student_torch_fp32"]["recall@10"],
                         "pruned_onnx_fp32": means["student_onnx_fp32"]["recall@10"],
                         "bundle": means["bundle"]["recall@10"]},
            "reload_max_abs": st["prune"]["reload_max_abs"], "onnx_parity_max_abs": x["parity"],
            "onnx_parity_pass": st["export"]["parity_pass"]},
        "quantization": q,
        "mobile": st.get("mobile"),
        "sizes": {"full_fp32_weights_bytes": sum(p.numel() * p.element_size() for p in t.model.parameters()),
                  "pruned_onnx_fp32_bytes": x["fp32"].stat().st_size,
                  "bundle_model_bytes": (stage / model_file).stat().st_size},
        "stages": {k: v for k, v in st.items() if k not in ("quantize", "mobile", "vocab")},
        "build_config": cfg.to_dict(), "tool_versions": tool_versions(), "build_seconds": None,
    }


def write_embed_bundle(run: Run, t: EmbedTeacher, s: EmbedStudent, x: dict, work: Path, staging) -> dict:
    from probscale_edge.pipeline.manifest import torch_latency_ms
    from probscale_edge.runtime.bench import DEFAULT_TEXT, BenchConfig, bench_bundle
    from probscale_edge.runtime.bundle import write_manifest

    fault("bundle")
    stage, model_file = stage_embed_files(run, s, work)
    m = write_manifest(stage, embed_manifest(run, t, s, x, stage, model_file))
    runs = run.cfg.bundle.latency_runs
    run.log("measuring latency (batch 1) ...")
    full_ms = torch_latency_ms(t.model, t.tokenizer, DEFAULT_TEXT, runs=runs, max_length=run.max_length)
    b = bench_bundle(stage, BenchConfig(warmup_runs=5, num_runs=runs), public_key=False)
    m["latency"] = {"text": DEFAULT_TEXT, "full_torch_fp32_p50_ms": full_ms, "bundle_p50_ms": b["latency"]["p50_ms"],
                    "threads": "default", "note": "measured on the build machine, batch 1; side-by-side peers: "
                    "benchmarks/embeddings/run.py"}
    m["build_seconds"] = round(time.time() - run.t_start, 1)
    m = write_manifest(stage, m)
    staging.publish(stage)
    run.log(f"bundle written to {run.out}")
    m["bundle_path"] = str(run.out)
    return m


def print_embed_summary(m: dict, log) -> None:
    """One line per task: recall@10 teacher -> bundle (retention), cosine, Spearman, k-NN."""
    pt, ret = m["metrics"]["per_task"], m["metrics"]["recall@10_retention"]
    for name, b in pt["bundle"].items():
        tm = pt["teacher"][name]
        log(f"  {name}: mean cosine {b['mean_cosine']:.4f}, Spearman {b['spearman']:.4f}"
            + (f", recall@10 {tm['recall@10']:.4f} -> {b['recall@10']:.4f} ({ret[name]:.1%}), nDCG@10 "
               f"{b['ndcg@10']:.4f}, k-NN {tm['knn_accuracy']:.4f} -> {b['knn_accuracy']:.4f}" if name in ret else ""))
    p = m["parameters"]
    log(f"embedding bundle: {p['ratio_total']:.2f}x fewer parameters ({p['pruned']['total']:,}), mean recall@10 "
        f"retention {m['metrics']['mean_recall@10_retention'] or float('nan'):.1%}, mean cosine "
        f"{m['metrics']['mean']['bundle']['mean_cosine']:.4f}, {m['model']['precision']} "
        f"({m['quantization'].get('chosen')}), {m['sizes']['bundle_model_bytes']:,} bytes")


def build_embed(cfg, log) -> dict:
    """The embedding route end to end; returns the manifest (see the module docstring)."""
    from probscale_edge.pipeline.store import Staging

    run = prepare_embed(cfg, log)
    with Staging(run.out, cfg.bundle.force) as staging:
        t = teacher_embed(run)
        s = student_embed(run, t, staging.work)
        x = export_and_quantize(run, t, s, staging.work)
        mobile_embed(run, t, x, staging.work, int(s.tokenizer.pad_token_id or 0))
        m = write_embed_bundle(run, t, s, x, staging.work, staging)
    print_embed_summary(m, log)
    return m
