"""`probscale-edge build`: every flag is a field of probscale_edge.config.BuildConfig, by the same name."""

from __future__ import annotations


import click

from probscale_edge.cli import main
from probscale_edge.cli.options import check_json_path, read_spec, task_specs, with_data, write_json_out
from probscale_edge.config import TARGETS

_OPTIONS = [
    click.option("--kind", default="classify", show_default=True,
                 help="classify | embed (a sentence-embedding bundle: the model as published, distilled; "
                 "`--task embed` is the same) | text2text (T5: --text-column to --target-column)."),
    click.option("--target-column", default="target", show_default=True,
                 help="With --kind text2text: the column holding the target text."),
    click.option("--model", default="all-MiniLM-L6-v2", show_default=True,
                 help="Built-in model name, local Hugging Face folder, or hub id (online)."),
    click.option("--target", default="arm64", show_default=True, help=f"One of {', '.join(TARGETS)}."),
    click.option("--min-retention", type=float, default=0.99, show_default=True,
                 help="Share of the full fine-tuned model's accuracy the bundle keeps (on a dev split held out of the "
                 "training data): the build ships the smallest rung of its ladder that does."),
    click.option("--max-size-mb", type=float, default=None, help="Largest shipped model file, in MB (10^6 bytes)."),
    click.option("--ladder", type=str, default=None, callback=lambda c, p, v: _ratios(v),
                 help="The sizes the build tries, in times fewer total parameters (default 2,3,5,8,12,16)."),
    click.option("--best-effort", is_flag=True, help="When no rung meets every constraint, ship the closest one "
                 "(marked so in the manifest) instead of failing."),
    click.option("--time-budget", type=float, default=20.0, show_default=True,
                 help="Minutes for the whole build: no rung starts that would end past them (0: no cap)."),
    click.option("--rung-epochs", type=float, default=1.0, show_default=True,
                 help="Distillation epochs per rung (the student carries them down the ladder)."),
    click.option("--layer-floor", type=float, default=0.5, show_default=True,
                 help="No kept layer falls below this share of the average kept heads and neurons."),
    click.option("--layer-share", type=float, default=0.45, show_default=True,
                 help="Where the recipe picks the embedding rank, a deep rung lowers it until the layers keep "
                 "this share of the rung's parameters."),
    click.option("--search", default="auto", show_default=True,
                 help="auto: the ladder unless --budget/--compression/--spec fix the size | ladder | single."),
    click.option("--recipe", "recipe_path", type=click.Path(), default=None,
                 help="Replay a recipe (TOML or YAML: `probscale-edge recipe BUNDLE` prints one); flags given "
                 "on the command line win."),
    click.option("--budget", type=float, default=None,
                 help="One size instead of the ladder: fraction of the layers' parameters kept (1/3 with --search "
                 "single)."),
    click.option("--strategy", default="probscale", show_default=True, help="probscale | bottom | top | random"),
    click.option("--granularity", default="unit", show_default=True,
                 help="layer: whole layers only | unit: layers, then attention heads and FFN neurons (Fisher)."),
    click.option("--layer-budget", type=float, default=None,
                 help="With --granularity unit: budget for choosing layers (default --layer-factor x --budget)."),
    click.option("--layer-factor", type=float, default=2.0, show_default=True,
                 help="With --granularity unit: layers are chosen under this multiple of --budget, then cut by heads "
                 "and neurons (large values keep every layer and cut only units: best at 5x+ compression)."),
    click.option("--prune-iterations", type=int, default=None, show_default="the recipe's: 2 per rung, else 1",
                 help="With --granularity unit: remove heads and neurons in this many steps, re-scoring the remaining "
                 "network before each (1: one-shot)."),
    click.option("--spec", "spec_path", type=click.Path(), default=None,
                 help="Cut this subnetwork instead of selecting one: a SubnetworkSpec JSON, or the selection a build "
                 "wrote (manifest 'subnetwork')."),
    click.option("--max-latency-ms", type=float, default=None,
                 help="Latency budget instead of a parameter budget: batch-1 p50 in ms at the model's length, 1 thread, "
                 "from per-unit latencies measured on the target (see --latency-table). A ladder build also keeps no more "
                 "layers than the table says the last rung can afford."),
    click.option("--latency-table", type=click.Path(), default=None,
                 help="With --max-latency-ms: the table `probscale-edge latency-table` wrote on/for the target "
                 "(default: measure one on this machine)."),
    click.option("--trim-vocab/--no-trim-vocab", default=None, help="Keep only the vocabulary the task's training "
                 "text uses (rewrites the tokenizer; WordPiece models). Default: the recipe's (on for ladder builds "
                 "of WordPiece models)."),
    click.option("--embedding-rank", type=int, default=None,
                 help="Factorize the word embedding to this rank (truncated SVD, then trained with the student); 0: "
                 "off. Default: the recipe's (a third of the width in ladder builds: 128 for a hidden size of 384)."),
    click.option("--embedding-dense-rows", type=int, default=0, show_default=True,
                 help="With a factorized embedding: the K tokens the training text uses most keep their exact rows "
                 "(hidden-wide instead of rank-wide; a lower --embedding-rank pays for them)."),
    click.option("--compression", type=float, default=None,
                 help="Total-parameter ratio to reach, e.g. 5 for 5x fewer (sets --budget from the embedding's size)."),
    click.option("--compression-basis", default="total", show_default=True,
                 help="What --compression counts: total | non-embedding parameters."),
    click.option("--recover-mode", "--recover", "recover_mode", default="distill", show_default=True,
                 help="none | head | finetune | distill (--recover is the same flag)."),
    click.option("--epochs", type=float, default=3.0, show_default=True, help="Epochs of the teacher fine-tune."),
    click.option("--student-epochs", type=float, default=None, help="Recovery epochs (default: --epochs)."),
    click.option("--dev-fraction", type=float, default=0.1, show_default=True,
                 help="Training data held out for early stopping of the recovery (0: off)."),
    click.option("--distill-hidden", type=float, default=None, show_default="the recipe's: 1 in ladder builds, else 0",
                 help="With --recover-mode distill: weight of hidden-state distillation (each kept layer's output "
                 "pulled towards its teacher layer's; e.g. 1). 0: logits only."),
    click.option("--augment", type=int, default=None, show_default="the recipe's: 1 in ladder builds, else 0",
                 help="With --recover-mode distill: perturbed copies of each training example (masked words, "
                 "embedding neighbours, spans), labelled by the teacher's logits; e.g. 4. 0: the task's examples only."),
    click.option("--distill-texts", type=click.Path(), default=None,
                 help="With --kind embed: a file of extra texts (its --text-column) the student is also distilled "
                 "on (the teacher's embeddings of them); never scored, not used to trim the vocabulary; the tasks' "
                 "own texts are dropped from it."),
    click.option("--batch-size", type=int, default=32, show_default=True,
                 help="Global training batch (split across processes under torchrun)."),
    click.option("--lr", type=float, default=5e-5, show_default=True, help="Learning rate of the teacher fine-tune."),
    click.option("--student-lr", type=float, default=1e-4, show_default=True, help="Learning rate of the recovery."),
    click.option("--pooling", default="mean", show_default=True, help="mean | cls"),
    click.option("--max-length", type=int, default=128, show_default=True,
                 help="The most tokens per input, in every stage (lowered to what the model and tokenizer take)."),
    click.option("--max-accuracy-drop", type=float, default=1.0, show_default=True,
                 help="int8 accuracy gate, in points; falls back step by step, down to fp32."),
    click.option("--precision", default="int8", show_default=True, help="int8 | fp32"),
    click.option("--tflite", is_flag=True, help="Also ship model.tflite (LiteRT int8, dynamic_wi8_afp32), checked by "
                 "the same accuracy gate (needs scripts/install-tflite.sh)."),
    click.option("--quant-mode", default="dynamic", show_default=True,
                 help="dynamic | static (QDQ, activation ranges calibrated on the task's training text)"),
    click.option("--max-eval", type=int, default=None, help="Cap on eval examples (stratified)."),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("-o", "--output", type=click.Path(), default=None, help="Bundle folder (default bundles/MODEL-TASK-TARGET)."),
    click.option("--force", is_flag=True, help="Replace an existing bundle folder (atomically)."),
    click.option("--allow-pickle", is_flag=True, help="Allow pytorch_model.bin checkpoints (pickle can run code)."),
    click.option("--allow-unused-weights", is_flag=True,
                 help="Build even when the checkpoint holds weights this architecture does not use (they are dropped)."),
    click.option("--no-cache", is_flag=True, help="Do not reuse a cached fine-tuned teacher."),
    click.option("--resume", is_flag=True, help="Reuse stages an interrupted build finished (content-hash checkpoints)."),
    click.option("--json", "json_path", type=click.Path(), default=None, help="Also write the summary as JSON."),
]


