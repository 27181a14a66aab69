"""T5 text-to-text retention study: a small T5 trained here FROM SCRATCH (not T5-Base: no pretrained T5 is
available offline), both FFN layouts (v1.0 relu, gated v1.1 / Flan-T5 with its own LM head), on the text-to-text
framing of built-in classification tasks (source "<task>: <text>", target the label word), cut to 3x fewer
non-embedding parameters by `probscale-edge build --kind text2text`.

Per (layout, task): one random-init T5 folder (the tokenizer: a Unigram model trained with `tokenizers` on the
training sources and targets of every task in the study, 4000 pieces); the build's teacher stage trains it on the
task (that is the from-scratch training; cached, so both strategies share one teacher); then two builds at the same
budget that differ only in the block choice:

  probscale  probe-guided: the encoder/decoder block pair with the largest summed probe gain (exact search)
  drop-top   the first k_e encoder and k_d decoder blocks (drop the top blocks; --strategy bottom)

both followed by the same Fisher cut of heads (self, cross) and FFN neurons to the budget, distillation with early
stopping on a dev split, int8 behind the task-metric gate. Each row: teacher and bundle exact match on the eval
split, retention, non-embedding parameter ratio, blocks kept, bundle time to first token / tokens per second.

    python benchmarks/t5/run.py --layout v1.0 --task sms_spam      # one cell (a few minutes on 1 CPU thread)
    python benchmarks/t5/run.py --table                            # the table of every cell measured so far

Rows go to benchmarks/t5/results/retention.json (one entry per layout, task, strategy; a rerun replaces its rows).
Models, caches and bundles live under --work (default /work/tmp-t5/bench), never in the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "retention.json"
TASKS = ("sms_spam", "trec6", "rotten_tomatoes")
LAYOUTS = {"v1.0": "relu", "v1.1": "gated-gelu"}
STRATEGIES = {"probscale": "probscale", "drop-top": "bottom"}


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def tokenizer(work: Path, tasks, max_train: int):
    """One Unigram tokenizer over the study's training texts (sources and targets), cached in ``work``."""
    from transformers import AutoTokenizer

    from probscale_edge.text2text import frame_builtin, train_tokenizer

    folder = work / "tokenizer"
    if (folder / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(str(folder))
    texts = []
    for t in tasks:
        p = frame_builtin(t, max_train=max_train)
        texts += p.train.sources + p.train.targets
    tok = train_tokenizer(texts, vocab_size=4000)
    tok.save_pretrained(str(folder))
    return tok


def t5_folder(work: Path, layout: str, tok, a) -> Path:
    """A random-init T5 (d_model, 4 + 4 blocks) of ``layout`` saved with the tokenizer (seed 0)."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from probscale_edge.seq2seq import save_seq2seq

    folder = work / f"t5-scratch-{layout}"
    if (folder / "config.json").exists():
        return folder
    gated = LAYOUTS[layout] == "gated-gelu"
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=len(tok), d_model=a.d_model, d_kv=a.d_model // a.heads, num_heads=a.heads,
                   d_ff=a.d_ff, num_layers=a.layers, num_decoder_layers=a.layers, feed_forward_proj=LAYOUTS[layout],
                   tie_word_embeddings=not gated, dropout_rate=0.1, pad_token_id=0, eos_token_id=1,
                   decoder_start_token_id=0)
    m = T5ForConditionalGeneration(cfg)
    if gated:  # T5 v1.1 / Flan-T5 checkpoints have their own LM head
        m.lm_head = torch.nn.Linear(a.d_model, len(tok), bias=False)
        torch.nn.init.normal_(m.lm_head.weight, std=a.d_model ** -0.5)
    save_seq2seq(m, tok, folder)
    return folder


def one_build(a, model: Path, task: str, strategy: str, work: Path) -> dict:
    from probscale_edge.config import BuildConfig, TaskSpec
    from probscale_edge.pipeline import build

    out = work / "bundles" / f"{model.name}-{task}-{strategy}"
    flat = dict(model=str(model), tasks=[TaskSpec(task)], kind="text2text", output=str(out), force=True,
                budget=a.budget, strategy=STRATEGIES[strategy], epochs=a.epochs, lr=a.lr, batch_size=a.batch_size,
                student_epochs=a.student_epochs, student_lr=a.student_lr, max_train=a.max_train, max_length=a.max_length,
                patience=a.patience,
                target="x86_64", latency_runs=20, seed=0)
    try:
        cfg = BuildConfig.create(**flat, search="single")
    except Exception:  # noqa: BLE001 - a config without the ladder's --search
        cfg = BuildConfig.create(**flat)
    t0 = time.time()
    m = build(cfg, log=_log)
    v, lat = m["validation"], m["latency"]
    return {"layout": None, "task": task, "strategy": strategy, "teacher": v["accuracy"]["full_finetuned_torch_fp32"],
            "student_torch": v["accuracy"]["pruned_torch_fp32"], "onnx_fp32": v["accuracy"]["pruned_onnx_fp32"],
            "bundle": v["accuracy"]["bundle"], "retention": v["retention"], "precision": m["model"]["precision"],
            "greedy_equal": v["greedy_equal"], "ratio_non_embedding": m["parameters"]["ratio_non_embedding"],
            "params_non_embedding": {"teacher": m["parameters"]["original"]["non_embedding"],
                                     "bundle": m["parameters"]["pruned"]["non_embedding"]},
            "blocks": m["subnetwork"]["spec"]["keep_layers"], "eval_examples": v["eval_examples"],
            "ttft_p50_ms": lat["bundle_time_to_first_token_p50_ms"], "tokens_per_second_p50": lat["bundle_tokens_per_second_p50"],
            "request_p50_ms": lat["bundle_p50_ms"], "torch_request_p50_ms": lat["full_torch_fp32_p50_ms"],
            "probe": m["stages"].get("probe", {}).get("weighted"), "build_seconds": round(time.time() - t0, 1)}


def _own_cache(cache: Path) -> None:
    """Teachers and stage records in ``cache`` (outside the repository); the task data from the default cache."""
    from probscale_edge.assets import cache_dir

    if os.environ.get("PROBSCALE_EDGE_CACHE"):
        return
    shared = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    for kind in ("data", "model"):
        if (shared / kind).exists() and not (cache / kind).exists():
            (cache / kind).symlink_to(shared / kind)
    os.environ["PROBSCALE_EDGE_CACHE"] = str(cache)


def _train_device() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def rebench(rows: list, work: Path, threads: int = 1, runs: int = 50) -> None:
    """Time every row's bundle on this machine (batch 1, ``threads``): time to first token, decode tokens per
    second, per-request p50, over the first 50 eval sources of its task (cycled)."""
    from probscale_edge.runtime.bench import BenchConfig, bench_bundle
    from probscale_edge.text2text import frame_builtin

    import platform

    from probscale_edge.runtime import Predictor
    from probscale_edge.text2text import exact_match

    for r in rows:
        bundle = work / "bundles" / f"t5-scratch-{r['layout']}-{r['task']}-{r['strategy']}"
        if not bundle.exists():
            _log(f"no bundle {bundle} here: not re-timed")
            r.pop("local_bench", None)
            continue
        ev = frame_builtin(r["task"]).eval
        texts = ev.sources[:50]
        local = exact_match(Predictor(bundle).generate(ev.sources), ev.targets)  # the row's number, again, here
        b = bench_bundle(bundle, BenchConfig(warmup_runs=5, num_runs=runs, threads=threads, texts=texts))
        r["local_bench"] = {"threads": threads, "runs": runs, "cpus": os.cpu_count(), "machine": platform.machine(),
                            "ttft_p50_ms": b["time_to_first_token"]["p50_ms"], "request_p50_ms": b["latency"]["p50_ms"],
                            "tokens_per_second_p50": b["tokens_per_second"]["p50"], "model_bytes": b["model_bytes"],
                            "mean_new_tokens": b["new_tokens"]["mean_generated"], "bundle_metric_here": local}
        _log(f"bench {bundle.name}: TTFT p50 {b['time_to_first_token']['p50_ms']:.2f} ms, request p50 "
             f"{b['latency']['p50_ms']:.2f} ms")


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"rows": []}


def _save(rows: list, a, keep: dict | None = None) -> None:
    """Write the rows; ``keep``: the loaded document, whose training machine and note stay (a --bench run)."""
    import platform

    path = Path(a.results)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"what": "from-scratch small T5 (NOT T5-Base), text-to-text framing of built-in tasks, 3x fewer "
                   "non-embedding parameters", "model": {"d_model": a.d_model, "blocks": f"{a.layers}+{a.layers}",
                                                          "heads": a.heads, "d_ff": a.d_ff, "vocab": 4000},
           "machine": {"cpus": os.cpu_count(), "machine": platform.machine(), "train_device": _train_device(),
                       "threads": os.environ.get("OMP_NUM_THREADS", "default")}, "rows": rows}
    for k in ("machine", "note"):
        if keep and k in keep:
            doc[k] = keep[k]
    tmp = path.with_suffix(".json.part")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)


def _speed(r: dict) -> str:
    """Time to first token and tokens per second of the probe-guided bundle: re-timed here (--bench, 1 thread)
    when it was, else as its build measured them (marked *)."""
    b = r.get("local_bench")
    if b:
        return f"{b['ttft_p50_ms']:.2f} | {b['tokens_per_second_p50'] or 0:.0f}"
    return f"{r['ttft_p50_ms']:.2f}* | {r['tokens_per_second_p50'] or 0:.0f}*"


def table(rows: list) -> str:
    head = ("| layout | task | blocks | teacher EM | bundle EM (probe-guided) | retention | bundle EM (drop-top) | "
            "retention | non-emb. ratio | int8 | TTFT p50 ms | tokens/s p50 |")
    lines = [head, "|" + "---|" * 12]
    for layout in LAYOUTS:
        for task in TASKS:
            got = {r["strategy"]: r for r in rows if r["layout"] == layout and r["task"] == task}
            if "probscale" not in got:
                continue
            p, d = got["probscale"], got.get("drop-top")
            blocks = f"enc {p['blocks']['encoder']} dec {p['blocks']['decoder']}" + \
                (f" (drop-top: enc {d['blocks']['encoder']} dec {d['blocks']['decoder']})" if d else "")
            lines.append(f"| {layout} | {task} | {blocks} | {p['teacher']:.4f} | {p['bundle']:.4f} | {p['retention']:.1%} | "
                         + (f"{d['bundle']:.4f} | {d['retention']:.1%} | " if d else "- | - | ")
                         + f"{p['ratio_non_embedding']:.2f}x | {p['precision']} | {_speed(p)} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layout", choices=list(LAYOUTS), action="append")
    ap.add_argument("--task", choices=TASKS, action="append")
    ap.add_argument("--strategy", choices=list(STRATEGIES), action="append")
    ap.add_argument("--table", action="store_true", help="print the table of the rows measured so far")
    ap.add_argument("--bench", action="store_true", help="re-time the rows' bundles on this machine (1 thread)")
    ap.add_argument("--work", default="/work/tmp-t5/bench")
    ap.add_argument("--results", default=str(RESULTS), help="the JSON the rows go to")
    ap.add_argument("--budget", type=float, default=0.33)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--d-ff", type=int, default=512)
    ap.add_argument("--epochs", type=float, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--student-epochs", type=float, default=10)
    ap.add_argument("--student-lr", type=float, default=1e-3)
    ap.add_argument("--patience", type=int, default=4)
    ap.add_argument("--max-train", type=int, default=4000)
    ap.add_argument("--max-length", type=int, default=96)
    a = ap.parse_args()
    doc = _load(Path(a.results))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # reproducible GPU training where torch can
    import torch

    torch.use_deterministic_algorithms(True, warn_only=True)
    work = Path(a.work)
    if a.bench:
        rebench(doc["rows"], work)
        _save(doc["rows"], a, keep=doc)
    if a.table or a.bench:
        print(table(doc["rows"]))
        return
    work.mkdir(parents=True, exist_ok=True)
    _own_cache(work / "cache")
    tok = tokenizer(work, ("sms_spam", "trec6", "rotten_tomatoes"), a.max_train)
    rows = doc["rows"]
    for layout in a.layout or list(LAYOUTS):
        model = t5_folder(work, layout, tok, a)
        for task in a.task or list(TASKS):
            for strategy in a.strategy or list(STRATEGIES):
                r = one_build(a, model, task, strategy, work)
                r["layout"] = layout
                rows = [x for x in rows if (x["layout"], x["task"], x["strategy"]) != (layout, task, strategy)] + [r]
                _save(rows, a)
                _log(f"{layout} {task} {strategy}: teacher {r['teacher']:.4f} bundle {r['bundle']:.4f} "
                     f"retention {r['retention']:.1%} ({r['build_seconds']:.0f} s)")
    print(table(rows))


if __name__ == "__main__":
    main()
