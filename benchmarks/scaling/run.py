"""Scaling benchmark: the same `probscale-edge build` on 1, 2, ... processes (torchrun), side by side.

Each process count runs the whole build with the same options and a fresh teacher (--no-cache),
so the fine-tune and the distillation both run on N processes (DDP; GPUs when present, gloo on
CPUs). Prints a table and writes JSON: training throughput (examples/s) of the teacher fine-tune
and of the distillation, their speed-up over the first process count, and accuracies.

    python benchmarks/scaling/run.py --nprocs 1 2 -- --max-train 100000 --batch-size 256

Strong scaling (default): the same global batch on every process count, so N processes take the
very same optimisation steps. Weak scaling (--weak-scaling): the per-process batch stays fixed, so
the global batch and the learning rates grow N-fold (linear scaling rule) and there are N times
fewer steps; use it when one process's step is bound by kernel launches rather than FLOPs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


SCALED = {"--batch-size": 32, "--lr": 5e-5, "--student-lr": 1e-4}  # build's defaults


def scaled_args(build_args: list[str], factor: int) -> list[str]:
    """``build_args`` with --batch-size and the learning rates multiplied by ``factor``."""
    out, given = list(build_args), set()
    for i, a in enumerate(out[:-1]):
        if a in SCALED:
            kind = int if a == "--batch-size" else float
            out[i + 1] = str(kind(out[i + 1]) * factor)
            given.add(a)
    for a, default in SCALED.items():
        if a not in given:
            out += [a, str(default * factor)]
    return out


def run_one(nproc: int, build_args: list[str], workdir: Path) -> dict:
    out = workdir / f"bundle-{nproc}"
    js = workdir / f"build-{nproc}.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "probscale_edge", "build", "--no-cache", "-o", str(out), "--json", str(js), *build_args]
    env = dict(os.environ, PROBSCALE_EDGE_QUIET="1")
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"build on {nproc} processes failed (exit {proc.returncode})")
    m = json.loads(js.read_text())["manifest"]
    st = m["stages"]
    fit, rec = st["finetune"]["fit"], st["recover"]
    acc = m["validation"]["accuracy"]
    return {"nproc": nproc, "device": fit.get("device"), "wall_seconds": round(wall, 1),
            "finetune_examples_per_second": fit.get("examples_per_second"),
            "finetune_train_seconds": fit.get("train_seconds"), "finetune_steps": fit.get("steps"),
            "distill_examples_per_second": rec.get("examples_per_second"),
            "distill_train_seconds": rec.get("train_seconds"), "distill_steps": rec.get("steps"),
            "teacher_accuracy": acc["full_finetuned_torch_fp32"], "student_accuracy": acc["pruned_torch_fp32"],
            "bundle_accuracy": acc["bundle"], "kept_layers": m["subnetwork"]["spec"]["keep_layers"],
            "train_examples": m["task"].get("train_examples"), "eval_examples": m["validation"]["eval_examples"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nprocs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--json", default="benchmarks/scaling/results.json")
    ap.add_argument("--weak-scaling", action="store_true", help="fixed per-process batch (see above)")
    ap.add_argument("build_args", nargs=argparse.REMAINDER, help="after --: options passed to `probscale-edge build`")
    a = ap.parse_args()
    build_args = [x for x in a.build_args if x != "--"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="probscale-scaling-") as d:
        for n in a.nprocs:
            print(f"building on {n} process(es) ...", file=sys.stderr, flush=True)
            args = scaled_args(build_args, n) if a.weak_scaling else build_args
            rows.append(run_one(n, args, Path(d)) | {"build_args": args})
    base = rows[0]
    for r in rows:
        for k in ("finetune", "distill"):
            b, v = base[f"{k}_examples_per_second"], r[f"{k}_examples_per_second"]
            r[f"{k}_speedup"] = round(v / b, 3) if b and v else None
        r["student_accuracy_delta_vs_first"] = round(r["student_accuracy"] - base["student_accuracy"], 4)
    hdr = ("procs", "device", "fine-tune ex/s", "x", "distill ex/s", "x", "teacher acc", "student acc", "bundle acc",
           "wall s")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for r in rows:
        print(f"| {r['nproc']} | {r['device']} | {r['finetune_examples_per_second']} | {r['finetune_speedup']} | "
              f"{r['distill_examples_per_second']} | {r['distill_speedup']} | {r['teacher_accuracy']:.4f} | "
              f"{r['student_accuracy']:.4f} | {r['bundle_accuracy']:.4f} | {r['wall_seconds']} |")
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps({"schema": "probscale-edge.scaling/1", "build_args": build_args,
                                        "scaling": "weak" if a.weak_scaling else "strong",
                                        "host": os.uname().nodename, "rows": rows}, indent=2))
    print(f"wrote {a.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
