"""The ladder: one progressive prune-and-distill run down a ladder of sizes, each rung scored on the dev split.

The student starts as the teacher with the recipe's embedding side (trimmed vocabulary, factorized embedding; at
deep rungs the factorization's rank is lowered so that the layers keep a share of the rung, :func:`rung_rank`).
At every rung (``--ladder``, times fewer total parameters than the full model) it is cut to the rung's size
and distilled from the teacher. Two cuts compete at each rung, both from the same student and both given the
same short distillation: width only (heads and FFN neurons, Fisher-ranked, re-scored, with a per-layer
floor) and the probes' choice, which drops the kept layer that adds the least task information (its probe
gain) and cuts the rest in width. Under a latency budget a rung may keep no more layers than :func:`depth_cap`
allows; its candidates are then the drop to that cap and one layer past it. The better one on the dev split goes
on. Each rung is snapshotted, exported to int8 ONNX and measured (bytes, p50 at batch 1 and 1 thread). The walk
stops at the first rung below ``--min-retention`` (or out of ``--time-budget``); the smallest rung that meets every
constraint ships.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from probscale_edge.errors import ProbscaleError
from probscale_edge.pipeline.run import Run
from probscale_edge.pipeline.stages import Teacher, accuracy
from probscale_edge.specs import ProbeReport, Selection, SubnetworkSpec

PROBE_SHARE = 0.2  # the share of a rung's epochs both candidates get before the better one goes on
# the word embedding is factorized at the first rung whose width cut would keep less than this share of the
# layers' parameters
EMBED_SWITCH = 0.6
# that rung's epochs, times the others' (2 while the factorization was a plain SVD keeping 57% of the energy;
# weighted by token use it keeps 77%, and at 2 the default build took 24 minutes on 2 cores: benchmarks/ladder)
EMBED_EPOCHS = 1
# a candidate more than this share above its rung's parameter target did not reach the rung
REACH_TOLERANCE = 0.01
# where the recipe picks the embedding rank, a deep rung lowers it (refits the factorized embedding) in steps of
# RANK_STEP, not under MIN_RANK, until the layers keep the goal's ``layer_share`` of the rung (default 0.45).
# all-MiniLM-L6-v2 at 10x with rank 128: rotten_tomatoes' and reuters_r8's embeddings took 97% and 85% of the
# rung, and neither walk reached 10x; trec6's and sms_spam's took 62% and 56% and reached it; rotten_tomatoes at
# rank 64 (53%) kept 96.8% at 10.00x against 93.7% at 9.2-9.5x (benchmarks/compression,
# minilm-ladder-vs-textpruner-*.json)
RANK_STEP, MIN_RANK = 16, 32


@dataclass
class Lineage:
    """Which units of the original model the student's units are: layer i of the student is original layer
    ``layers[i]``; its heads and FFN neurons are ``heads[i]`` / ``ffn[i]`` of that layer."""

    layers: list
    heads: list
    ffn: list

    @classmethod
    def of(cls, model) -> "Lineage":
        shapes = model.layer_shapes()
        return cls(list(range(len(shapes))), [list(range(s["heads"])) for s in shapes],
                   [list(range(s["ffn"])) for s in shapes])

    def cut(self, spec: SubnetworkSpec) -> "Lineage":
        """The lineage after cutting ``spec`` (indices relative to the current student)."""
        out = Lineage([], [], [])
        for k in spec.keep_layers:
            out.layers.append(self.layers[k])
            out.heads.append([self.heads[k][h] for h in spec.heads.get(str(k), range(len(self.heads[k])))])
            out.ffn.append([self.ffn[k][j] for j in spec.ffn.get(str(k), range(len(self.ffn[k])))])
        return out

    def spec(self, full_shapes) -> SubnetworkSpec:
        """The student as a spec of the original model."""
        heads = {str(o): h for o, h in zip(self.layers, self.heads) if len(h) < full_shapes[o]["heads"]}
        ffn = {str(o): f for o, f in zip(self.layers, self.ffn) if len(f) < full_shapes[o]["ffn"]}
        return SubnetworkSpec(list(self.layers), heads, ffn)


@dataclass
class Rung:
    model: object
    lineage: Lineage
    record: dict


@dataclass
class Walk:
    """The ladder's outcome: every rung's record, the chosen rung (None: none met the constraints)."""

    rungs: list = field(default_factory=list)
    chosen: int | None = None
    stopped: str = ""
    full: dict = field(default_factory=dict)
    uncut_int8: dict | None = None
    best_effort: bool = False
    start: dict = field(default_factory=dict)  # where the probes started the walk, and why
    abandoned: list = field(default_factory=list)  # the rungs of a probes' start that missed the floor


@dataclass
class DistillData:
    """What every rung distils on: the (augmented) training rows, the teacher's logits for them, and the
    teacher's hidden states for them computed once (None: the teacher runs at every step)."""

    split: object
    logits: object
    states: object = None


