"""Sentence-embedding peers side by side, on the same texts, in one run: the full model in PyTorch fp32 (plain
transformers with the published pooling and normalization: sentence-transformers is not installed here), the
full model in ONNX Runtime int8 (exported as token embeddings, dynamic per-channel int8: the Optimum-style
arm64 preset, run through this project's runtime), model2vec static embeddings distilled from the same
teacher (``model2vec.distill``, offline from the local model folder), and a probscale-edge embedding bundle.

    python benchmarks/embeddings/run.py --bundle BUNDLE [--out benchmarks/embeddings/results]

For each: per task (the bundle's own tasks and eval texts, rebuilt from its manifest) mean cosine to the
teacher, Spearman of pairwise similarities, recall@10 / nDCG@10 of same-label neighbours, k-NN accuracy, and
the retention of the teacher's recall@10; then parameters, bytes, p50 latency at batch 1 and throughput at
batch 32, all at 1 thread, timed in interleaved rounds (each round times every peer once) so that a busy
machine slows them alike. Prints a table; writes results.json.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # latency at 1 thread, for every peer (numpy's BLAS included)
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # model2vec distils from the local folder; no hub

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from probscale_edge.runtime.bench import DEFAULT_TEXT  # noqa: E402

METRICS = ("mean_cosine", "spearman", "recall@10", "ndcg@10", "knn_accuracy")


def tasks_of(manifest: dict):
    """The bundle's tasks with the eval texts its build scored (the same loader and caps)."""
    from probscale_edge.config import BuildConfig
    from probscale_edge.pipeline.embed import load_texts

    cfg = BuildConfig.from_dict(manifest["build_config"])
    return [load_texts(ts, cfg.data) for ts in cfg.data.tasks], cfg


class TorchPeer:
    name = "full model, PyTorch fp32 (transformers, mean pool + normalize)"

    def __init__(self, model, max_length):
        import torch

        from probscale_edge.modeling import load_encoder
        from probscale_edge.sentence import SentenceEncoder, read_sentence_config

        torch.set_num_threads(1)
        enc, self.tok, src = load_encoder(model)
        self.model = SentenceEncoder(enc, read_sentence_config(src, model)).eval()
        self.max_length, self.src = max_length, Path(str(src))
        self.bytes = (self.src / "model.safetensors").stat().st_size
        self.params = self.model.param_counts()["total"]

    def embed(self, texts):
        from probscale_edge.sentence import embed_texts

        return embed_texts(self.model, self.tok, texts, self.max_length, batch_size=32)


class RuntimePeer:
    """An ONNX model (the bundle's, or the full model's int8 export) through probscale-edge's runtime."""

    def __init__(self, name, predictor, model_bytes, params):
        self.name, self.p, self.bytes, self.params = name, predictor, model_bytes, params

    def embed(self, texts):
        return self.p.embed(texts, batch_size=32)


class Model2VecPeer:
    teacher_space = False  # static vectors in their own (PCA) space

    def __init__(self, src: Path, work: Path, dims: int):
        from model2vec import StaticModel

        out = work / f"model2vec-{src.name}-{dims}"
        if not (out / "model.safetensors").exists():
            from model2vec.distill import distill

            distill(model_name=str(src), pca_dims=dims, device="cpu").save_pretrained(str(out))
        self.m = StaticModel.from_pretrained(str(out))
        self.name = f"model2vec (distilled from the teacher, PCA {dims})"
        self.bytes = (out / "model.safetensors").stat().st_size
        self.params = int(np.prod(self.m.embedding.shape))

    def embed(self, texts):
        return np.asarray(self.m.encode(list(texts), batch_size=32), dtype=np.float32)


def full_int8(torch_peer, work: Path, max_length: int, target: str):
    """The full model exported like the bundle (token embeddings) and quantized dynamic int8 (the target's preset)."""
    from probscale_edge.converters.quantize import PRESETS, quantize_dynamic_int8
    from probscale_edge.pipeline.embed import embedding_section, export_onnx_embed, runtime_predictor

    fp32, int8 = work / "full_fp32.onnx", work / "full_int8.onnx"
    tok_dir = work / "full_tokenizer"
    if not int8.exists():
        work.mkdir(parents=True, exist_ok=True)
        export_onnx_embed(torch_peer.model, torch_peer.tok, fp32, 17, max_length)
        quantize_dynamic_int8(fp32, int8, PRESETS[target])
    torch_peer.tok.save_pretrained(str(tok_dir))
    p = runtime_predictor(int8, tok_dir, embedding_section(torch_peer.model), max_length,
                          int(torch_peer.tok.pad_token_id or 0), threads=1)
    return RuntimePeer(f"full model, ONNX Runtime int8 (dynamic, {target} preset)", p, int8.stat().st_size,
                       torch_peer.params)


