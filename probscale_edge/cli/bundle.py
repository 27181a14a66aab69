"""Commands on a bundle (torch-free): bench, predict, search (embedding bundles), verify, sign."""

from __future__ import annotations

import json

import click

from probscale_edge.cli import main
from probscale_edge.cli.options import write_json_out
from probscale_edge.errors import ProbscaleError


@main.command()
@click.argument("bundle", type=click.Path())
@click.option("--task", default=None, help="Task whose eval split measures accuracy (default: the bundle's own).")
@click.option("--data", "eval_file", type=click.Path(), default=None, help="Local eval file for accuracy.")
@click.option("--text-column", default="text", show_default=True)
@click.option("--label-column", default="label", show_default=True)
@click.option("--no-accuracy", is_flag=True, help="Latency only.")
@click.option("--max-eval", type=int, default=None)
@click.option("--threads", type=int, default=None, help="Intra-op threads (default: the runtime's).")
@click.option("--backend", default=None, help="onnxruntime | litert (default: from the bundle).")
@click.option("--batch-size", type=int, default=1, show_default=True)
@click.option("--sequence-length", type=int, default=None, help="Pad every input to this many tokens.")
@click.option("--warmup-runs", type=int, default=10, show_default=True)
@click.option("--num-runs", type=int, default=100, show_default=True)
@click.option("--compare", multiple=True, type=click.Path(), help="Other bundles measured in the same run (ratios).")
@click.option("--json", "json_path", type=click.Path(), default=None, help="Write the results as JSON.")
@click.option("--public-key", type=click.Path(dir_okay=False), default=None,
              help="Refuse BUNDLE unless signed with this key's private half (default: $PROBSCALE_EDGE_PUBLIC_KEY).")
def bench(bundle, task, eval_file, text_column, label_column, no_accuracy, max_eval, threads, backend, batch_size,
          sequence_length, warmup_runs, num_runs, compare, json_path, public_key):
    """Benchmark BUNDLE with the torch-free runtime: accuracy, init, p50/p90/p99 latency, bytes, peak RSS."""
    from probscale_edge.runtime.bench import BenchConfig, bench_bundle, check_max_eval
    from probscale_edge.runtime.bundle import load_manifest
    from probscale_edge.report import print_bench

    check_max_eval(max_eval)
    cfg = BenchConfig(warmup_runs=warmup_runs, num_runs=num_runs, batch_size=batch_size, threads=threads,
                      backend=backend, sequence_length=sequence_length)
    results = []
    for b in (bundle, *compare):
        m = load_manifest(b)
        texts = labels = pairs = None
        if not no_accuracy and m.get("kind") == "text2text":  # the task metric on (source, target) pairs
            texts, labels = _eval_pairs(m, task, eval_file, text_column, max_eval)
        elif not no_accuracy and m.get("kind") != "embed":  # an embedding bundle has no labels to score
            texts, labels, pairs = _eval_data(m, task, eval_file, text_column, label_column, max_eval)
        results.append(bench_bundle(b, cfg, texts, labels, pairs, public_key=public_key))
    print_bench(results)
    for r in results:
        if r.get("kind") == "embed":
            click.echo(f"{r['bundle']}: {r['embeddings_per_second']:.1f} embeddings/s at batch {r['batch_size']} "
                       f"(p50 {r['latency']['p50_ms']:.2f} ms), dimension {r['embedding_dimension']}")
        if r.get("kind") == "text2text":
            tps = r["tokens_per_second"]["p50"]
            click.echo(f"{r['bundle']}: time to first token p50 {r['time_to_first_token']['p50_ms']:.2f} ms, "
                       f"{'-' if tps is None else f'{tps:.0f}'} tokens/s (decode, p50), per request p50 "
                       f"{r['latency']['p50_ms']:.2f} ms" + (f", {r['metric']} {r['accuracy']:.4f}" if "metric" in r else ""))
    if json_path:
        write_json_out(results[0] if len(results) == 1 else {"results": results}, json_path)


def _eval_pairs(manifest, task, eval_file, text_column, max_eval):
    """Eval (sources, targets) of a text2text bundle: its own task's eval split unless told otherwise."""
    from probscale_edge.text2text import load_pairs_task

    t = manifest["task"]
    if eval_file:
        d = load_pairs_task(eval_file, eval_file, text_column, t.get("target_column", "target"), max_eval=max_eval)
    elif task or t.get("builtin", False):
        d = load_pairs_task(task or t["name"], max_eval=max_eval)
    else:
        d = load_pairs_task(t["train_file"], t.get("eval_file"), t.get("text_column", text_column),
                            t.get("target_column", "target"), max_eval=max_eval)
    return d.eval.sources, d.eval.targets


def _eval_data(manifest, task, eval_file, text_column, label_column, max_eval):
    """Eval texts/labels for a bundle: its own task's eval split unless told otherwise (no torch needed)."""
    from probscale_edge.data import load_local, load_task, stratified_sample

    if eval_file:
        d = load_local(eval_file, None, text_column, label_column)
        split = d.train  # whole file used as eval: merge both halves
        split.texts += d.eval.texts
        split.labels += d.eval.labels
        names = d.label_names
    else:
        t = manifest["task"]
        name = task or t["name"]
        if not task and not t.get("builtin", False):
            d = load_task(t["train_file"], t.get("eval_file") or None, text_column, label_column,
                          max_train=None)
        else:
            d = load_task(name, max_train=None)
        split, names = d.eval, d.label_names
    labels_b = manifest["labels"]
    if list(names) != list(labels_b):
        remap = {i: labels_b.index(n) for i, n in enumerate(names) if n in labels_b}
        if len(remap) != len(names):
            raise ProbscaleError("the eval data has labels the bundle does not know", "evaluate on the bundle's own task")
        split.labels = [remap[y] for y in split.labels]
    if max_eval and len(split) > max_eval:
        split = split.subset(stratified_sample(split.labels, max_eval))
    return split.texts, split.labels, split.pairs


