"""Thin command line over the Python API. Heavy libraries are imported inside each command, so
``probscale-edge --help`` is instant. Bad input exits with status 2 and one line naming the fix."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from probscale_edge import __version__
from probscale_edge.errors import ProbscaleError

TARGETS = ("arm64", "x86_64", "android", "avx2", "avx512", "avx512_vnni")


def _fail(err: ProbscaleError):
    click.echo(f"error: {err.line()}", err=True)
    sys.exit(2)


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ProbscaleError as e:
            _fail(e)
        except KeyboardInterrupt:
            click.echo("interrupted: nothing was written (partial outputs are removed)", err=True)
            sys.exit(130)
        except OSError as e:
            import errno

            fixes = {errno.ENOSPC: "free disk space or pass another --output / PROBSCALE_EDGE_CACHE location",
                     errno.EDQUOT: "free disk space or pass another --output location",
                     errno.EROFS: "pass an --output on a writable file system",
                     errno.EACCES: "pass an --output you can write to",
                     errno.EPERM: "pass an --output you can write to"}
            if e.errno not in fixes:
                raise
            _fail(ProbscaleError(f"{e.strerror} ({e.filename or 'while writing'}); nothing was kept", fixes[e.errno]))
        except Exception as e:  # noqa: BLE001 - libraries (safetensors, onnx) wrap a full disk in their own errors
            if not _is_disk_full(e):
                raise
            _fail(ProbscaleError("No space left on device while writing; nothing was kept",
                                 "free disk space or pass another --output / PROBSCALE_EDGE_CACHE location"))


def _is_disk_full(e: BaseException) -> bool:
    import errno

    seen = 0
    while e is not None and seen < 10:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e)
        if "No space left on device" in text or "os error 28" in text:
            return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False


def _parse_task(s: str):
    from probscale_edge.pipeline import TaskSpec

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


def _tasks(task, data, eval_path):
    from probscale_edge.pipeline import TaskSpec

    specs = []
    if data:
        specs.append(TaskSpec(data, 1.0, eval_path))
    specs += [_parse_task(t) for t in task]
    if eval_path and not data:
        raise ProbscaleError("--eval needs --data", "pass --data TRAIN_FILE with --eval EVAL_FILE")
    return specs


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


def _read_spec(path) -> dict:
    """A SubnetworkSpec dict from a JSON file: the spec itself, a selection, or a build manifest."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProbscaleError(f"cannot read the spec {path} ({type(e).__name__})", "pass a JSON file with keep_layers")
    for key in ("subnetwork", "spec"):  # a manifest, then a selection
        if isinstance(d, dict) and isinstance(d.get(key), dict) and "keep_layers" not in d:
            d = d[key]
    if not isinstance(d, dict) or not isinstance(d.get("keep_layers"), list) or not d["keep_layers"]:
        raise ProbscaleError(f"{path} has no subnetwork spec (a non-empty keep_layers list)",
                             "pass the JSON written by `probscale-edge select`, or {\"keep_layers\": [...], \"heads\": {...}, \"ffn\": {...}}")
    return {"keep_layers": d["keep_layers"], "heads": d.get("heads", {}), "ffn": d.get("ffn", {})}


def with_data(f):
    for opt in reversed(data_options):
        f = opt(f)
    return f


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="probscale-edge")
def main():
    """probscale-edge: find the subnetwork a task needs, cut it out, and ship it to phones and CPUs.

    \b
    Pipeline: probe -> select -> prune -> recover -> export -> quantize -> bundle -> bench
    Main command:  probscale-edge build --target arm64
    """


@main.command()
@click.option("--model", default="all-MiniLM-L6-v2", show_default=True,
              help="Built-in model name, local Hugging Face folder, or hub id (online).")
@with_data
@click.option("--target", default="arm64", show_default=True, help=f"One of {', '.join(TARGETS)}.")
@click.option("--budget", type=float, default=1 / 3, show_default="0.333",
              help="Fraction of the non-embedding parameters kept.")
@click.option("--strategy", default="probscale", show_default=True, help="probscale | bottom | top | random")
@click.option("--granularity", default="unit", show_default=True,
              help="layer: whole layers only | unit: layers, then attention heads and FFN neurons (Fisher).")