def _bundle_peer(b) -> RuntimePeer:
    m = b.manifest
    layers = len(m["subnetwork"]["layer_shapes"])
    return RuntimePeer(f"probscale-edge bundle {Path(str(b.path)).name} ({m['model']['precision']}, "
                       f"{m['parameters']['ratio_total']:.1f}x fewer params, {layers} layers)", b,
                       m["files"][b.model_file]["bytes"], m["parameters"]["pruned"]["total"])


def quality(peers, tasks, teacher: dict) -> dict:
    from probscale_edge.sentence import fidelity, retrieval_metrics

    out = {}
    for peer in peers:
        per = {}
        for t in tasks:
            e = peer.embed(t.eval.texts)
            f = fidelity(e, teacher[t.name])
            if not getattr(peer, "teacher_space", True):  # its own vector space: a cosine to the teacher's means nothing
                f["mean_cosine"] = None
            per[t.name] = {**f, **(retrieval_metrics(e, t.eval.labels) if t.label_names else {})}
        out[peer.name] = per
        print(f"  scored {peer.name}", flush=True)
    return out


def timings(peers, batch_texts, rounds: int, runs1: int, runs32: int) -> dict:
    """Interleaved rounds: each round times every peer at batch 1 (runs1 calls) and batch 32 (runs32 calls)."""
    ms1 = {p.name: [] for p in peers}
    tp = {p.name: [] for p in peers}
    for p in peers:  # warm-up
        for _ in range(5):
            p.embed([DEFAULT_TEXT])
        p.embed(batch_texts)
    for _ in range(rounds):
        for p in peers:
            for _ in range(runs1):
                t0 = time.perf_counter()
                p.embed([DEFAULT_TEXT])
                ms1[p.name].append((time.perf_counter() - t0) * 1000)
            for _ in range(runs32):
                t0 = time.perf_counter()
                p.embed(batch_texts)
                tp[p.name].append(len(batch_texts) / (time.perf_counter() - t0))
    return {n: {"p50_ms_batch1": float(np.median(ms1[n])), "p90_ms_batch1": float(np.percentile(ms1[n], 90)),
                "texts_per_s_batch32": float(np.median(tp[n])), "runs_batch1": len(ms1[n]), "runs_batch32": len(tp[n])}
            for n in ms1}


def summarize(peers, q, tm, tasks, teacher_name) -> list[dict]:
    rows = []
    labelled = [t.name for t in tasks if t.label_names]
    for p in peers:
        per = q[p.name]
        mean = {k: (float(np.mean([per[t][k] for t in per if per[t].get(k) is not None]))
                    if any(per[t].get(k) is not None for t in per) else None) for k in METRICS}
        ret = {t: per[t]["recall@10"] / q[teacher_name][t]["recall@10"] for t in labelled}
        rows.append({"peer": p.name, "params": p.params, "bytes": p.bytes, **mean,
                     "recall@10_retention": float(np.mean(list(ret.values()))) if ret else None,
                     "recall@10_retention_per_task": ret, **tm[p.name]})
    return rows


def print_table(rows, base_name):
    base = next(r for r in rows if r["peer"] == base_name)
    head = ["peer", "params", "MB", "cosine", "Spearman", "R@10", "R@10 kept", "nDCG@10", "kNN", "p50 ms b1",
            "vs ORT int8", "texts/s b32"]
    print(" | ".join(head))
    for r in rows:
        f = lambda v, s="{:.4f}": "-" if v is None else s.format(v)  # noqa: E731
        print(" | ".join([r["peer"], f"{r['params'] / 1e6:.2f}M", f"{r['bytes'] / 1e6:.1f}", f(r["mean_cosine"]),
                          f(r["spearman"]), f(r["recall@10"]), f(r["recall@10_retention"], "{:.1%}"), f(r["ndcg@10"]),
                          f(r["knn_accuracy"]), f"{r['p50_ms_batch1']:.2f}",
                          f"{base['p50_ms_batch1'] / r['p50_ms_batch1']:.2f}x", f"{r['texts_per_s_batch32']:.0f}"]))


