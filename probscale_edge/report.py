"""Tables for people: the build summary and benchmark results (rich when available, plain otherwise)."""

from __future__ import annotations


def _fmt_bytes(n):
    return f"{n / 1e6:.1f} MB" if n is not None else "-"


def summary_rows(m: dict) -> list[dict]:
    v = m["validation"]["accuracy"]
    p = m["parameters"]
    lat = m.get("latency", {})
    full_acc = v["full_finetuned_torch_fp32"]
    denom = full_acc or float("nan")  # a teacher at 0 has no retention to show
    return [
        {"model": "full model, fine-tuned (PyTorch fp32)", "accuracy": full_acc, "retention": 1.0,
         "params_total": p["original"]["total"], "params_non_embedding": p["original"]["non_embedding"],
         "bytes": m["sizes"]["full_fp32_weights_bytes"], "p50_ms": lat.get("full_torch_fp32_p50_ms")},
        {"model": "pruned + recovered (ONNX fp32)", "accuracy": v["pruned_onnx_fp32"],
         "retention": v["pruned_onnx_fp32"] / denom, "params_total": p["pruned"]["total"],
         "params_non_embedding": p["pruned"]["non_embedding"], "bytes": m["sizes"]["pruned_onnx_fp32_bytes"],
         "p50_ms": None},
        {"model": f"bundle ({m['model']['format']} {m['model']['precision']}, {m['target']})", "accuracy": v["bundle"],
         "retention": v["bundle"] / denom, "params_total": p["pruned"]["total"],
         "params_non_embedding": p["pruned"]["non_embedding"], "bytes": m["sizes"]["bundle_model_bytes"],
         "p50_ms": lat.get("bundle_p50_ms")},
    ]


def _or_dash(x, fmt=".4f"):
    return "-" if x is None else format(x, fmt)


def _table(title, headers, rows):
    try:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title)
        for h in headers:
            t.add_column(h, justify="left" if h in ("model", "bundle") else "right")
        for r in rows:
            t.add_row(*[str(x) for x in r])
        import shutil

        Console(width=max(150, shutil.get_terminal_size((150, 24)).columns)).print(t)
    except ImportError:
        print(title)
        print(" | ".join(headers))
        for r in rows:
            print(" | ".join(str(x) for x in r))


def print_embed_summary(m: dict) -> None:
    """An embedding bundle: the metrics embedding users read, teacher against bundle (means over the tasks)."""
    means = m["metrics"]["mean"]
    keys = ("mean_cosine", "spearman", "recall@10", "ndcg@10", "knn_accuracy")
    rows = [[name] + [f"{means[name][k]:.4f}" if means[name].get(k) is not None else "-" for k in keys]
            for name in ("teacher", "student_torch_fp32", "student_onnx_fp32", "bundle") if name in means]
    _table(f"probscale-edge build (embed): {m['source_model']['name']} on {m['task']['name']}",
           ["model", "cosine to teacher", "Spearman", "recall@10", "nDCG@10", "k-NN acc"], rows)
    p, r = m["parameters"], m["metrics"].get("mean_recall@10_retention")
    print(f"parameters {p['ratio_total']:.2f}x fewer in total  |  recall@10 kept "
          f"{'-' if r is None else f'{r:.1%}'}  |  bundle {_fmt_bytes(m['sizes']['bundle_model_bytes'])}  |  "
          f"bundle: {m.get('bundle_path', '')}")