def _train(run: Run, t: Teacher, model, tok, data: DistillData, epochs: float, lineage: Lineage) -> dict:
    """Distil ``model`` in place for ``epochs`` on the (augmented) training rows, hidden states included."""
    from probscale_edge.recover import HiddenDistill, TrainSettings, train_classifier

    cfg = run.cfg
    ts = replace(TrainSettings.of(cfg.finetune, cfg.recover, run.max_length, cfg.seed), epochs=epochs,
                 student_epochs=None, dev_fraction=0.0, checkpoint_every=0)
    hidden = HiddenDistill(t.model, t.tokenizer, lineage.layers, data.states) if ts.hidden_weight > 0 else None
    return train_classifier(model, tok, data.split, ts, teacher_logits=data.logits, lr=ts.student_lr,
                            progress_desc="ladder (distill)", hidden_teacher=hidden)


def _accuracy_on(run: Run, split, model, tok) -> float:
    from probscale_edge.modeling import predict_logits

    return accuracy(predict_logits(model, tok, split.texts, split.pairs, max_length=run.max_length), split.labels)


def _dev_accuracy(run: Run, model, tok) -> float:
    return _accuracy_on(run, run.dev, model, tok)


def _layer_params(model) -> int:
    from probscale_edge.select import layer_costs

    return sum(layer_costs(model))


def _width_cut(run: Run, model, tok, target: int, layer_ids=None) -> SubnetworkSpec:
    """Heads and neurons of ``layer_ids`` (default: all) to ``target`` layer parameters, re-scored in steps,
    no layer under the floor (a share of the average kept width)."""
    from probscale_edge.importance import ImportanceConfig, iterative_allocate

    shapes = model.layer_shapes()
    keep = list(range(len(shapes))) if layer_ids is None else list(layer_ids)
    icfg = ImportanceConfig(max_length=run.max_length, seed=run.cfg.seed)
    from probscale_edge.select import layer_costs

    costs = layer_costs(model)
    total = sum(costs[i] for i in keep)
    share = min(1.0, target / max(1, total))
    floor = run.cfg.goal.layer_floor * share
    min_heads = max(1, int(floor * max(s["heads"] for s in shapes)))
    min_neurons = max(16, int(floor * max(s["ffn"] for s in shapes)))
    al = iterative_allocate(model, tok, [run.task], [1.0], keep, target, run.cfg.select.prune_iterations, cfg=icfg,
                            min_heads=min_heads, min_neurons=min_neurons)
    return SubnetworkSpec(keep, al["heads"], al["ffn"])


def _weakest_layers(report: ProbeReport, lineage: Lineage, k: int) -> list[int]:
    """The ``k`` student layers whose original layers add the least task information (their probe gains)."""
    from probscale_edge.select import gains

    g = gains(report.weighted)
    return sorted(range(len(lineage.layers)), key=lambda i: (g[lineage.layers[i]], -lineage.layers[i]))[:k]


def _layer_target(model, target_total: float) -> int:
    """Layer parameters that leave ``model`` at ``target_total`` parameters (embedding and head as they are)."""
    layers = _layer_params(model)
    return int(target_total - (model.param_counts()["total"] - layers))


def _candidates(run: Run, t: Teacher, report: ProbeReport, cur: Rung, tok, target_total: float,
                cap: int | None = None) -> list:
    """[(action, model, lineage)]: width only and (two or more layers kept) the probes' layer drop; under a depth
    cap (:func:`depth_cap`), the drops that reach the cap and one layer past it instead."""
    from probscale_edge.prune import apply_spec

    out = []
    target = _layer_target(cur.model, target_total)
    if target <= 0:
        return out
    n = len(cur.lineage.layers)
    for k in ((0, 1) if cap is None else (n - cap, n - cap + 1)):
        if k >= n:
            continue  # one layer stays
        weak = _weakest_layers(report, cur.lineage, k)
        spec = _width_cut(run, cur.model, tok, target, [i for i in range(n) if i not in weak] if k else None)
        names = ", ".join(str(cur.lineage.layers[i]) for i in sorted(weak))
        action = "width" if not k else f"drop layer{'s' if k > 1 else ''} {names}"
        out.append((action, apply_spec(cur.model, spec), cur.lineage.cut(spec)))
    return out


