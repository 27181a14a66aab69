"""Commands on a bundle (torch-free): bench, predict, verify, sign."""

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
        if not no_accuracy:
            texts, labels, pairs = _eval_data(m, task, eval_file, text_column, label_column, max_eval)
        results.append(bench_bundle(b, cfg, texts, labels, pairs, public_key=public_key))
    print_bench(results)
    if json_path:
        write_json_out(results[0] if len(results) == 1 else {"results": results}, json_path)


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
def predict(bundle, texts, threads, public_key):
    """Predict labels for TEXTS with BUNDLE (torch-free runtime)."""
    from probscale_edge.runtime import Predictor

    p = Predictor(bundle, threads=threads, public_key=public_key)
    for t, r in zip(texts, p.predict(list(texts))):
        click.echo(json.dumps({"text": t, "label": r.label, "score": round(r.score, 4)}))


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
