"""T5 encoder-decoder export: greedy-generation parity and latency, ONNX Runtime (KV cache) vs PyTorch generate.

    nice -n 10 python benchmarks/converters/seq2seq_parity.py [--tokens 20] [--runs 5] [--json OUT.json]

Random-init T5 models (the test's shapes: d_model 64, 2 + 2 layers, vocab 1000; one with d_kv * heads != d_model),
a batch of 3 right-padded inputs, eos disabled so every row generates ``--tokens`` tokens. Correctness first; the
milliseconds are single-threaded ORT vs PyTorch on this machine, for ratios only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

CONFIGS = {
    "d_model=heads*d_kv": dict(d_kv=16, num_heads=4),
    "d_kv*heads!=d_model": dict(d_kv=24, num_heads=4),
}


def tiny_t5(seed=0, **overrides):
    """Random-init T5 whose decoder input embedding is drawn apart from the tied one (else it echoes its input)."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    kw = dict(vocab_size=1000, d_model=64, d_ff=128, num_layers=2, num_decoder_layers=2, pad_token_id=0,
              eos_token_id=1, decoder_start_token_id=0, **overrides)
    model = T5ForConditionalGeneration(T5Config(**kw)).eval()
    model.decoder.embed_tokens = torch.nn.Embedding(kw["vocab_size"], kw["d_model"])
    torch.nn.init.normal_(model.decoder.embed_tokens.weight)
    return model


def median_ms(fn, runs):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main(argv=None):
    import torch
    from transformers import GenerationConfig

    from probscale_edge.converters.seq2seq import OrtSeq2Seq, export_t5_seq2seq, seq2seq_parity

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    rng = np.random.default_rng(1)
    ids = np.zeros((3, 9), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, n in enumerate((9, 6, 3)):
        ids[row, :n], mask[row, :n] = rng.integers(2, 1000, n), 1

    rows = []
    for name, overrides in CONFIGS.items():
        model = tiny_t5(**overrides)
        with tempfile.TemporaryDirectory() as tmp:
            report = export_t5_seq2seq(model, tmp)
            ort_model = OrtSeq2Seq(tmp, threads=1)
            r = seq2seq_parity(model, tmp, ids, mask, max_new_tokens=args.tokens, ort_model=ort_model)
            gen_cfg = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=args.tokens, eos_token_id=[],
                                       pad_token_id=0, decoder_start_token_id=0)
            ids_t, mask_t = torch.as_tensor(ids), torch.as_tensor(mask)
            with torch.no_grad():
                torch_ms = median_ms(lambda: model.generate(input_ids=ids_t, attention_mask=mask_t,
                                                            generation_config=gen_cfg), args.runs)
            ort_ms = median_ms(lambda: ort_model.generate(ids, mask, args.tokens), args.runs)
        rows.append({"model": name, "tokens_equal": r["tokens_equal"], "new_tokens": r["new_tokens"],
                     "first_step_max_abs_logit": r["first_step_max_abs_logit"],
                     "all_steps_max_abs_logit": r["all_steps_max_abs_logit"], "calls": r["calls"],
                     "export_seconds": report["export_seconds"], "bytes": report["bytes"],
                     "torch_generate_ms": round(torch_ms, 2), "ort_generate_ms": round(ort_ms, 2)})

    print(f"{'model':<22} {'tokens equal':>12} {'new':>4} {'first |Δ|':>10} {'all |Δ|':>10} {'with-past':>9} "
          f"{'torch ms':>9} {'ORT ms':>8}")
    for row in rows:
        all_steps = "-" if row["all_steps_max_abs_logit"] is None else f"{row['all_steps_max_abs_logit']:.2e}"
        print(f"{row['model']:<22} {str(row['tokens_equal']):>12} {row['new_tokens']:>4} "
              f"{row['first_step_max_abs_logit']:>10.2e} {all_steps:>10} "
              f"{row['calls']['decoder_with_past']:>9} {row['torch_generate_ms']:>9.2f} {row['ort_generate_ms']:>8.2f}")
    if args.json:
        args.json.write_text(json.dumps({"batch": ids.shape[0], "input_lengths": [9, 6, 3], "threads": 1,
                                         "results": rows}, indent=1))
    return 0 if all(row["tokens_equal"] for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