def depth_cap(run: Run, cur: Rung, table, full_total: int, ratios_left) -> int | None:
    """With a latency budget: the most layers the student keeps at this rung (None: no cap). The budget sets the
    deepest student that can meet it at the ladder's last rung (``table``'s prediction for that rung's layer
    parameters, spent in the student's current mix of heads and neurons). A layer never grows back, so the walk
    drops layers while the ones it keeps can still hold the last rung's layer parameters: at this rung's width,
    ``deepest`` layers must hold them. That is the cap; the drops come as late as it allows, each after the
    distillation of the rungs above (ZipLM's joint depth and width choice, under the target's latency table)."""
    budget = run.cfg.select.max_latency_ms
    if table is None or budget is None:
        return None
    n, last = len(cur.lineage.layers), full_total / ratios_left[-1]
    final = _layer_target(cur.model, last)
    if _factorizes(run, cur.model, last):
        final += _factorized_saving(cur.model, run.cfg.prune)
    unit_ms = sum(table.head_ms * s["heads"] + table.neuron_ms * s["ffn"] for s in cur.model.layer_shapes())
    unit_ms /= max(1, _layer_params(cur.model))
    deepest = next((d for d in range(n, 0, -1)
                    if table.base_ms + d * table.layer_ms + max(0, final) * unit_ms <= budget), 1)
    now = _layer_target(cur.model, full_total / ratios_left[0])  # this rung's layer parameters
    cap = max(deepest, int(deepest * now / max(1, final)))
    return cap if cap < n else None


def _factorizes(run: Run, model, target_total: float) -> bool:
    """Whether the rung at ``target_total`` factorizes the word embedding of ``model``: the recipe has a rank, the
    embedding is still dense, and width alone would keep less than ``EMBED_SWITCH`` of the layers' parameters."""
    from probscale_edge.embedding import embedding_rank

    return bool(run.cfg.prune.embedding_rank) and not embedding_rank(model) and \
        _layer_target(model, target_total) < EMBED_SWITCH * _layer_params(model)


def rung_rank(run: Run, model, target_total: float) -> int:
    """The embedding rank for the rung at ``target_total``: the recipe's, or the model's own once factorized,
    lowered until the factorized embedding leaves the layers the goal's ``layer_share`` of the rung where it can
    (a rank the user chose stays)."""
    from probscale_edge.embedding import embedding_params_after, embedding_rank

    pc, now = run.cfg.prune, embedding_rank(model)
    rank = now or pc.embedding_rank
    if (run.recipe or {}).get("decided_by", {}).get("embedding_rank") != "recipe":
        return rank
    emb = model.adapter.word_embeddings(model.encoder)
    vocab, hidden = emb.num_embeddings, emb.embedding_dim
    other = model.param_counts()["embedding"] - embedding_params_after(vocab, hidden, now, pc.embedding_dense_rows)
    room = (1 - run.cfg.goal.layer_share) * target_total - other  # positions, token types and the norm stay
    while rank - RANK_STEP >= MIN_RANK and embedding_params_after(vocab, hidden, rank, pc.embedding_dense_rows) > room:
        rank -= RANK_STEP
    return rank


def _factorize_if_needed(run: Run, cur: Rung, tok, target_total: float) -> tuple[Rung, str | None]:
    """The rung with its word embedding factorized when width alone would cut too deep, or refitted to a lower
    rank when the embedding would leave the layers less than the goal's ``layer_share`` of the rung
    (:func:`rung_rank`)."""
    from probscale_edge.embedding import embedding_rank
    from probscale_edge.pipeline.student import factorize

    now = embedding_rank(cur.model)
    if not now and not _factorizes(run, cur.model, target_total):
        return cur, None
    rank = rung_rank(run, cur.model, target_total)
    if now and rank >= now:
        return cur, None
    model = copy.deepcopy(cur.model)
    rep = factorize(run, model, tok, rank)
    exact = f", {rep.dense_rows:,} most used rows exact" if rep.dense_rows else ""
    what = f"embedding rank {now} -> {rank}" if now else f"embedding factorized to rank {rank}"
    return Rung(model, cur.lineage, {}), (f"{what}{exact} ({rep.energy_kept:.0%} of the energy as the task uses "
                                          "its tokens)")