def _options(f):
    for opt in reversed(_OPTIONS):
        f = opt(f)
    return with_data(f)


def _ratios(v):
    if v is None:
        return None
    try:
        return tuple(float(x) for x in v.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"{v!r} is not a comma-separated list of ratios, e.g. 2,3,5,8") from None


def _given(ctx, name: str) -> bool:
    """Whether the command line (or the environment) set this option, rather than its default."""
    return ctx.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT, None)


def _with_recipe(recipe_path, fields: dict) -> dict:
    """The recipe file's values for the fields the command line left at their defaults."""
    from probscale_edge.recipe import load

    ctx = click.get_current_context()
    given = {k for k in fields if _given(ctx, k)}
    return {**fields, **{k: v for k, v in load(recipe_path).items() if k not in given}}


def config_from_options(task, data, eval_path, spec_path, no_cache, recipe_path=None, **fields):
    """The BuildConfig the options describe (every option but these six is a config field by name).
    ``--task embed`` is ``--kind embed`` on the other tasks named (or --data, or the default task's texts)."""
    from probscale_edge.config import BuildConfig

    fields = {k: v for k, v in fields.items() if not (k == "ladder" and v is None)}
    if recipe_path:
        fields = _with_recipe(recipe_path, fields)
    if "embed" in task:
        task = tuple(t for t in task if t != "embed")
        fields["kind"] = "embed"
    ctx = click.get_current_context(silent=True)
    if ctx is not None and fields.get("kind") == "classify" and _given(ctx, "target_column") and not _given(ctx, "kind"):
        fields["kind"] = "text2text"  # a target column is what a text-to-text task has (the command line)
    return BuildConfig.create(tasks=task_specs(task, data, eval_path), use_cache=not no_cache,
                              spec=read_spec(spec_path) if spec_path else None, **fields)