@click.option("--layer-budget", type=float, default=None,
              help="With --granularity unit: budget for choosing layers (default 2 x --budget).")
@click.option("--layer-factor", type=float, default=2.0, show_default=True,
              help="With --granularity unit: layers are chosen under this multiple of --budget, then cut by "
              "heads and neurons (large values keep every layer and cut only units: best at 5x+ compression).")
@click.option("--prune-iterations", type=int, default=1, show_default=True,
              help="With --granularity unit: remove heads and neurons in this many steps, re-scoring the "
              "remaining network before each (1: one-shot).")
@click.option("--spec", "spec_path", type=click.Path(dir_okay=False), default=None,
              help="Cut this subnetwork instead of selecting one: a SubnetworkSpec JSON, or the selection a "
              "build wrote (manifest 'subnetwork').")
@click.option("--max-latency-ms", type=float, default=None,
              help="Latency budget instead of a parameter budget: batch-1 p50 in ms at 128 tokens, 1 thread, "
              "from per-unit latencies measured on the target (see --latency-table).")
@click.option("--latency-table", type=click.Path(dir_okay=False), default=None,
              help="With --max-latency-ms: the table `probscale-edge latency-table` wrote on/for the target "
              "(default: measure one on this machine).")
@click.option("--trim-vocab", is_flag=True, help="Keep only the vocabulary the task's training text uses "
              "(rewrites the tokenizer; WordPiece models).")
@click.option("--embedding-rank", type=int, default=None,
              help="Factorize the word embedding to this rank (truncated SVD, then trained with the student).")
@click.option("--compression", type=float, default=None,
              help="Total-parameter ratio to reach, e.g. 5 for 5x fewer (sets --budget from the embedding's size).")
@click.option("--compression-basis", default="total", show_default=True,
              help="What --compression counts: total | non-embedding parameters.")
@click.option("--recover", "recover_mode", default="distill", show_default=True, help="none | head | finetune | distill")
@click.option("--epochs", type=float, default=3.0, show_default=True)
@click.option("--student-epochs", type=float, default=None,
              help="Recovery epochs (default: --epochs, the teacher's).")
@click.option("--dev-fraction", type=float, default=0.1, show_default=True,
              help="Training data held out for early stopping of the recovery (0: off).")
@click.option("--distill-hidden", type=float, default=0.0, show_default=True,
              help="With --recover distill: weight of hidden-state distillation (each kept layer's output "
              "pulled towards its teacher layer's; e.g. 1). 0: logits only.")
@click.option("--augment", type=int, default=0, show_default=True,
              help="With --recover distill: perturbed copies of each training example (masked words, embedding "
              "neighbours, spans), labelled by the teacher's logits; e.g. 4. 0: the task's examples only.")
@click.option("--batch-size", type=int, default=32, show_default=True,
              help="Global training batch (split across processes under torchrun).")
@click.option("--lr", type=float, default=5e-5, show_default=True, help="Learning rate of the teacher fine-tune.")
@click.option("--student-lr", type=float, default=1e-4, show_default=True, help="Learning rate of the recovery.")
@click.option("--pooling", default="mean", show_default=True, help="mean | cls")
@click.option("--max-accuracy-drop", type=float, default=1.0, show_default=True,
              help="int8 accuracy gate, in points; falls back step by step, down to fp32.")
@click.option("--precision", default="int8", show_default=True, help="int8 | fp32")
@click.option("--tflite", is_flag=True, help="Also ship model.tflite (LiteRT int8, dynamic_wi8_afp32, sequence 128), "
              "checked by the same accuracy gate (needs scripts/install-tflite.sh).")
@click.option("--quant-mode", default="dynamic", show_default=True,
              help="dynamic | static (QDQ, activation ranges calibrated on the task's training text)")