def _climb(run: Run, t: Teacher, report: ProbeReport, cur: Rung, tok, data, ratios_left, table=None) -> Rung | None:
    """One rung (the first of ``ratios_left``): the candidates' short distillation, the better one distilled on;
    None: no room left."""
    from probscale_edge.embedding import embedding_rank

    ratio, full_total = ratios_left[0], t.model.param_counts()["total"]
    target_total = full_total / ratio
    t0 = time.time()
    cur, embedding = _factorize_if_needed(run, cur, tok, target_total)
    cap = depth_cap(run, cur, table, full_total, ratios_left)
    cands = _candidates(run, t, report, cur, tok, target_total, cap)
    if not cands:
        return None
    parts = {"cut": time.time() - t0, "distill": 0.0}
    epochs = run.cfg.goal.rung_epochs * (EMBED_EPOCHS if embedding else 1)
    scored = []
    for action, model, lineage in cands:
        rep = _train(run, t, model, tok, data, epochs * PROBE_SHARE if len(cands) > 1 else epochs, lineage)
        parts["distill"] += rep["train_seconds"]
        scored.append((_dev_accuracy(run, model, tok), action, model, lineage))
    short = [s[1] for s in scored if s[2].param_counts()["total"] > target_total * (1 + REACH_TOLERANCE)]
    best = scored[choose([(s[0], s[1] not in short, len(s[3].layers)) for s in scored])]
    width_acc = next((s[0] for s in scored if s[1] == "width"), None)  # None: the depth cap ruled width out
    _, action, model, lineage = best
    if len(cands) > 1:
        parts["distill"] += _train(run, t, model, tok, data, epochs * (1 - PROBE_SHARE), lineage)["train_seconds"]
    counts = model.param_counts()
    rec = {"target_ratio": ratio, "ratio_total": t.model.param_counts()["total"] / counts["total"],
           "total_params": counts["total"], "non_embedding_params": counts["non_embedding"],
           "dev_accuracy": _dev_accuracy(run, model, tok), "action": action,
           "width_only_dev_accuracy": width_acc, "candidates": {s[1]: s[0] for s in scored}, "depth_cap": cap,
           "short_of_target": short,
           "layers": len(lineage.layers), "layer_params": _layer_params(model), "layer_shapes": model.layer_shapes(),
           "embedding": embedding, "embedding_rank": embedding_rank(model),
           "embedding_fit": dict(run.stages["embedding"]) if embedding else None,
           "epochs": epochs, "seconds_in": {k: round(v, 1) for k, v in parts.items()}}
    return Rung(model, lineage, rec)


def choose(scored: list[tuple[float, bool, int]]) -> int:
    """The candidate a rung goes on with, from (dev accuracy, reached the rung's size, layers) each -> its index.

    A cut that reaches the rung's size beats one its floors stopped short of it (a width cut at one head and 16
    neurons a layer shrinks no further: reuters_r8's 10x rung ended at 9.5x that way, against a layer drop that
    reached it); then the better dev accuracy; ties go to the shallower: fewer sequential steps are what batch-1
    latency on a phone pays for."""
    return max(range(len(scored)), key=lambda i: (scored[i][1], scored[i][0], -scored[i][2]))


def measure(run: Run, model, tok, folder: Path, runs: int = 30, eval_accuracy: bool = False) -> dict:
    """int8 ONNX of ``model`` (the target's preset) through the runtime: bytes, and the p50 at batch 1, 1 thread,
    on the bench sentence (``eval_accuracy``: also its accuracy on the eval split)."""
    import numpy as np

    from probscale_edge.converters.onnx_export import export_onnx
    from probscale_edge.converters.quantize import PRESETS, quantize_dynamic_int8
    from probscale_edge.runtime.bench import DEFAULT_TEXT
    from probscale_edge.runtime.predictor import Predictor

    folder.mkdir(parents=True, exist_ok=True)
    fp32, int8 = folder / "fp32.onnx", folder / "int8.onnx"
    export_onnx(model, tok, fp32, run.cfg.export, max_length=run.max_length)
    quantize_dynamic_int8(fp32, int8, PRESETS[run.cfg.target])
    tok.save_pretrained(str(folder / "tokenizer"))
    pred = Predictor.from_files(int8, folder / "tokenizer" / "tokenizer.json", run.task.label_names, run.max_length,
                                int(tok.pad_token_id or 0), threads=1)
    for _ in range(5):
        pred.predict([DEFAULT_TEXT])
    ms = []
    for _ in range(runs):
        t0 = time.perf_counter()
        pred.predict([DEFAULT_TEXT])
        ms.append((time.perf_counter() - t0) * 1000)
    out = {"bytes": int8.stat().st_size, "fp32_bytes": fp32.stat().st_size, "p50_ms": float(np.median(ms))}
    if eval_accuracy:
        e = run.task.eval
        out["int8_eval_accuracy"] = pred.accuracy(e.texts, e.labels, e.pairs)
    fp32.unlink()
    return out