@main.command()
@_options
def build(json_path, **options):
    """Build a pruned, quantized bundle from a pre-trained model and a task (default: MiniLM on rotten_tomatoes)."""
    cfg = config_from_options(**options)
    if json_path:
        check_json_path(json_path)
    from probscale_edge import distributed as dist
    from probscale_edge.pipeline import build as run_build

    try:
        manifest = run_build(cfg)
    finally:
        dist.shutdown()
    if not dist.is_main():  # under torchrun, rank 0 reports and writes
        return
    from probscale_edge.report import print_summary, summary_rows

    print_summary(manifest)
    if json_path:
        write_json_out({"summary": summary_rows(manifest), "manifest": manifest}, json_path)


@main.command()
@click.argument("bundle", type=click.Path())
@click.option("--yaml", "as_yaml", is_flag=True, help="Print YAML instead of TOML.")
@click.option("-o", "--output", type=click.Path(), default=None, help="Write the recipe to this file.")
def recipe(bundle, as_yaml, output):
    """Print the recipe a bundle was built with (replay it with `build --recipe FILE`)."""
    from probscale_edge.recipe import of_bundle, to_toml

    values = of_bundle(bundle)
    if as_yaml:
        import yaml

        text = yaml.safe_dump({"recipe": {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()
                                          if v is not None}}, sort_keys=False)
    else:
        text = to_toml(values)
    if output:
        from pathlib import Path

        Path(output).write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)
