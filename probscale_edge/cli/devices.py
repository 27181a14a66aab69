"""Commands that reach devices: profile (ssh/adb), latency-table, hardware."""

from __future__ import annotations

import json

import click

from probscale_edge.cli import main
from probscale_edge.cli.options import write_json_out
from probscale_edge.errors import ProbscaleError


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
    from probscale_edge.devices import run_profile, summary_line
    from probscale_edge.report import print_bench

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
        write_json_out(res, json_path)


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
    from probscale_edge.config import PRECISIONS, TARGETS, one_of

    one_of("target", target, TARGETS)
    one_of("precision", precision, PRECISIONS)
    if seq < 2 or threads < 1 or runs < 1:
        raise ProbscaleError("--max-length, --threads and --runs must be positive", "e.g. --max-length 128 --threads 1")
    from probscale_edge.latency import measure_table
    from probscale_edge.modeling import EncoderClassifier, load_encoder

    encoder, tokenizer, _ = load_encoder(model, log=lambda m: click.echo(m, err=True))
    clf = EncoderClassifier(encoder, 2).eval()
    pk = {"identity": identity, "port": port, "ssh_options": tuple(ssh_options), "remote_python": remote_python}
    table = measure_table(clf, tokenizer, target=target, seq=seq, threads=threads, runs=runs, precision=precision,
                          ssh=ssh, profile_kwargs=pk if ssh else None, model_name=model,
                          log=lambda m: click.echo(m, err=True))
    write_json_out(table.to_dict(), output)
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
    from probscale_edge.devices import detect_cpu_features, remote_cpu_features

    info = remote_cpu_features(ssh) if ssh else detect_cpu_features()
    click.echo(json.dumps(info, indent=2))
