"""The single stages, each reading and writing plain JSON or model folders, each calling the same function
`build` calls: probe, select, prune, recover, export, quantize, bundle; and prune-seq2seq for T5."""

from __future__ import annotations

import json
from pathlib import Path

import click

from probscale_edge.cli import main
from probscale_edge.cli.options import load_tasks, read_spec, stage_model, with_data, write_json_out
from probscale_edge.errors import ProbscaleError


@main.command()
@click.option("--model", default="all-MiniLM-L6-v2", show_default=True)
@with_data
@click.option("--pooling", default="mean", show_default=True)
@click.option("--max-length", type=int, default=128, show_default=True)
@click.option("--probe-examples", type=int, default=1500, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--output", type=click.Path(), required=True, help="probe report (JSON)")
def probe(model, task, data, eval_path, text_column, label_column, text_pair_column, max_train, pooling, max_length,
          probe_examples, seed, output):
    """Stage 1: linear probes on every layer's pooled representation (task-weighted)."""
    from probscale_edge import distributed as dist
    from probscale_edge.config import ProbeConfig, SourceConfig
    from probscale_edge.probe import ProbeSettings, probe_layers

    src = SourceConfig(model, pooling, max_length)
    settings = ProbeSettings.of(ProbeConfig(probe_examples=probe_examples), src.pooling, src.max_length, seed)
    d, tasks = load_tasks(task, data, eval_path, text_column, label_column, text_pair_column, max_train)
    m, tok, _ = stage_model(model, tasks[0].num_labels, pooling)
    with dist.collective():  # under torchrun: feature extraction sharded over the ranks
        rep = probe_layers(m, tok, tasks, [s.weight for s in d.tasks], settings)
    dist.shutdown()
    if not dist.is_main():
        return
    write_json_out(rep.to_dict(), output)
    click.echo("weighted probe accuracy by hidden state: " + " ".join(f"{a:.3f}" for a in rep.weighted))


@main.command("select")
@click.option("--model", default="all-MiniLM-L6-v2", show_default=True)
@click.option("--probe", "probe_path", type=click.Path(exists=True, dir_okay=False), required=True,
              help="probe report from `probe`")
@with_data
@click.option("--budget", type=float, default=1 / 3, show_default="0.333")
@click.option("--strategy", default="probscale", show_default=True)
@click.option("--granularity", default="unit", show_default=True,
              help="layer: whole layers | unit: layers, then heads and FFN neurons by Fisher importance on the task "
              "(what `build` does)")
@click.option("--layer-factor", type=float, default=2.0, show_default=True)
@click.option("--prune-iterations", type=int, default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--output", type=click.Path(), required=True, help="selection (JSON, holds the spec)")
def select_cmd(model, probe_path, task, data, eval_path, text_column, label_column, text_pair_column, max_train, budget,
               strategy, granularity, layer_factor, prune_iterations, seed, output):
    """Stage 2: choose the subnetwork under a parameter budget, as `build` does (unit granularity scores heads
    and neurons on the task's data)."""
    from probscale_edge.config import SelectConfig
    from probscale_edge.select import select
    from probscale_edge.specs import ProbeReport

    cfg = SelectConfig(budget=budget, strategy=strategy, granularity=granularity, layer_factor=layer_factor,
                       prune_iterations=prune_iterations)
    try:
        rep = ProbeReport.from_dict(json.loads(Path(probe_path).read_text(encoding="utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProbscaleError(f"{probe_path} is not a probe report ({type(e).__name__})",
                             "pass the JSON `probscale-edge probe` wrote") from None
    d, tasks = load_tasks(task, data, eval_path, text_column, label_column, text_pair_column, max_train)
    m, tok, _ = stage_model(model, tasks[0].num_labels)
    sel = select(m, rep, cfg, tokenizer=tok, tasks=tasks, weights=[s.weight for s in d.tasks], seed=seed,
                 log=lambda s: click.echo(s, err=True))
    write_json_out(sel.to_dict(), output)
    click.echo(f"kept layers {sel.spec.keep_layers}: {sel.kept_fraction:.3f} of non-embedding parameters")


@main.command()
@click.option("--model", required=True, help="A model folder written by probscale-edge (or a HF folder + --num-labels).")
@click.option("--spec", "spec_path", type=click.Path(exists=True, dir_okay=False), required=True,
              help="selection or spec JSON")
@click.option("--num-labels", type=int, default=None, help="With a Hugging Face folder: the task's class count.")
@click.option("-o", "--output", type=click.Path(), required=True)
def prune(model, spec_path, num_labels, output):
    """Stage 3: physically cut MODEL to the spec; the result saves and reloads as a model folder."""
    from probscale_edge.modeling import save_classifier
    from probscale_edge.prune import apply_spec
    from probscale_edge.specs import SubnetworkSpec

    spec = SubnetworkSpec.from_dict(read_spec(spec_path))
    m, tok, labels = stage_model(model, num_labels)
    p = apply_spec(m, spec, inplace=True)
    save_classifier(p, tok, Path(output), labels, extra={"spec": spec.to_dict()})
    c = p.param_counts()
    click.echo(f"pruned model: {c['total']:,} parameters ({c['non_embedding']:,} non-embedding) -> {output}")


@main.command()
@click.option("--model", required=True, help="Model folder to train (from `prune`, or a HF folder).")
@with_data
@click.option("--teacher", type=click.Path(exists=True), default=None, help="Fine-tuned teacher folder (distill).")
@click.option("--recover-mode", "--mode", "recover_mode", default="finetune", show_default=True,
              help="none | head | finetune | distill (--mode is the same flag)")
@click.option("--epochs", type=float, default=3.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--output", type=click.Path(), required=True)
def recover(model, task, data, eval_path, text_column, label_column, text_pair_column, max_train, teacher,
            recover_mode, epochs, seed, output):
    """Stage 4: recover accuracy (fine-tune, or distill from a teacher) and report eval accuracy."""
    from probscale_edge import distributed as dist
    from probscale_edge.config import FinetuneConfig, RecoverConfig
    from probscale_edge.modeling import load_classifier, predict_logits, save_classifier
    from probscale_edge.pipeline import accuracy
    from probscale_edge.recover import TrainSettings, recover as run

    ts = TrainSettings.of(FinetuneConfig(epochs=epochs), RecoverConfig(recover_mode=recover_mode), seed=seed)
    _, tasks = load_tasks(task, data, eval_path, text_column, label_column, text_pair_column, max_train)
    t = tasks[0]
    m, tok, _ = stage_model(model, t.num_labels)
    tl = None
    if recover_mode == "distill":
        if not teacher:
            raise ProbscaleError("--recover-mode distill needs --teacher FOLDER",
                                 "pass a fine-tuned teacher or use --recover-mode finetune")
        tm, ttok, _ = load_classifier(teacher)
        with dist.collective():
            tl = predict_logits(tm, ttok, t.train.texts, t.train.pairs)
    rep = run(m, tok, t.train, ts, teacher_logits=tl)
    with dist.collective():
        acc = accuracy(predict_logits(m, tok, t.eval.texts, t.eval.pairs), t.eval.labels)
    dist.shutdown()
    if not dist.is_main():  # under torchrun, rank 0 writes
        return
    save_classifier(m, tok, Path(output), t.label_names, extra={"recover": recover_mode, "accuracy": acc})
    click.echo(f"eval accuracy {acc:.4f} after {rep.get('steps', 0)} steps -> {output}")


@main.command()
@click.option("--model", required=True, help="Model folder written by probscale-edge.")
@click.option("-o", "--output", type=click.Path(), required=True, help="ONNX file")
@click.option("--opset", type=int, default=17, show_default=True)
def export(model, output, opset):
    """Stage 5: export a model folder to ONNX and check parity against PyTorch."""
    from probscale_edge.config import ExportConfig
    from probscale_edge.converters.onnx_export import export_onnx
    from probscale_edge.modeling import load_classifier

    cfg = ExportConfig(opset=opset)
    m, tok, _ = load_classifier(model)
    texts = ["a parity sample", "another, somewhat longer parity sample for the exported graph", "short"]
    rep = export_onnx(m, tok, output, cfg, parity_texts=texts, log=lambda s: click.echo(s, err=True))
    if not rep["parity_pass"]:
        raise ProbscaleError(f"ONNX output differs from PyTorch by {rep['parity_max_abs']:.2e}", "try --opset 18")
    click.echo(f"{output}: {rep['bytes']:,} bytes")


@main.command()
@click.option("--onnx", "onnx_path", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option("--target", default="arm64", show_default=True)
@click.option("-o", "--output", type=click.Path(), required=True)
def quantize(onnx_path, target, output):
    """Stage 6: dynamic int8 quantization with the target's preset (the build adds the accuracy gate)."""
    from probscale_edge.config import TARGETS, one_of

    one_of("target", target, TARGETS)
    from probscale_edge.converters.quantize import PRESETS, quantize_dynamic_int8

    info = quantize_dynamic_int8(onnx_path, output, PRESETS[target])
    click.echo(f"{output}: {info['bytes']:,} bytes ({target} preset: {PRESETS[target]})")


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


@main.command("bundle")
@click.option("--model", required=True, type=click.Path(exists=True, file_okay=False),
              help="The model folder `prune` or `recover` wrote.")
@with_data
@click.option("--teacher", type=click.Path(exists=True, file_okay=False), default=None,
              help="The full fine-tuned model, the bundle's reference accuracy (default: the folder itself).")
@click.option("--target", default="arm64", show_default=True)
@click.option("--max-accuracy-drop", type=float, default=1.0, show_default=True)
@click.option("--precision", default="int8", show_default=True, help="int8 | fp32")
@click.option("--quant-mode", default="dynamic", show_default=True, help="dynamic | static")
@click.option("--tflite", is_flag=True, help="Also ship model.tflite (LiteRT int8), gated the same way.")
@click.option("--max-length", type=int, default=128, show_default=True)
@click.option("-o", "--output", type=click.Path(), required=True, help="Bundle folder.")
@click.option("--force", is_flag=True, help="Replace an existing bundle folder (atomically).")
def bundle_cmd(model, task, data, eval_path, text_column, label_column, text_pair_column, max_train, teacher, **fields):
    """Last stage: export MODEL to ONNX, quantize it behind the accuracy gate (on the task's eval split) and write
    a verified bundle, exactly as `build` ends."""
    from probscale_edge.cli.options import task_specs
    from probscale_edge.config import BuildConfig
    from probscale_edge.pipeline.from_folder import bundle_folder
    from probscale_edge.report import print_summary

    cfg = BuildConfig.create(model=model, tasks=task_specs(task, data, eval_path), text_column=text_column,
                             label_column=label_column, text_pair_column=text_pair_column, max_train=max_train,
                             **fields)
    print_summary(bundle_folder(cfg, teacher_folder=teacher))
