"""The model-side stages of the build, each ``stage(run, inputs...) -> result``: the teacher, the budget, the
latency table, the probe and the selection. Each records its report in ``run.stages[name]``, is cached by
a content key from what it reads, and is a fault-injection point (probscale_edge.faults)."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from probscale_edge import distributed as dist
from probscale_edge.errors import ProbscaleError
from probscale_edge.faults import fault
from probscale_edge.pipeline.run import Run
from probscale_edge.pipeline.store import content_key, model_fingerprint
from probscale_edge.specs import LatencyTable, ProbeReport, Selection, SubnetworkSpec


def accuracy(logits, labels) -> float:
    import numpy as np

    return float((np.asarray(logits).argmax(-1) == np.asarray(labels)).mean())


@dataclass
class Teacher:
    model: object  # EncoderClassifier, fine-tuned
    tokenizer: object
    train_logits: object
    eval_logits: object
    accuracy: float
    key: str  # content key: what the probe, selection and student keys build on


def teacher(run: Run) -> Teacher:
    """The full model fine-tuned on the task: the reference accuracy and the teacher (cached)."""
    import numpy as np
    import torch

    from probscale_edge.modeling import (EncoderClassifier, classification_architecture, length_limits, load_classifier,
                                         load_encoder, stored_dtype)
    from probscale_edge.select import check_budget, layer_costs

    cfg, task = run.cfg, run.task
    if isinstance(run.src, Path) and classification_architecture(run.src):
        return _finetuned_teacher(run)
    torch.manual_seed(cfg.seed)  # before the task head is made: the same seed, the same head
    encoder, tokenizer, run.src = load_encoder(cfg.source.model, allow_pickle=cfg.source.allow_pickle, log=run.log,
                                               allow_unused_weights=cfg.source.allow_unused_weights)
    run.lengths = {**length_limits(encoder, tokenizer, cfg.source.max_length), "stored_dtype": stored_dtype(run.src)}
    if run.lengths["used"] < cfg.source.max_length:
        run.log(f"  inputs truncated to {run.lengths['used']} tokens (the model takes {run.lengths['model']}, its "
                f"tokenizer {run.lengths['tokenizer']}; --max-length {cfg.source.max_length})")
    full = EncoderClassifier(encoder, task.num_labels, pooling=cfg.source.pooling)
    if cfg.select.budget is not None:
        check_budget(cfg.select.budget, layer_costs(full), cfg.select.granularity)
    dist.init()
    runner = [] if not dist.active() else [dist.world_size(), dist.device().type]  # DDP results differ slightly
    key = content_key("teacher-v2", model_fingerprint(run.src), task.fingerprint(), cfg.source.to_dict(),
                      run.max_length, cfg.finetune.to_dict(), cfg.seed, *([runner] if runner else []))
    store, t0 = run.store("teachers"), time.time()
    found = store.get_dir(key) if cfg.use_cache and dist.is_main() else None
    if dist.broadcast(found is not None):  # rank 0 decides, so every rank takes the same path
        run.log(f"[cache] fine-tuned teacher {key}")
        model, tokenizer, _ = load_classifier(store.path(key))
        z = np.load(store.path(key) / "logits.npz")
        train_logits, eval_logits = z["train"], z["eval"]
        fit = json.loads((store.path(key) / "probscale.json").read_text()).get("fit", {})
    else:
        model, fit, train_logits, eval_logits = _finetune(run, full, tokenizer, store, key)
    acc = accuracy(eval_logits, task.eval.labels)
    run.stages["finetune"] = {"accuracy": acc, "cached": found is not None, "seconds": round(time.time() - t0, 1),
                              "key": key, "fit": fit, "parameters": model.param_counts()}
    run.log(f"full fine-tuned model: eval accuracy {acc:.4f}")
    return Teacher(model, tokenizer, train_logits, eval_logits, acc, key)


def _finetuned_teacher(run: Run) -> Teacher:
    """The user's model already is the teacher (a fine-tuned classification checkpoint): used as it is, with its
    own head, its labels mapped to the task's; no fine-tune."""
    from probscale_edge.modeling import finetuned_classifier, length_limits, predict_logits, stored_dtype
    from probscale_edge.select import check_budget, layer_costs

    cfg, task, t0 = run.cfg, run.task, time.time()
    model, tokenizer, info = finetuned_classifier(run.src, task.label_names, cfg.source.allow_unused_weights)
    run.lengths = {**length_limits(model.encoder, tokenizer, cfg.source.max_length), "stored_dtype": stored_dtype(run.src)}
    if cfg.select.budget is not None:
        check_budget(cfg.select.budget, layer_costs(model), cfg.select.granularity)
    dist.init()
    run.log(f"{run.src} is a fine-tuned {info['architecture']}: it is the teacher as it is (labels {info['labels']} "
            f"mapped to {task.label_names}); no fine-tune")
    with dist.collective():
        train_logits = predict_logits(model, tokenizer, task.train.texts, task.train.pairs, max_length=run.max_length)
        eval_logits = predict_logits(model, tokenizer, task.eval.texts, task.eval.pairs, max_length=run.max_length)
    acc = accuracy(eval_logits, task.eval.labels)
    key = content_key("teacher-checkpoint-v1", model_fingerprint(run.src), task.fingerprint(), run.max_length)
    run.stages["finetune"] = {"accuracy": acc, "cached": False, "skipped": "the model is a fine-tuned classifier",
                              "checkpoint": info, "seconds": round(time.time() - t0, 1), "key": key, "fit": {},
                              "parameters": model.param_counts()}
    run.log(f"fine-tuned checkpoint (the teacher): eval accuracy {acc:.4f}")
    return Teacher(model, tokenizer, train_logits, eval_logits, acc, key)