def _meets(run: Run, rec: dict, table) -> dict:
    """Each constraint met or not (None: not asked). Latency: the table's prediction when a table of the target
    was given (``predicted_ms``), else the p50 measured here."""
    g, sc = run.cfg.goal, run.cfg.select
    if table is not None and sc.latency_table:
        rec["predicted_ms"] = table.predict(rec["layer_shapes"])
    ms = rec.get("predicted_ms", rec["p50_ms"])
    return {"retention": rec["retention"] >= g.min_retention,
            "size": None if g.max_size_mb is None else rec["bytes"] <= g.max_size_mb * 1e6,
            "latency": None if sc.max_latency_ms is None else ms <= sc.max_latency_ms}


def latency_table(run: Run, t: Teacher):
    """With ``--max-latency-ms``, the table the walk paces its depth by (:func:`depth_cap`): the one given with
    ``--latency-table`` (the target's, measured there; checked against the model and the budget before the walk),
    else one measured here (the rungs are then judged by their p50 measured here). None without a budget."""
    if run.cfg.select.max_latency_ms is None:
        return None
    from probscale_edge.pipeline.stages import latency_table as table_for
    from probscale_edge.select import latency_budget

    table = table_for(run, t)
    if run.cfg.select.latency_table:
        latency_budget(run.cfg.select, table)  # refuses a budget below the table's fastest subnetwork
    return table


def _log_rung(run: Run, rec: dict) -> None:
    ok = all(v is not False for v in rec["meets"].values())
    run.log(f"  rung {rec['rung']}: {rec['target_ratio']:g}x -> {rec['ratio_total']:.2f}x total, "
            f"{rec['non_embedding_params']:,} non-embedding, {rec['bytes'] / 1e6:.2f} MB, p50 {rec['p50_ms']:.2f} ms, "
            f"dev {rec['dev_accuracy']:.4f} ({rec['retention']:.1%}), eval {rec['eval_accuracy']:.4f}, {rec['action']} "
            f"({_width_note(rec)}){'; ' + rec['embedding'] if rec['embedding'] else ''} "
            f"[{'meets' if ok else 'misses'}] {rec['seconds']:.0f} s")


def _width_note(rec: dict) -> str:
    if rec["width_only_dev_accuracy"] is None:
        return f"width ruled out by the depth cap of {rec['depth_cap']} layers"
    return f"width only: {rec['width_only_dev_accuracy']:.4f}"


def _distill_data(run: Run, t: Teacher, work: Path) -> DistillData:
    """The training rows and the teacher's logits for them, augmented once for the whole walk, and the
    teacher's hidden states for them (hidden-state distillation), computed once for every rung."""
    from probscale_edge import distributed as dist
    from probscale_edge.recover import TeacherStates

    split, logits = run.task.train, t.train_logits
    if run.cfg.recover.augment:
        from probscale_edge.augment import AugmentConfig, Augmenter

        aug = Augmenter(t.model, t.tokenizer, AugmentConfig(copies=run.cfg.recover.augment, seed=run.cfg.seed),
                        run.max_length, log=run.log)
        split, logits, rep = aug.expand(split, logits)
        run.stages["augment"] = asdict(rep)
    if not (run.cfg.recover.distill_hidden or 0) > 0 or dist.device().type != "cpu":
        return DistillData(split, logits)  # on a GPU the teacher's forward costs less than reading its states back
    t0 = time.time()
    states = TeacherStates.compute(t.model, t.tokenizer, split, run.max_length, work / "teacher_states.npy")
    if states is None:
        run.log("  the teacher's hidden states would not fit on disk: the teacher runs at every step")
        run.stages["teacher_states"] = {"cached": False}
    else:
        size, seconds = states.table.nbytes, time.time() - t0
        run.stages["teacher_states"] = {"cached": True, "rows": len(split), "bytes": size, "seconds": round(seconds, 1)}
        run.log(f"  the teacher's hidden states of {len(split):,} rows computed once ({size / 1e9:.2f} GB, "
                f"{seconds:.0f} s): no rung runs the teacher")
    return DistillData(split, logits, states)


def start_rung(run: Run, report: ProbeReport, model, full_total: int) -> tuple[int, str]:
    """Where the walk starts -> (index into the ladder, why). The layers the task needs are the first k whose
    probe reaches the floor's share of the best probe accuracy; the walk starts at the smallest rung that still
    holds those k layers at full width next to the embedding as it is (not factorized: sized with the factorized
    embedding, mpnet's trec6 walk started at 10x and kept 94.8%, where another seed walked from 5x and kept 96.8%)."""
    from probscale_edge.select import layer_costs

    w, g = report.weighted, run.cfg.goal
    best = max(w[1:])
    k = next(i for i in range(1, len(w)) if w[i] >= g.min_retention * best)
    costs = layer_costs(model)
    needed = model.param_counts()["total"] - sum(costs) + sum(costs[:k])
    fits = [i for i, r in enumerate(g.ladder) if full_total / r >= needed]
    start = fits[-1] if fits else 0
    why = (f"the probes: layers 1-{k} reach {w[k]:.3f} of the best probe's {best:.3f} (the floor's share), "
           f"{needed:,} parameters with the embedding: the walk starts at {g.ladder[start]:g}x")
    return start, why