def print_summary(m: dict) -> None:
    if m.get("kind") == "embed":
        return print_embed_summary(m)
    print_ladder(m)
    rows = summary_rows(m)
    _table(f"probscale-edge build: {m['source_model']['name']} on {m['task']['name']} "
           f"({m['validation']['eval_examples']} eval examples)",
           ["model", "accuracy", "retention", "params (total)", "params (non-emb.)", "bytes", "p50 ms (batch 1)"],
           [[r["model"], f"{r['accuracy']:.4f}", f"{r['retention']:.1%}", f"{r['params_total']:,}",
             f"{r['params_non_embedding']:,}", _fmt_bytes(r["bytes"]),
             f"{r['p50_ms']:.2f}" if r["p50_ms"] is not None else "-"] for r in rows])
    p = m["parameters"]
    full, b = rows[0], rows[2]
    print(f"layers kept: {m['subnetwork']['spec']['keep_layers']}  |  parameters {p['ratio_total']:.2f}x fewer in total, "
          f"{p['ratio_non_embedding']:.2f}x fewer non-embedding  |  bytes {full['bytes'] / b['bytes']:.1f}x smaller"
          + (f"  |  p50 {full['p50_ms'] / b['p50_ms']:.1f}x faster" if full["p50_ms"] and b["p50_ms"] else ""))
    print(f"int8 gate: {m['quantization'].get('chosen')}  |  ONNX parity max |Δlogit| "
          f"{m['validation']['onnx_parity_max_abs']:.1e}  |  bundle: {m.get('bundle_path', '')}  |  "
          f"build {m.get('build_seconds', 0) / 60:.1f} min")


def print_ladder(m: dict) -> None:
    """The ladder a build walked: every rung, what was done there, and which one shipped."""
    lad = m.get("ladder")
    if not lad or not lad.get("rungs"):
        return
    rows = []
    for i, r in enumerate(lad["rungs"]):
        meets = r.get("meets") or {}
        rows.append([("* " if i == lad.get("chosen") else "  ") + str(r["rung"]), f"{r['target_ratio']:g}x",
                     f"{r['ratio_total']:.2f}x", f"{r['non_embedding_params']:,}", _fmt_bytes(r["bytes"]),
                     f"{r['p50_ms']:.2f}", f"{r['dev_accuracy']:.4f}", f"{r['retention']:.1%}",
                     f"{r['eval_accuracy']:.4f}", r["action"], _or_dash(r["width_only_dev_accuracy"]),
                     "yes" if all(v is not False for v in meets.values()) else "no"])
    c = lad["constraints"]
    limits = [f"retention >= {c['min_retention']:.1%}"] + ([f"size <= {c['max_size_mb']:g} MB"] if c.get("max_size_mb")
                                                           else []) + \
        ([f"p50 <= {c['max_latency_ms']:g} ms"] if c.get("max_latency_ms") else [])
    _table(f"ladder ({', '.join(limits)}; dev split; * shipped{', BEST EFFORT' if lad.get('best_effort') else ''})",
           ["rung", "target", "ratio", "non-emb params", "int8", "p50 ms", "dev acc", "retention", "eval acc",
            "action", "width-only dev", "meets"], rows)
    start = lad.get("start") or {}
    if start.get("why"):
        again = " (missed the floor: walked again from the top)" if start.get("restarted") else ""
        print(f"start: {start['why']}{again}")
    print(f"stopped: {lad['stopped']}")


def print_bench(results: list[dict]) -> None:
    base = results[0]
    rows = []
    for r in results:
        lat = r["latency"]
        rows.append([r["bundle"], r["backend"], r.get("precision") or "-", f"{r.get('accuracy', float('nan')):.4f}"
                     if "accuracy" in r else "-", _fmt_bytes(r["model_bytes"]), f"{r['init_ms']:.0f}",
                     f"{r['first_inference_ms']:.2f}", f"{lat['p50_ms']:.2f}", f"{lat['p90_ms']:.2f}",
                     f"{lat['p99_ms']:.2f}", f"{lat['mean_ms']:.2f}±{lat['std_ms']:.2f}",
                     _fmt_bytes(r["peak_rss_bytes"]),
                     f"{lat['p50_ms'] / base['latency']['p50_ms']:.2f}x" if len(results) > 1 else "-"])
    _table(f"probscale-edge bench (batch {base['batch_size']}, threads {base['threads'] or 'default'}, "
           f"{base['num_runs']} runs after {base['warmup_runs']} warm-up)",
           ["bundle", "backend", "precision", "accuracy", "model", "init ms", "first ms", "p50 ms", "p90 ms",
            "p99 ms", "mean±std ms", "peak RSS", "p50 vs first"], rows)