@click.option("--max-eval", type=int, default=None, help="Cap on eval examples (stratified).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--output", type=click.Path(), default=None, help="Bundle folder (default bundles/MODEL-TASK-TARGET).")
@click.option("--force", is_flag=True, help="Replace an existing bundle folder (atomically).")
@click.option("--allow-pickle", is_flag=True, help="Allow pytorch_model.bin checkpoints (pickle can run code).")
@click.option("--no-cache", is_flag=True, help="Do not reuse a cached fine-tuned teacher.")
@click.option("--resume", is_flag=True, help="Reuse stages an interrupted build finished (content-hash checkpoints).")
@click.option("--json", "json_path", type=click.Path(), default=None, help="Also write the summary as JSON.")
def build(model, task, data, eval_path, text_column, label_column, text_pair_column, max_train, target, budget,
          strategy, granularity, layer_budget, layer_factor, prune_iterations, max_latency_ms, latency_table, spec_path, trim_vocab, embedding_rank, compression, compression_basis, recover_mode, epochs,
          student_epochs, dev_fraction, distill_hidden, augment, batch_size, lr, student_lr, pooling, max_accuracy_drop,
          precision, tflite, quant_mode, max_eval, seed, output, force,
          allow_pickle, no_cache, resume, json_path):
    """Build a pruned, quantized bundle from a pre-trained model and a task (default: MiniLM on rotten_tomatoes)."""
    if target not in TARGETS:
        raise ProbscaleError(f"unknown target {target!r}", f"use --target {'|'.join(TARGETS)}")
    if not (0 < budget <= 1):
        raise ProbscaleError(f"--budget {budget} is not a fraction in (0, 1]",
                             "pass the fraction of non-embedding parameters to keep, e.g. --budget 0.33")
    if compression is not None and compression <= 1:
        raise ProbscaleError(f"--compression {compression:g} must be above 1", "pass e.g. --compression 5 for 5x fewer parameters")
    if compression_basis not in ("total", "non-embedding"):
        raise ProbscaleError(f"unknown --compression-basis {compression_basis!r}", "use total or non-embedding")
    if not 0 <= dev_fraction < 0.5:
        raise ProbscaleError(f"--dev-fraction {dev_fraction:g} is not in [0, 0.5)", "pass e.g. 0.1, or 0 to turn early stopping off")
    if prune_iterations < 1:
        raise ProbscaleError(f"--prune-iterations {prune_iterations} must be at least 1",
                             "pass 1 for one-shot pruning or e.g. 8 for re-scoring in 8 steps")
    if distill_hidden < 0 or (distill_hidden > 0 and recover_mode != "distill"):
        raise ProbscaleError(f"--distill-hidden {distill_hidden:g} with --recover {recover_mode}",
                             "give a weight >= 0 (e.g. 1), together with --recover distill")
    if augment < 0 or (augment > 0 and recover_mode != "distill"):
        raise ProbscaleError(f"--augment {augment} with --recover {recover_mode}",
                             "give a count >= 0 (e.g. 4), together with --recover distill")
    spec = _read_spec(spec_path) if spec_path else None
    if quant_mode not in ("dynamic", "static"):
        raise ProbscaleError(f"unknown --quant-mode {quant_mode!r}", "use --quant-mode dynamic or static")
    from probscale_edge.pipeline import BuildConfig, build as run_build
    from probscale_edge.probe import ProbeConfig
    from probscale_edge.recover import RecoverConfig
    from probscale_edge.select import SelectConfig

    specs = _tasks(task, data, eval_path) or _tasks(("rotten_tomatoes",), None, None)
    cfg = BuildConfig(model=model, tasks=specs, output=output, target=target, budget=budget, text_column=text_column,
                      label_column=label_column, text_pair_column=text_pair_column, pooling=pooling,
                      max_train=max_train, max_eval=max_eval, seed=seed, force=force, allow_pickle=allow_pickle,
                      use_cache=not no_cache, resume=resume, trim_vocab=trim_vocab, embedding_rank=embedding_rank,
                      compression=compression, compression_basis=compression_basis, spec=spec, probe=ProbeConfig(pooling=pooling),
                      max_latency_ms=max_latency_ms, latency_table=latency_table, tflite=tflite,
                      select=SelectConfig(budget=budget, strategy=strategy, granularity=granularity,
                                          layer_budget=layer_budget, layer_factor=layer_factor,
                                          prune_iterations=prune_iterations),
                      recover=RecoverConfig(mode=recover_mode, epochs=epochs, seed=seed, batch_size=batch_size,
                                            lr=lr, student_lr=student_lr, dev_fraction=dev_fraction,
                                            student_epochs=student_epochs, hidden_weight=distill_hidden,
                                            augment=augment),
                      quantize={"max_accuracy_drop": max_accuracy_drop, "precision": precision,
                                "mode": quant_mode})
    from probscale_edge import distributed as dist

    try:
        manifest = run_build(cfg)
    finally:
        dist.shutdown()
    if not dist.is_main():  # under torchrun, rank 0 reports and writes
        return
    from probscale_edge.report import summary_rows, print_summary

    print_summary(manifest)
    if json_path:
        from probscale_edge.runtime.bench import write_json

        write_json({"summary": summary_rows(manifest), "manifest": manifest}, json_path)


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
def bench(bundle, task, eval_file, text_column, label_column, no_accuracy, max_eval, threads, backend, batch_size,
          sequence_length, warmup_runs, num_runs, compare, json_path):
    """Benchmark BUNDLE with the torch-free runtime: accuracy, init, p50/p90/p99 latency, bytes, peak RSS."""
    from probscale_edge.runtime.bench import BenchConfig, bench_bundle, write_json
    from probscale_edge.runtime.bundle import load_manifest
    from probscale_edge.report import print_bench

    results = []
    for b in (bundle, *compare):
        m = load_manifest(b)
        texts = labels = pairs = None
        if not no_accuracy:
            texts, labels, pairs = _eval_data(m, task, eval_file, text_column, label_column, max_eval)
        cfg = BenchConfig(warmup_runs=warmup_runs, num_runs=num_runs, batch_size=batch_size, threads=threads,
                          backend=backend, sequence_length=sequence_length)
        results.append(bench_bundle(b, cfg, texts, labels, pairs))
    print_bench(results)
    if json_path:
        write_json(results[0] if len(results) == 1 else {"results": results}, json_path)


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
            d = load_task(name, max_train=1)
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
def predict(bundle, texts, threads):
    """Predict labels for TEXTS with BUNDLE (torch-free runtime)."""
    from probscale_edge.runtime import Predictor

    p = Predictor(bundle, threads=threads)
    for t, r in zip(texts, p.predict(list(texts))):
        click.echo(json.dumps({"text": t, "label": r.label, "score": round(r.score, 4)}))