def markdown(rows, per_task, base_name) -> str:
    """The table of README.md: one row per peer, then recall@10 retention per task."""
    base = next(r for r in rows if r["peer"] == base_name)
    f = lambda v, s="{:.4f}": "-" if v is None else s.format(v)  # noqa: E731
    out = ["| peer | params | model bytes | mean cosine | Spearman | recall@10 | recall@10 kept | nDCG@10 | k-NN acc. "
           "| p50 ms, batch 1 | speed-up vs ORT int8 full | texts/s, batch 32 |", "|" + "---|" * 12]
    for r in rows:
        out.append(f"| {r['peer']} | {r['params'] / 1e6:.2f}M | {r['bytes'] / 1e6:.1f} MB | {f(r['mean_cosine'])} | "
                   f"{f(r['spearman'])} | {f(r['recall@10'])} | {f(r['recall@10_retention'], '{:.1%}')} | "
                   f"{f(r['ndcg@10'])} | {f(r['knn_accuracy'])} | {r['p50_ms_batch1']:.2f} | "
                   f"{base['p50_ms_batch1'] / r['p50_ms_batch1']:.2f}x | {r['texts_per_s_batch32']:.0f} |")
    tasks = list(next(iter(per_task.values())))
    out += ["", "| recall@10 kept | " + " | ".join(tasks) + " |", "|" + "---|" * (len(tasks) + 1)]
    for r in rows:
        out.append(f"| {r['peer']} | " + " | ".join(f"{r['recall@10_retention_per_task'].get(t, float('nan')):.1%}"
                                                   for t in tasks) + " |")
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True, action="append",
                    help="an embedding bundle; repeat to compare several (the first one's tasks are scored)")
    ap.add_argument("--out", default="benchmarks/embeddings/results")
    ap.add_argument("--work", default="/work/tmp-embed/bench", help="exports and the model2vec model (not committed)")
    ap.add_argument("--m2v-dims", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs1", type=int, default=40)
    ap.add_argument("--runs32", type=int, default=4)
    a = ap.parse_args(argv)
    from probscale_edge.runtime import Predictor

    bundles = [Predictor(b, threads=1) for b in a.bundle]
    bundle, m = bundles[0], bundles[0].manifest
    tasks, cfg = tasks_of(m)
    t0 = time.time()
    torch_peer = TorchPeer(str(cfg.source.model), bundle.max_length)
    work = Path(a.work) / Path(str(cfg.source.model)).name
    peers = [torch_peer, full_int8(torch_peer, work, bundle.max_length, m["target"]),
             Model2VecPeer(torch_peer.src, work, a.m2v_dims)] + [_bundle_peer(b) for b in bundles]
    teacher = {t.name: torch_peer.embed(t.eval.texts) for t in tasks}
    q = quality(peers, tasks, teacher)
    mixed = [t.eval.texts[i] for i in range(8) for t in tasks][:32]
    tm = timings(peers, mixed, a.rounds, a.runs1, a.runs32)
    rows = summarize(peers, q, tm, tasks, torch_peer.name)
    print_table(rows, peers[1].name)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    res = {"schema": "probscale-edge.embeddings-bench/1", "bundles": list(a.bundle), "model": str(cfg.source.model),
           "tasks": {t.name: len(t.eval) for t in tasks}, "threads": 1, "rows": rows, "per_task": q,
           "latency_text": DEFAULT_TEXT, "batch32_texts": len(mixed), "seconds": round(time.time() - t0, 1),
           "machine": {"system": platform.system(), "machine": platform.machine(), "cpus": os.cpu_count(),
                       "processor": platform.processor()},
           "versions": _versions()}
    (out / "results.json").write_text(json.dumps(res, indent=2))
    (out / "results.md").write_text(markdown(rows, q, peers[1].name))
    print(f"wrote {out / 'results.json'} and results.md")


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("probscale-edge", "torch", "transformers", "onnxruntime", "model2vec", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


if __name__ == "__main__":
    main()