def _factorized_saving(model, pc) -> int:
    """Parameters the dense word embedding of ``model`` gives up when factorized as ``pc`` (a PruneConfig) says."""
    from probscale_edge.embedding import embedding_params_after

    vocab, hidden = model.adapter.word_embeddings(model.encoder).weight.shape
    return max(0, vocab * hidden - embedding_params_after(vocab, hidden, pc.embedding_rank, pc.embedding_dense_rows))


def walk(run: Run, t: Teacher, report: ProbeReport, work: Path, table=None) -> tuple[Walk, Rung | None, object]:
    """Walk down the ladder from the probes' start -> (the walk, the chosen rung, the student's tokenizer). When
    the first rung walked already misses the floor, the walk starts again from the top of the ladder."""
    from probscale_edge.pipeline.student import embedding_side

    full_dev = _dev_accuracy(run, t.model, t.tokenizer)
    sizes, uncut = _full_sizes(run, t, work)
    w = Walk(full={"dev_accuracy": full_dev, "eval_accuracy": t.accuracy,
                   "total_params": t.model.param_counts()["total"], "layer_params": _layer_params(t.model), **sizes},
             uncut_int8=uncut)
    base, tok = embedding_side(run, t, copy.deepcopy(t.model), factorize_now=False)  # the walk cuts copies of it
    data = _distill_data(run, t, work)
    start, why = start_rung(run, report, base, w.full["total_params"])
    w.start = {"rung": start + 1, "why": why}
    run.log(f"walking the ladder {', '.join(f'{r:g}x' for r in run.cfg.goal.ladder)} (floor "
            f"{run.cfg.goal.min_retention:.1%} of the full model's dev accuracy {full_dev:.4f}); {why} ...")

    def walk_from(first: int) -> list:
        cur = Rung(copy.deepcopy(base), Lineage.of(base), {})
        return _walk_from(run, t, report, cur, tok, data, w, first, work, table, full_dev)

    kept = walk_from(start)
    if start and w.rungs and not w.rungs[0]["meets"]["retention"]:
        run.log(f"  the probes' start ({run.cfg.goal.ladder[start]:g}x) missed the floor: walking from the top")
        w.start["restarted"], w.abandoned, w.rungs = True, w.rungs, []
        kept = walk_from(0)
    if data.states is not None:
        data.states.release()
    return w, _choose(run, w, kept), tok


FINISH_S = 90  # seconds the build needs after the walk (export, int8 gate, bundle) on 2 cores
# a rung's seconds scale with its student's layer parameters plus this share of the full model's, the part of
# the work that does not shrink with the student (2 cores, AVX-512, rotten_tomatoes: rungs of 9.1M / 5.4M / 2.4M
# layer parameters, of a full 10.6M, took 232 / 162 / 99 s; predicted from the rung before: 165 / 100 s)
FIXED_SHARE = 0.2


def predict_seconds(run: Run, w: Walk, cur: Rung, base_layers: int, ratio: float) -> float:
    """The seconds the rung at ``ratio`` will take, from the last rung's: its cut (the Fisher scoring of the
    uncut student) scales with the student it starts from, its distillation with its epochs and the student it
    ends with, the rest (scoring, the int8 measurement) with the student it ends with. 0 before the first rung."""
    if not w.rungs:
        return 0.0
    last = w.rungs[-1]
    fixed = FIXED_SHARE * w.full["layer_params"]
    target_total = w.full["total_params"] / ratio
    end = max(0, _layer_target(cur.model, target_total))
    factorizes = _factorizes(run, cur.model, target_total)
    if factorizes:
        end += _factorized_saving(cur.model, run.cfg.prune)
    end = min(end, _layer_params(cur.model))
    before = w.rungs[-2]["layer_params"] if len(w.rungs) > 1 else base_layers
    parts = last.get("seconds_in", {})
    cut, distill = parts.get("cut", 0.0), parts.get("distill", 0.0)
    rest = max(0.0, last["seconds"] - cut - distill)
    epochs = run.cfg.goal.rung_epochs * (EMBED_EPOCHS if factorizes else 1)
    shrink = (fixed + end) / (fixed + last["layer_params"])
    return (cut * (fixed + last["layer_params"]) / (fixed + before)
            + distill * epochs / last["epochs"] * shrink + rest * shrink)