@main.command()
@click.argument("bundle", type=click.Path())
def verify(bundle):
    """Check every file of BUNDLE against its manifest (sha256, size, no extra files)."""
    from probscale_edge.runtime import verify_bundle

    m = verify_bundle(bundle)
    click.echo(f"ok: {len(m['files'])} files match the manifest (format {m['format_version']})")


@main.command()
@click.argument("bundle", type=click.Path())
@click.option("--ssh", default=None, help="user@host of a device with python3 + numpy, tokenizers, onnxruntime.")
@click.option("--adb", default=None, help="Serial of an Android device (adb) with a Python environment.")
@click.option("-i", "--identity", type=click.Path(), default=None, help="SSH private key.")
@click.option("--port", type=int, default=22, show_default=True)
@click.option("--ssh-option", "ssh_options", multiple=True, help="Extra `-o` option for ssh/scp (repeatable).")
@click.option("--remote-dir", default=None, help="Working folder on the device.")
@click.option("--remote-python", default="python3", show_default=True)
@click.option("--emulate-arm64", is_flag=True, help="Run under qemu aarch64 on the remote (correctness only).")
@click.option("--threads", type=int, default=None)
@click.option("--batch-size", type=int, default=1, show_default=True)
@click.option("--warmup-runs", type=int, default=10, show_default=True)
@click.option("--num-runs", type=int, default=100, show_default=True)
@click.option("--keep-remote", is_flag=True, help="Leave the pushed files on the device.")
@click.option("--json", "json_path", type=click.Path(), default=None)
def profile(bundle, ssh, adb, identity, port, ssh_options, remote_dir, remote_python, emulate_arm64, threads,
            batch_size, warmup_runs, num_runs, keep_remote, json_path):
    """Push BUNDLE and the runtime to a device (--ssh or --adb), benchmark there, bring the JSON back."""
    from probscale_edge.profile import run_profile, summary_line
    from probscale_edge.report import print_bench
    from probscale_edge.runtime.bench import write_json

    if bool(ssh) == bool(adb):
        raise ProbscaleError("profile needs exactly one device", "pass --ssh user@host or --adb SERIAL")
    kw = {}
    if remote_dir:
        kw["remote_dir"] = remote_dir
    res = run_profile(bundle, ssh=ssh, adb=adb, identity=identity, port=port, remote_python=remote_python,
                      bench_kwargs={"threads": threads, "batch_size": batch_size, "warmup_runs": warmup_runs,
                                    "num_runs": num_runs},
                      emulate_arm64=emulate_arm64, ssh_options=tuple(ssh_options), keep_remote=keep_remote,
                      log=lambda m: click.echo(m, err=True), **kw)
    print_bench([res])
    click.echo(summary_line(res))
    for w in res.get("warnings", []):
        click.echo(f"warning: {w}", err=True)
    if json_path:
        write_json(res, json_path)