@main.command()
@click.argument("bundle", type=click.Path())
@click.argument("texts", nargs=-1, required=True)
@click.option("--threads", type=int, default=None)
@click.option("--public-key", type=click.Path(dir_okay=False), default=None,
              help="Refuse BUNDLE unless signed with this key's private half (default: $PROBSCALE_EDGE_PUBLIC_KEY).")
@click.option("--max-new-tokens", type=int, default=None,
              help="A text2text bundle: the most tokens generated per text (default: the bundle's).")
def predict(bundle, texts, threads, public_key, max_new_tokens):
    """Predict labels for TEXTS with BUNDLE (torch-free runtime); a text2text bundle generates (greedy)."""
    from probscale_edge.runtime import Predictor

    p = Predictor(bundle, threads=threads, public_key=public_key)
    if getattr(p, "embedding", None) is not None:  # an embedding bundle: each text's embedding
        for t, e in zip(texts, p.embed(list(texts))):
            click.echo(json.dumps({"text": t, "dimension": len(e), "embedding": [round(float(v), 6) for v in e]}))
        return
    if getattr(p, "generator", None) is not None:
        for t, out in zip(texts, p.generate(list(texts), max_new_tokens=max_new_tokens)):
            click.echo(json.dumps({"text": t, "output": out}, ensure_ascii=False))
        return
    for t, r in zip(texts, p.predict(list(texts))):
        click.echo(json.dumps({"text": t, "label": r.label, "score": round(r.score, 4)}))


@main.command()
@click.argument("bundle", type=click.Path())
@click.argument("queries", nargs=-1, required=True)
@click.option("--corpus", type=click.Path(), required=True,
              help="Texts to search: a .txt file (one text a line) or a .csv/.tsv/.jsonl file (--text-column).")
@click.option("--text-column", default="text", show_default=True)
@click.option("-k", "--top-k", "k", type=int, default=5, show_default=True, help="Results per query.")
@click.option("--threads", type=int, default=None)
@click.option("--public-key", type=click.Path(dir_okay=False), default=None,
              help="Refuse BUNDLE unless signed with this key's private half (default: $PROBSCALE_EDGE_PUBLIC_KEY).")
def search(bundle, queries, corpus, text_column, k, threads, public_key):
    """Semantic search with an embedding BUNDLE: embed the --corpus texts (the index), then print the top-k
    corpus texts for each of QUERIES by cosine similarity (torch-free runtime)."""
    from probscale_edge.runtime import Predictor

    texts = _corpus_texts(corpus, text_column)
    p = Predictor(bundle, threads=threads, public_key=public_key)
    index = p.embed(texts)
    for q, hits in zip(queries, p.search(list(queries), index, k)):
        click.echo(json.dumps({"query": q, "results": [{"rank": r + 1, "row": i, "score": round(sc, 4),
                                                         "text": texts[i]} for r, (i, sc) in enumerate(hits)]},
                              ensure_ascii=False))


def _corpus_texts(corpus, text_column) -> list:
    """The texts of a --corpus file: a .txt (one a line) or a table with a text column; empty ones dropped."""
    from pathlib import Path

    path = Path(corpus)
    if not path.is_file():
        raise ProbscaleError(f"corpus file {corpus} does not exist", "pass --corpus FILE (.txt, one text a line, or .csv)")
    if path.suffix.lower() == ".txt":
        texts = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    else:
        from probscale_edge.data import _read_table

        rows = _read_table(path)
        if not rows or text_column not in rows[0]:
            raise ProbscaleError(f"{corpus} has no text column {text_column!r}", "pass --text-column NAME")
        texts = [str(r.get(text_column) or "").strip() for r in rows]
    texts = [t for t in texts if t]
    if not texts:
        raise ProbscaleError(f"corpus file {corpus} holds no texts", "give at least one non-empty text")
    return texts


@main.command()
@click.argument("bundle", type=click.Path())
@click.option("--public-key", type=click.Path(dir_okay=False), default=None,
              help="Also check BUNDLE's signature (bundle.sig) against this public key (default: $PROBSCALE_EDGE_PUBLIC_KEY).")
def verify(bundle, public_key):
    """Check BUNDLE: its manifest (schema, digest), every file (sha256, size, plain files only, no extras), and
    with a public key its signature."""
    from probscale_edge.runtime import verify_bundle
    from probscale_edge.runtime.bundle import resolve_public_key

    m = verify_bundle(bundle, public_key=public_key)
    signed = "; signature ok" if resolve_public_key(public_key) is not None else ""
    click.echo(f"ok: {len(m['files'])} files match the manifest (format {m['format_version']}){signed}")


@main.command()
@click.argument("bundle", type=click.Path())
@click.option("--key", "key", type=click.Path(dir_okay=False), required=True, help="EC private key (PEM).")
@click.option("--password", default=None, help="The private key's password, if it has one.")
def sign(bundle, key, password):
    """Sign BUNDLE (OpenSSF model-signing, key-based, offline): writes bundle.sig over every file."""
    from probscale_edge.runtime.signing import sign_bundle

    sig = sign_bundle(bundle, key, password=password)
    click.echo(f"signed: {sig}")