def _finetune(run: Run, model, tokenizer, store, key):
    import numpy as np

    from probscale_edge.modeling import predict_logits, save_classifier
    from probscale_edge.recover import TrainSettings, train_classifier

    cfg, task = run.cfg, run.task
    fault("finetune")
    run.log(f"fine-tuning the full model on {task.name} (the teacher and the reference accuracy) ...")
    ts = TrainSettings.of(cfg.finetune, cfg.recover, run.max_length, cfg.seed)
    fit = train_classifier(model, tokenizer, task.train, ts, lr=ts.lr, progress_desc="fine-tune full model",
                           checkpoint=store.root / f"{key}.train.pt", resume=cfg.resume)
    with dist.collective():
        train_logits = predict_logits(model, tokenizer, task.train.texts, task.train.pairs, max_length=run.max_length)
        eval_logits = predict_logits(model, tokenizer, task.eval.texts, task.eval.pairs, max_length=run.max_length)
    if cfg.use_cache and dist.is_main():
        def fill(d):
            save_classifier(model, tokenizer, d, task.label_names, extra={"fit": fit, "source": str(run.src)})
            np.savez(d / "logits.npz", train=train_logits, eval=eval_logits)

        store.put_dir(key, fill)
    return model, fit, train_logits, eval_logits


def budget(run: Run, t: Teacher) -> float:
    """The layer budget: ``--budget``, or the one ``--compression`` implies once the embedding is sized."""
    cfg = run.cfg
    if not cfg.select.compression:
        return cfg.select.budget
    b = budget_for_compression(cfg, t.model, t.tokenizer, run.task, run.max_length)
    run.stages["budget"] = {"compression": cfg.select.compression, "basis": cfg.select.compression_basis, "budget": b}
    run.log(f"  {cfg.select.compression:g}x fewer {cfg.select.compression_basis} parameters -> keep {b:.3f} of the "
            "layers' parameters")
    return b