@main.command("latency-table")
@click.option("--model", default="all-MiniLM-L6-v2", show_default=True,
              help="Built-in model name or local Hugging Face folder (its shape is what is timed).")
@click.option("--target", default="arm64", show_default=True, help="Quantization preset of the timed bundles.")
@click.option("--max-length", "seq", type=int, default=128, show_default=True, help="Sequence length timed.")
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--runs", type=int, default=50, show_default=True, help="Timed runs per shape.")
@click.option("--precision", default="int8", show_default=True, help="int8 | fp32")
@click.option("--ssh", default=None, help="Time on user@host (python3 with numpy, tokenizers, onnxruntime).")
@click.option("-i", "--identity", type=click.Path(), default=None, help="SSH private key.")
@click.option("--port", type=int, default=22, show_default=True)
@click.option("--ssh-option", "ssh_options", multiple=True, help="Extra `-o` option for ssh/scp (repeatable).")
@click.option("--remote-python", default="python3", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="Table JSON to write.")
def latency_table(model, target, seq, threads, runs, precision, ssh, identity, port, ssh_options, remote_python, output):
    """Time uniformly pruned copies of MODEL on this machine or a device (--ssh) and fit per-layer,
    per-head and per-neuron latencies, for `build --max-latency-ms`."""
    from probscale_edge.converters.quantize import check_target

    check_target(target)
    if seq < 2 or threads < 1 or runs < 1:
        raise ProbscaleError("--max-length, --threads and --runs must be positive", "e.g. --max-length 128 --threads 1")
    from probscale_edge.latency import measure_table
    from probscale_edge.modeling import EncoderClassifier, load_encoder
    from probscale_edge.runtime.bench import write_json

    encoder, tokenizer, _ = load_encoder(model, log=lambda m: click.echo(m, err=True))
    clf = EncoderClassifier(encoder, 2).eval()
    pk = {"identity": identity, "port": port, "ssh_options": tuple(ssh_options), "remote_python": remote_python}
    table = measure_table(clf, tokenizer, target=target, seq=seq, threads=threads, runs=runs, precision=precision,
                          ssh=ssh, profile_kwargs=pk if ssh else None, model_name=model,
                          log=lambda m: click.echo(m, err=True))
    write_json(table.to_dict(), output)
    click.echo(f"{'layers':>6} {'heads':>5} {'neurons':>7} {'p50 ms':>8} {'fit ms':>8}")
    for p in table.points:
        click.echo(f"{p['layers']:>6} {p['heads']:>5} {p['ffn']:>7} {p['p50_ms']:>8.2f} {p['predicted_ms']:>8.2f}")
    click.echo(f"ms = {table.base_ms:.3f} + {table.layer_ms:.3f} x layers + {table.head_ms:.4f} x heads + "
               f"{table.neuron_ms * 1000:.3f}e-3 x neurons   (max fit error {table.max_relative_error:.1%}; "
               f"{table.device.get('transport', '')} {table.device.get('target', table.device.get('processor', ''))})")
    click.echo(f"wrote {output}")


