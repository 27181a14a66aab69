"""The checkpoints users bring, on the real all-MiniLM-L6-v2: the float32 checkpoint against its fp16 and bf16
copies (same task, same seed: bundle accuracy within 0.5 points), and a fine-tuned BertForSequenceClassification
checkpoint used as the teacher as it is (its teacher accuracy in the manifest equals its own).

    python benchmarks/encoders/run.py --out benchmarks/encoders/results

Prints a table and writes results.json. Every build goes through the CLI, as a user runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _build(model, out: Path, args, log: Path) -> dict:
    cmd = [sys.executable, "-m", "probscale_edge", "build", "--model", str(model), "--task", args.task, "--max-train",
           str(args.max_train), "--epochs", str(args.epochs), "--seed", str(args.seed), "--target", "arm64",
           "--no-cache", "-o", str(out), "--force"]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    log.write_text(r.stderr)
    if r.returncode != 0:
        raise SystemExit(f"build of {model} failed:\n{r.stderr[-3000:]}")
    m = json.loads((out / "manifest.json").read_text())
    v = m["validation"]["accuracy"]
    return {"model": str(model), "stored_dtype": m["source_model"].get("stored_dtype"),
            "teacher": v["full_finetuned_torch_fp32"], "bundle": v["bundle"], "pruned_fp32": v["pruned_torch_fp32"],
            "finetune": {k: m["stages"]["finetune"].get(k) for k in ("skipped", "checkpoint", "cached")},
            "fine_tuned_again": "fine-tuning the full model" in r.stderr, "seconds": round(time.time() - t0, 1)}


def _copies(src: Path, work: Path) -> dict:
    import torch
    from transformers import AutoModel, AutoTokenizer

    out = {"float32": src}
    for name in ("float16", "bfloat16"):
        d = work / f"minilm-{name}"
        if not (d / "model.safetensors").exists():
            AutoModel.from_pretrained(str(src), dtype=getattr(torch, name)).save_pretrained(str(d))
            AutoTokenizer.from_pretrained(str(src)).save_pretrained(str(d))
        out[name] = d
    return out


def _finetuned(src: Path, work: Path, args) -> tuple[Path, float]:
    """A BertForSequenceClassification fine-tuned from MiniLM with plain transformers (its labels in reverse order
    of the task's, so the mapping is exercised), and its own eval accuracy."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from probscale_edge.data import load_task

    task = load_task(args.task, max_train=args.max_train)
    names = list(reversed(task.label_names))
    d = work / "minilm-finetuned"
    torch.manual_seed(args.seed)
    tok = AutoTokenizer.from_pretrained(str(src))
    m = AutoModelForSequenceClassification.from_pretrained(str(src), num_labels=len(names),
                                                           id2label=dict(enumerate(names)),
                                                           label2id={n: i for i, n in enumerate(names)})
    y = torch.tensor([names.index(task.label_names[t]) for t in task.train.labels])
    opt = torch.optim.AdamW(m.parameters(), lr=5e-5)
    m.train()
    for _ in range(args.epochs):
        perm = torch.randperm(len(y))
        for s in range(0, len(y), 32):
            idx = perm[s:s + 32]
            enc = tok([task.train.texts[i] for i in idx], padding=True, truncation=True, max_length=128,
                      return_tensors="pt")
            torch.nn.functional.cross_entropy(m(**enc).logits, y[idx]).backward()
            opt.step()
            opt.zero_grad()
    m.eval()
    pred = []
    with torch.no_grad():
        for s in range(0, len(task.eval), 64):
            enc = tok(task.eval.texts[s:s + 64], padding=True, truncation=True, max_length=128, return_tensors="pt")
            pred += m(**enc).logits.argmax(-1).tolist()
    acc = sum(names[p] == task.label_names[t] for p, t in zip(pred, task.eval.labels)) / len(pred)
    m.save_pretrained(str(d))
    tok.save_pretrained(str(d))
    return d, acc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="rotten_tomatoes")
    ap.add_argument("--max-train", type=int, default=1000)
    ap.add_argument("--epochs", type=float, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/encoders/results"))
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "probscale-encoders")
    args = ap.parse_args(argv)
    from probscale_edge.assets import fetch

    src = fetch("all-MiniLM-L6-v2")
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name, folder in _copies(src, args.work).items():
        rows[name] = _build(folder, args.work / f"bundle-{name}", args, args.out / f"build-{name}.log")
        print(f"{name}: {rows[name]}", flush=True)
    ft, own = _finetuned(src, args.work, args)
    rows["finetuned"] = {**_build(ft, args.work / "bundle-finetuned", args, args.out / "build-finetuned.log"),
                         "checkpoint_own_accuracy": own}
    base = rows["float32"]["bundle"]
    print(f"\n{'checkpoint':<12} {'stored':<9} {'teacher':>8} {'bundle':>8} {'vs fp32 (pts)':>14} {'fine-tuned again':>17}")
    for name, r in rows.items():
        print(f"{name:<12} {str(r['stored_dtype']):<9} {r['teacher']:>8.4f} {r['bundle']:>8.4f} "
              f"{100 * (r['bundle'] - base):>+14.2f} {str(r['fine_tuned_again']):>17}")
    print(f"fine-tuned checkpoint: own eval accuracy {own:.4f}, teacher accuracy in the manifest "
          f"{rows['finetuned']['teacher']:.4f}")
    (args.out / "results.json").write_text(json.dumps({"config": {k: str(v) for k, v in vars(args).items()},
                                                       "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