def budget_for_compression(cfg, model, tokenizer, task, max_length: int) -> float:
    """The fraction of the encoder's layer parameters that leaves the student ``compression`` times smaller in
    total parameters than ``model``, given the embedding it will have (trimmed vocabulary, factorized rank)
    and the task head; with basis "non-embedding", that many times fewer non-embedding parameters."""
    from probscale_edge.embedding import embedding_params_after
    from probscale_edge.select import layer_costs

    sc, pc = cfg.select, cfg.prune
    counts, costs = model.param_counts(), layer_costs(model)
    rest = counts["non_embedding"] - sum(costs)  # task head, final norms, shared position bias
    if sc.compression_basis == "non-embedding":  # the embedding does not count: no need to size it
        left = counts["non_embedding"] / sc.compression - rest
        if left < min(costs) * 0.05:
            raise ProbscaleError(f"--compression {sc.compression:g} (non-embedding) leaves no room for any layer",
                                 "pass a lower --compression")
        return min(1.0, left / sum(costs))
    emb = model.adapter.word_embeddings(model.encoder)
    V, H = emb.weight.shape
    if pc.trim_vocab:
        from probscale_edge.vocab import kept_tokens

        V = len(kept_tokens(tokenizer, task.train.texts + (task.train.pairs or []), None, pc.vocab_min_count,
                            max_length)[1])
    embedding = counts["embedding"] - emb.weight.numel() + embedding_params_after(V, H, pc.embedding_rank,
                                                                                    pc.embedding_dense_rows)
    left = counts["total"] / sc.compression - embedding - rest
    if left < min(costs) * 0.05:
        hint = "add --trim-vocab and/or a smaller --embedding-rank" if not (pc.trim_vocab and pc.embedding_rank) \
            else "pass a smaller --embedding-rank or a lower --compression"
        raise ProbscaleError(f"--compression {sc.compression:g} leaves no room for any layer: the embedding alone "
                             f"is {embedding:,} of the {int(counts['total'] / sc.compression):,} parameters allowed", hint)
    return min(1.0, left / sum(costs))


def latency_table(run: Run, t: Teacher) -> LatencyTable | None:
    """With ``--max-latency-ms``: the given table, or one measured here (cached by content key)."""
    from probscale_edge.latency import check_table, cpu_name, measure_table

    cfg = run.cfg
    if cfg.select.max_latency_ms is None:
        return None
    t0 = time.time()
    if cfg.select.latency_table:
        table = LatencyTable.load(cfg.select.latency_table)
    else:
        store = run.store("stages")
        key = content_key("latency-v1", t.key, cfg.target, run.max_length, cpu_name(), platform.node())
        cached = store.get_json(key) if cfg.resume else None
        if cached:
            table = LatencyTable.from_dict(cached)
            run.log("[resume] latency table")
        else:
            run.log(f"measuring per-unit latencies on this machine ({cpu_name()}; batch 1, sequence {run.max_length}, "
                    "1 thread) ...")
            if cfg.target in ("arm64", "android"):
                run.log("  note: these are this machine's latencies; for the device's, write a table there with "
                        "`probscale-edge latency-table --ssh user@device` and pass --latency-table")
            table = measure_table(t.model, t.tokenizer, target=cfg.target, seq=run.max_length, threads=1,
                                  model_name=str(cfg.source.model), log=run.log)
            if dist.is_main():
                store.put_json(key, table.to_dict())
    check_table(table, t.model, run.max_length, run.log)
    run.stages["latency_table"] = {**table.to_dict(), "seconds": round(time.time() - t0, 1)}
    run.log(f"  latency model: {table.base_ms:.2f} ms + {table.layer_ms:.3f}/layer + {table.head_ms:.4f}/head + "
            f"{table.neuron_ms * 1000:.3f} us/neuron (fit error <= {table.max_relative_error:.1%})")
    return table


def probe_settings(run: Run):
    from probscale_edge.probe import ProbeSettings

    return ProbeSettings.of(run.cfg.probe, run.cfg.source.pooling, run.max_length, run.cfg.seed)