@main.command()
@click.option("--ssh", default=None, help="Read the CPU features of user@host instead of this machine.")
def hardware(ssh):
    """Detect CPU features (AVX2/AVX-512/VNNI, ARM dot product/i8mm) and the int8 preset to use."""
    from probscale_edge.arm64 import detect_cpu_features

    if ssh:
        import subprocess

        r = subprocess.run(["ssh", "-o", "BatchMode=yes", ssh, "cat /proc/cpuinfo; uname -m"], capture_output=True,
                           text=True, timeout=60)
        if r.returncode != 0:
            raise ProbscaleError(f"could not read /proc/cpuinfo over ssh ({r.stderr.strip()[:120]})",
                                 "check the host and your ssh key")
        lines = r.stdout.rstrip().splitlines()
        info = detect_cpu_features("\n".join(lines[:-1]), machine=lines[-1].strip())
    else:
        info = detect_cpu_features()
    click.echo(json.dumps(info, indent=2))


# ------------------------------------------------------------------------------ single stages

@main.command()
@click.option("--model", default="all-MiniLM-L6-v2", show_default=True)
@with_data
@click.option("--pooling", default="mean", show_default=True)
@click.option("--max-examples", type=int, default=1500, show_default=True)
@click.option("-o", "--output", type=click.Path(), required=True, help="probe report (JSON)")
def probe(model, task, data, eval_path, text_column, label_column, text_pair_column, max_train, pooling, max_examples,
          output):
    """Stage 1: linear probes on every layer's pooled representation (task-weighted)."""
    from probscale_edge.data import load_task
    from probscale_edge.modeling import EncoderClassifier, load_classifier, load_encoder
    from probscale_edge.probe import ProbeConfig, probe_layers
    from probscale_edge.runtime.bench import write_json
    from pathlib import Path

    specs = _tasks(task, data, eval_path) or _tasks(("rotten_tomatoes",), None, None)
    tasks = [load_task(s.spec, s.eval, text_column, label_column, text_pair_column, max_train) for s in specs]
    if (Path(model) / "probscale.json").exists():
        m, tok, _ = load_classifier(model)
    else:
        enc, tok, _ = load_encoder(model)
        m = EncoderClassifier(enc, tasks[0].num_labels, pooling)
    from probscale_edge import distributed as dist

    with dist.collective():  # under torchrun: feature extraction sharded over the ranks
        rep = probe_layers(m, tok, tasks, [s.weight for s in specs],
                           ProbeConfig(max_examples=max_examples, pooling=pooling))
    dist.shutdown()
    if not dist.is_main():
        return
    write_json(rep.to_dict(), output)
    click.echo("weighted probe accuracy by hidden state: " + " ".join(f"{a:.3f}" for a in rep.weighted))


@main.command("select")
@click.option("--model", default="all-MiniLM-L6-v2", show_default=True)
@click.option("--probe", "probe_path", type=click.Path(exists=True), required=True, help="probe report from `probe`")
@click.option("--budget", type=float, default=1 / 3, show_default="0.333")
@click.option("--strategy", default="probscale", show_default=True)
@click.option("-o", "--output", type=click.Path(), required=True, help="selection (JSON, holds the spec)")
def select_cmd(model, probe_path, budget, strategy, output):
    """Stage 2: choose the layer subset under a parameter budget (additive ranking only; `build` also
    probes the composed candidates)."""
    from pathlib import Path

    from probscale_edge.modeling import EncoderClassifier, load_classifier, load_encoder
    from probscale_edge.probe import ProbeReport
    from probscale_edge.runtime.bench import write_json
    from probscale_edge.select import SelectConfig, select_layers

    rep = ProbeReport(**{k: v for k, v in json.loads(Path(probe_path).read_text()).items()})
    if (Path(model) / "probscale.json").exists():
        m, _, _ = load_classifier(model)
    else:
        enc, _, _ = load_encoder(model)
        m = EncoderClassifier(enc, 2)
    sel = select_layers(m, rep, SelectConfig(budget=budget, strategy=strategy, granularity="layer"))
    write_json(sel.to_dict(), output)
    click.echo(f"kept layers {sel.spec.keep_layers}: {sel.kept_fraction:.3f} of non-embedding parameters")