def _out_of_time(run: Run, w: Walk, cur: Rung, base_layers: int, ratio: float) -> str:
    """Why the rung at ``ratio`` would end past ``--time-budget`` ('' : it fits): its predicted seconds
    (:func:`predict_seconds`) and the build's finish. The first rung is not predicted: it always runs when the
    finish fits."""
    budget = run.cfg.goal.time_budget
    if not budget:
        return ""
    spent = time.time() - run.t_start
    need = predict_seconds(run, w, cur, base_layers, ratio) + FINISH_S
    if spent + need <= budget * 60:
        return ""
    return f"{spent / 60:.1f} min spent, the next rung and the finish would take about {need / 60:.1f} more"


def _walk_from(run: Run, t: Teacher, report: ProbeReport, cur: Rung, tok, data, w: Walk, start: int, work: Path,
               table, full_dev: float) -> list:
    """The rungs from ``start`` down, recorded in ``w`` -> the kept rungs."""
    g, kept = run.cfg.goal, []
    full_total, base_layers = w.full["total_params"], _layer_params(cur.model)
    for i, ratio in enumerate(g.ladder[start:], start + 1):
        late = _out_of_time(run, w, cur, base_layers, ratio)
        if late:
            w.stopped = f"the time budget ({g.time_budget:g} min) ran out before rung {i} ({ratio:g}x): {late}"
            break
        r0 = time.time()
        if cur.model.param_counts()["total"] <= full_total / ratio:
            run.log(f"  rung {i} ({ratio:g}x): already reached by the vocabulary trim, skipped")
            continue
        nxt = _climb(run, t, report, cur, tok, data, g.ladder[i - 1:], table)
        if nxt is None:
            w.stopped = f"rung {i} ({ratio:g}x) leaves no room for any layer next to the embedding"
            break
        rec = nxt.record
        rec.update(rung=i, retention=rec["dev_accuracy"] / full_dev if full_dev else 0.0,
                   eval_accuracy=_accuracy_on(run, run.task.eval, nxt.model, tok),
                   **measure(run, nxt.model, tok, work / f"rung{i}"))
        rec["meets"], rec["seconds"] = _meets(run, rec, table), round(time.time() - r0, 1)
        kept.append(nxt)
        w.rungs.append(rec)
        _log_rung(run, rec)
        cur = nxt
        if not rec["meets"]["retention"]:
            w.stopped = f"rung {i} ({ratio:g}x) fell below the retention floor"
            break
    else:
        w.stopped = "the ladder's last rung was reached"
    return kept


def _full_sizes(run: Run, t: Teacher, work: Path) -> tuple[dict, dict]:
    """The full model's fp32 bytes, and the uncut int8 model's bytes, p50 and eval accuracy (the peers)."""
    m = measure(run, t.model, t.tokenizer, work / "full", eval_accuracy=True)
    return {"bytes": m["fp32_bytes"]}, {"eval_accuracy": m["int8_eval_accuracy"], "bytes": m["bytes"],
                                         "p50_ms": m["p50_ms"]}


def _choose(run: Run, w: Walk, kept: list) -> Rung | None:
    """The smallest rung (the fastest, with a latency budget) that meets every constraint; with
    ``--best-effort`` and none that does, the closest (most constraints met, then the best retention)."""
    ok = [i for i, r in enumerate(w.rungs) if all(v is not False for v in r["meets"].values())]
    key = "p50_ms" if run.cfg.select.max_latency_ms is not None else "total_params"
    if ok:
        w.chosen = min(ok, key=lambda i: (w.rungs[i][key], i))
    elif run.cfg.goal.best_effort and w.rungs:
        w.chosen = max(range(len(w.rungs)), key=lambda i: (sum(v is not False for v in w.rungs[i]["meets"].values()),
                                                           w.rungs[i]["retention"]))
        w.best_effort = True
    for i, r in enumerate(w.rungs):
        r["chosen"] = i == w.chosen
    if w.chosen is not None:  # the manifest's embedding stage: the factorization the shipped rung carries
        fits = [r["embedding_fit"] for r in w.rungs[:w.chosen + 1] if r.get("embedding_fit")]
        if fits:
            run.stages["embedding"] = fits[-1]
        else:
            run.stages.pop("embedding", None)
    return kept[w.chosen] if w.chosen is not None else None


