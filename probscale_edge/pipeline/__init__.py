"""The build pipeline: probe -> select -> prune -> recover -> export -> quantize -> bundle.

``build`` is the list of stages; each stage lives in this package (``stages``: teacher, budget, latency
table, probe, select; ``student``: prune and recover; ``convert``: export, quantize, mobile, TFLite;
``manifest``: the bundle), takes the build's typed config (probscale_edge.config) and returns a typed
result. The stages' caches and the atomic output are in ``store``.
"""

from __future__ import annotations

from probscale_edge.config import BuildConfig, TaskSpec
from probscale_edge.pipeline.run import default_output, log_stderr
from probscale_edge.pipeline.stages import accuracy

__all__ = ["BuildConfig", "TaskSpec", "build", "default_output", "accuracy"]


def build(cfg: BuildConfig, log=log_stderr) -> dict:
    """Run the whole pipeline; returns the manifest. Raises ProbscaleError on bad input (checked first)."""
    if cfg.data.kind == "embed":  # sentence embeddings: the teacher is the model as published
        from probscale_edge.pipeline.embed import build_embed

        return build_embed(cfg, log)
    if cfg.data.kind == "text2text":  # T5 encoder-decoder, source text -> target text
        from probscale_edge.pipeline.text2text import build_text2text

        return build_text2text(cfg, log)
    from probscale_edge import distributed as dist
    from probscale_edge.pipeline import convert, ladder, manifest, stages, student
    from probscale_edge.pipeline.run import prepare
    from probscale_edge.pipeline.store import Staging

    run = prepare(cfg, log)
    with Staging(run.out, cfg.bundle.force) as staging:  # locks the output for the whole build
        teacher = stages.teacher(run)
        if run.cfg.walks_ladder:  # the size is found: the smallest rung that meets the constraints
            report, _ = stages.probe(run, teacher)
            selection, pruned = ladder.student(run, teacher, report, staging.work)
            layer_budget = selection.kept_fraction
        else:  # one size, as given
            layer_budget = stages.budget(run, teacher)
            table = stages.latency_table(run, teacher)
            report, probe_key = stages.probe(run, teacher)
            selection, select_key = stages.select(run, teacher, report, probe_key, layer_budget, table)
            pruned = student.student(run, teacher, selection, select_key, staging.work)
        if not dist.is_main():  # the other ranks' work (training, sharded forward passes) ends here
            return {"rank": dist.rank(), "world_size": dist.world_size(), "accuracy": pruned.accuracy,
                    "teacher_accuracy": teacher.accuracy}
        exported = convert.export(run, pruned, staging.work)
        gate = convert.quantize(run, pruned, exported, staging.work)
        if run.cfg.walks_ladder:
            ladder.check_shipped(run, staging.work / "model.onnx")
        convert.mobile(run, pruned, exported, gate, staging.work)
        convert.tflite(run, pruned, exported, staging.work)
        return manifest.write_bundle(run, teacher, selection, pruned, exported, gate, staging.work, layer_budget,
                                     staging)