@main.command()
@click.option("--model", required=True, help="A model folder written by probscale-edge (or a HF folder + --num-labels).")
@click.option("--spec", "spec_path", type=click.Path(exists=True), required=True, help="selection or spec JSON")
@click.option("--num-labels", type=int, default=2, show_default=True)
@click.option("-o", "--output", type=click.Path(), required=True)
def prune(model, spec_path, num_labels, output):
    """Stage 3: physically cut MODEL to the spec; the result saves and reloads as a model folder."""
    from pathlib import Path

    from probscale_edge.modeling import EncoderClassifier, load_classifier, load_encoder, save_classifier
    from probscale_edge.prune import SubnetworkSpec, apply_spec

    d = json.loads(Path(spec_path).read_text())
    spec = SubnetworkSpec.from_dict(d.get("spec", d))
    if (Path(model) / "probscale.json").exists():
        m, tok, meta = load_classifier(model)
        labels = meta["labels"]
    else:
        enc, tok, _ = load_encoder(model)
        m = EncoderClassifier(enc, num_labels)
        labels = [str(i) for i in range(num_labels)]
    p = apply_spec(m, spec, inplace=True)
    save_classifier(p, tok, Path(output), labels, extra={"spec": spec.to_dict()})
    c = p.param_counts()
    click.echo(f"pruned model: {c['total']:,} parameters ({c['non_embedding']:,} non-embedding) -> {output}")


@main.command("prune-seq2seq")
@click.option("--model", required=True, type=click.Path(exists=True, file_okay=False),
              help="A T5 (v1.0) encoder-decoder folder (transformers layout, or one this command wrote).")
@click.option("--spec", "spec_path", type=click.Path(exists=True), default=None,
              help='JSON: {"encoder": {keep_layers, heads, ffn}, "decoder": {keep_layers, heads, ffn}, "cross_heads": {}}')
@click.option("--budget", type=float, default=None,
              help="Instead of --spec: keep this fraction of the blocks' head and FFN parameters, chosen by Fisher "
              "importance for the text-to-text loss on --data.")