def unmet(run: Run, w: Walk) -> ProbscaleError:
    """One line naming the closest rung reached."""
    if not w.rungs:
        return ProbscaleError(f"no rung of the ladder could be built ({w.stopped})",
                              "pass a ladder that starts lower, e.g. --ladder 1.5,2,3")
    best = max(w.rungs, key=lambda r: (sum(v is not False for v in r["meets"].values()), r["retention"]))
    g = run.cfg.goal
    return ProbscaleError(
        f"no rung meets every constraint (closest: rung {best['rung']}, {best['ratio_total']:.2f}x, retention "
        f"{best['retention']:.1%} of the floor {g.min_retention:.1%}, {best['bytes'] / 1e6:.2f} MB, p50 "
        f"{best['p50_ms']:.2f} ms); no bundle was written",
        "lower --min-retention, raise --max-size-mb / --max-latency-ms, or pass --best-effort to ship that rung")


def selection_of(t: Teacher, rung: Rung) -> Selection:
    """The chosen rung as a Selection of the original model (what the manifest and the stage route read)."""
    from probscale_edge.select import layer_costs

    spec = rung.lineage.spec(t.model.layer_shapes())
    total = sum(layer_costs(t.model))
    kept = sum(layer_costs(rung.model))
    return Selection(spec, kept / total, kept, [], "ladder", kept / total)


def record(w: Walk, run: Run) -> dict:
    """The manifest's ``ladder`` section (probscale_edge.visual renders it)."""
    g = run.cfg.goal
    return {"constraints": {"min_retention": g.min_retention, "max_size_mb": g.max_size_mb,
                            "max_latency_ms": run.cfg.select.max_latency_ms},
            "best_effort": w.best_effort, "stopped": w.stopped, "chosen": w.chosen, "full": w.full,
            "start": w.start, "abandoned": w.abandoned,
            "uncut_int8": w.uncut_int8, "rungs": w.rungs, "ladder": list(g.ladder), "rung_epochs": g.rung_epochs,
            "candidate_share": PROBE_SHARE,
            "note": ("dev accuracy on a split held out of the training data (the teacher never trained on it); "
                     "bytes and p50 of each rung's int8 ONNX (target preset) at batch 1, 1 thread, on the build "
                     "machine; at each rung the width-only cut and the probes' layer drop got the same "
                     f"{PROBE_SHARE:.0%} of the rung's distillation before the better one went on")}


def student(run: Run, t: Teacher, report: ProbeReport, work: Path):
    """The ladder stage of the build -> (the chosen rung's Selection, its Student); raises when no rung meets the
    constraints and ``--best-effort`` was not given."""
    from probscale_edge import distributed as dist
    from probscale_edge.faults import fault
    from probscale_edge.pipeline.student import Student, reload_diff

    if dist.active():
        raise ProbscaleError("the ladder runs in one process", "drop torchrun, or pass --search single --budget B")
    table = latency_table(run, t)
    fault("prune")
    w, rung, tok = walk(run, t, report, work / "ladder", table)
    run.ladder = record(w, run)
    if rung is None:
        raise unmet(run, w)
    sel = selection_of(t, rung)
    diff = reload_diff(run, rung.model, tok, sel, work / "pruned")
    run.stages["prune"] = {"reload_max_abs": diff, "parameters": rung.model.param_counts(),
                           "layer_shapes": rung.model.layer_shapes()}
    if diff > 1e-5:
        raise ProbscaleError("the pruned model does not reload to the same outputs", "report this model family")
    chosen = w.rungs[w.chosen]
    run.stages["recover"] = {"mode": "ladder", "accuracy": chosen["eval_accuracy"], "dev_accuracy": chosen["dev_accuracy"]}
    run.log(f"chosen: rung {chosen['rung']} ({chosen['ratio_total']:.2f}x fewer total parameters, dev retention "
            f"{chosen['retention']:.1%}{', best effort: it misses a constraint' if w.best_effort else ''})")
    return sel, Student(rung.model, tok, chosen["eval_accuracy"], rung.model.param_counts())


def check_shipped(run: Run, model_file: Path) -> None:
    """The size constraint, again on the file the int8 gate kept (a fallback to fp32 nodes makes it larger)."""
    limit = run.cfg.goal.max_size_mb
    shipped = model_file.stat().st_size
    if limit is None or shipped <= limit * 1e6 or run.cfg.goal.best_effort:
        return
    raise ProbscaleError(f"the int8 gate kept a {shipped / 1e6:.2f} MB model (the rung's int8 was within "
                         f"--max-size-mb {limit:g}; the gate had to keep nodes in fp32); no bundle was written",
                         "raise --max-size-mb or --max-accuracy-drop, or pass --best-effort")