def probe(run: Run, t: Teacher) -> tuple[ProbeReport, str]:
    """Stage 1: linear probes on every layer (task-weighted). Returns the report and its content key."""
    from probscale_edge.assets import cache_dir
    from probscale_edge.probe import probe_layers

    cfg = run.cfg
    fault("probe")
    t0, store, ps = time.time(), run.store("stages"), probe_settings(run)
    key = content_key("probe-v2", t.key, [x.fingerprint() for x in run.tasks], run.weights, asdict(ps))
    cached = dist.broadcast(store.get_json(key) if cfg.resume and dist.is_main() else None)
    if cached:
        run.log("[resume] probe report")
        report = ProbeReport.from_dict(cached)
    else:
        run.log("probing every layer ...")
        with dist.collective():
            report = probe_layers(t.model, t.tokenizer, run.tasks, run.weights, ps,
                                  cache=cache_dir() / "features" if cfg.use_cache else None, model_key=t.key)
        hits = sum(x.get("features_cached", False) for x in report.tasks)
        if hits:
            run.log(f"  [cache] layer features of {hits} of {len(report.tasks)} task(s) (content hash)")
        if dist.is_main():
            store.put_json(key, report.to_dict())
    run.stages["probe"] = {**report.to_dict(), "seconds": round(time.time() - t0, 1), "resumed": bool(cached)}
    run.log("  weighted probe accuracy by layer: " + " ".join(f"{a:.3f}" for a in report.weighted))
    return report, key


def select(run: Run, t: Teacher, report: ProbeReport, probe_key: str, layer_budget: float,
           table: LatencyTable | None) -> tuple[Selection, str]:
    """Stage 2: the subnetwork (or the given spec). Returns the selection and its content key."""
    from probscale_edge.prune import apply_spec
    from probscale_edge.select import layer_costs, select as select_subnetwork

    cfg, sc = run.cfg, run.cfg.select
    fault("select")
    t0, store = time.time(), run.store("stages")
    key = content_key("select-v2", probe_key, sc.to_dict(), layer_budget, cfg.seed,
                      table.to_dict() if table else None)
    cached = dist.broadcast(store.get_json(key) if cfg.resume and not sc.spec and dist.is_main() else None)
    if sc.spec:  # a subnetwork chosen elsewhere (a saved selection, another pruner): cut exactly that
        spec = SubnetworkSpec.from_dict(sc.spec)
        costs = layer_costs(t.model)
        kept = sum(layer_costs(apply_spec(t.model, spec)))
        selection = Selection(spec, kept / sum(costs), kept, [], "given", kept / sum(costs))
        run.log("using the given subnetwork spec")
    elif cached:
        run.log("[resume] subnetwork selection")
        selection = Selection.from_dict(cached)
    else:
        run.log(f"selecting a subnetwork under budget {layer_budget:.3f} ({sc.strategy}, {sc.granularity}) ...")
        with dist.collective():
            selection = select_subnetwork(t.model, report, sc, tokenizer=t.tokenizer, tasks=run.tasks,
                                          weights=run.weights, probe_cfg=probe_settings(run), log=run.log,
                                          budget=layer_budget, table=table, seed=cfg.seed)
            if sc.max_latency_ms is not None and table is not None and table.is_local():
                from probscale_edge.pipeline.latency_check import calibrate_latency

                selection = calibrate_latency(run, t, report, selection, table, layer_budget)
        # every rank must cut the same subnetwork: rank 0's choice wins (GPU kernels need not agree bitwise)
        selection = Selection.from_dict(dist.broadcast(selection.to_dict()))
        if dist.is_main():
            store.put_json(key, selection.to_dict())
    run.stages["select"] = {**selection.to_dict(), "seconds": round(time.time() - t0, 1), "resumed": bool(cached)}
    spec = selection.spec
    note = ""
    if spec.heads or spec.ffn:
        note = f" (heads/FFN pruned in layers {sorted(set(spec.heads) | set(spec.ffn), key=int)})"
    run.log(f"  kept layers {spec.keep_layers}{note}: {selection.kept_fraction:.3f} of non-embedding parameters")
    return selection, key