@click.option("--data", "data_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="CSV with source and target columns (the pairs --budget scores units on; 256 are used).")
@click.option("-o", "--output", type=click.Path(), required=True, help="Folder for the pruned model.")
@click.option("--onnx", "with_onnx", is_flag=True,
              help="Also export encoder/decoder/decoder_with_past ONNX (key/value cache) into OUTPUT/onnx, "
              "checked by greedy generation against PyTorch.")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
def prune_seq2seq(model, spec_path, budget, data_path, output, with_onnx, force):
    """Cut a T5 encoder-decoder (text-to-text) to a spec: blocks, self/cross-attention heads, FFN neurons.

    The pruned model is reloaded and compared with the in-memory one (and with --onnx, exported and
    generated with) before the folder appears; a failed check leaves nothing behind."""
    from pathlib import Path

    from probscale_edge.seq2seq import Seq2SeqSpec, prune_folder

    spec = pairs = None
    if spec_path:
        try:
            d = json.loads(Path(spec_path).read_text())
            spec = Seq2SeqSpec.from_dict(d.get("spec", d))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ProbscaleError(f"{spec_path} is not a seq2seq spec ({type(e).__name__}: {e})",
                                 'give {"encoder": {"keep_layers": [...]}, "decoder": {"keep_layers": [...]}}') from None
    if data_path:
        import csv

        with open(data_path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if not rows or not {"source", "target"} <= set(rows[0]):
            raise ProbscaleError(f"{data_path} needs source and target columns (found {sorted(rows[0]) if rows else 'no rows'})",
                                 "write a CSV with a header line: source,target")
        pairs = [r["source"] for r in rows], [r["target"] for r in rows]
    rep = prune_folder(model, output, spec, budget, pairs, onnx=with_onnx, force=force,
                       log=lambda m: click.echo(m, err=True))
    before, after = rep["parameters"]["original"], rep["parameters"]["pruned"]
    click.echo(f"pruned T5: {after['total']:,} parameters ({after['non_embedding']:,} non-embedding; was "
               f"{before['total']:,} / {before['non_embedding']:,}) -> {output}")


@main.command()
@click.option("--model", required=True, help="Model folder to train (from `prune`, or a HF folder).")
@with_data
@click.option("--teacher", type=click.Path(exists=True), default=None, help="Fine-tuned teacher folder for --mode distill.")
@click.option("--mode", default="finetune", show_default=True, help="none | head | finetune | distill")
@click.option("--epochs", type=float, default=3.0, show_default=True)
@click.option("-o", "--output", type=click.Path(), required=True)
def recover(model, task, data, eval_path, text_column, label_column, text_pair_column, max_train, teacher, mode, epochs,
            output):
    """Stage 4: recover accuracy (fine-tune, or distill from a teacher) and report eval accuracy."""
    from pathlib import Path

    from probscale_edge.data import load_task
    from probscale_edge.modeling import EncoderClassifier, load_classifier, load_encoder, predict_logits, save_classifier
    from probscale_edge.pipeline import accuracy
    from probscale_edge.recover import RecoverConfig, recover as run
    from probscale_edge import distributed as dist

    specs = _tasks(task, data, eval_path) or _tasks(("rotten_tomatoes",), None, None)
    t = load_task(specs[0].spec, specs[0].eval, text_column, label_column, text_pair_column, max_train)
    if (Path(model) / "probscale.json").exists():
        m, tok, meta = load_classifier(model)
    else:
        enc, tok, _ = load_encoder(model)
        m = EncoderClassifier(enc, t.num_labels)
    tl = None
    if mode == "distill":
        if not teacher:
            raise ProbscaleError("--mode distill needs --teacher FOLDER", "pass a fine-tuned teacher or use --mode finetune")
        tm, ttok, _ = load_classifier(teacher)
        with dist.collective():
            tl = predict_logits(tm, ttok, t.train.texts, t.train.pairs)
    rep = run(m, tok, t.train, RecoverConfig(mode=mode, epochs=epochs), teacher_logits=tl)
    with dist.collective():
        acc = accuracy(predict_logits(m, tok, t.eval.texts, t.eval.pairs), t.eval.labels)
    dist.shutdown()
    if not dist.is_main():  # under torchrun, rank 0 writes
        return
    save_classifier(m, tok, Path(output), t.label_names, extra={"recover": mode, "accuracy": acc})
    click.echo(f"eval accuracy {acc:.4f} after {rep.get('steps', 0)} steps -> {output}")


@main.command()
@click.option("--model", required=True, help="Model folder written by probscale-edge.")
@click.option("-o", "--output", type=click.Path(), required=True, help="ONNX file")
@click.option("--opset", type=int, default=17, show_default=True)
def export(model, output, opset):
    """Stage 5: export a model folder to ONNX and check parity against PyTorch."""
    from probscale_edge.converters.onnx_export import ExportConfig, export_onnx
    from probscale_edge.modeling import load_classifier

    m, tok, _ = load_classifier(model)
    texts = ["a parity sample", "another, somewhat longer parity sample for the exported graph", "short"]
    rep = export_onnx(m, tok, output, ExportConfig(opset=opset), parity_texts=texts,
                      log=lambda s: click.echo(s, err=True))
    if not rep["parity_pass"]:
        raise ProbscaleError(f"ONNX output differs from PyTorch by {rep['parity_max_abs']:.2e}", "try --opset 18")
    click.echo(f"{output}: {rep['bytes']:,} bytes")


@main.command()
@click.option("--onnx", "onnx_path", type=click.Path(exists=True), required=True)
@click.option("--target", default="arm64", show_default=True)
@click.option("-o", "--output", type=click.Path(), required=True)
def quantize(onnx_path, target, output):
    """Stage 6: dynamic int8 quantization with the target's preset (the build adds the accuracy gate)."""
    from probscale_edge.converters.quantize import PRESETS, check_target, quantize_dynamic_int8

    check_target(target)
    info = quantize_dynamic_int8(onnx_path, output, PRESETS[target])
    click.echo(f"{output}: {info['bytes']:,} bytes ({target} preset: {PRESETS[target]})")


@main.command()
@click.option("--clear", is_flag=True, help="Delete the cache folder.")
def cache(clear):
    """Show (or clear) the cache: downloaded assets, fine-tuned teachers, probe features, finished stages."""
    import shutil

    from probscale_edge.assets import cache_dir

    d = cache_dir()
    if clear:
        shutil.rmtree(d, ignore_errors=True)
        click.echo(f"removed {d}")
        return
    size = sum(p.stat().st_size for p in d.rglob("*") if p.is_file()) if d.exists() else 0
    click.echo(f"{d}: {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
