"""Recorded model outputs for the Android core's pooling test (SentencePoolingTest): token embeddings of a
real model on padded batches, their attention masks, and the sentence embeddings the Python runtime makes of
them (``probscale_edge.runtime.predictor.pool_embeddings``, what ``Predictor.embed`` runs).

    python tools/make_pooling_vectors.py OUT_DIR [--bundle EMBEDDING_BUNDLE]

With ``--bundle`` (or $PROBSCALE_ANDROID_EMBED_BUNDLE) the outputs are that bundle's ONNX model's, through the
runtime; otherwise all-MiniLM-L6-v2's last hidden state (PyTorch, from the asset cache). Written into OUT_DIR
(a build folder; never committed) as pooling.bin, little-endian: b"PEPV", version, count, then per row
pooling (0 mean, 1 cls), normalize (0/1), tokens, width, the mask (int32 x tokens), the token embeddings
(float32 x tokens x width) and the expected embedding (float32 x width).
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
from pathlib import Path

import numpy as np

TEXTS = ["a quiet, patient character study that rewards attention", "Free entry! Text WIN to 80086 now",
         "What is the capital of Australia?", "oil prices rose sharply after the opec meeting", "ok", "",
         "Ünïcödé, 中文 and emoji 😀 in one line", "the the the the the the the the the the the the the the",
         "How many miles is it from London to Paris by train, and how long does the trip take?",
         "i'll call you later, can't talk now", "[MASK] is a token too", "short"] * 2


def records_from_bundle(bundle):
    from probscale_edge.runtime import Predictor

    p = Predictor(bundle)
    e = p.embedding
    out = []
    for s in range(0, len(TEXTS), 8):
        feed = p.encode(TEXTS[s:s + 8])
        tokens = p.backend.run(feed)
        expect = p.embed_outputs(tokens, feed["attention_mask"])
        out += [(e["pooling"], e["normalize"], feed["attention_mask"][i], tokens[i], expect[i]) for i in range(len(expect))]
    return out


def records_from_minilm():
    import torch

    from probscale_edge.modeling import load_encoder, tokenize
    from probscale_edge.runtime.predictor import pool_embeddings
    from probscale_edge.sentence import SentenceConfig, SentenceEncoder

    enc, tok, _ = load_encoder("all-MiniLM-L6-v2")
    out = []
    for s in range(0, len(TEXTS), 8):
        b = tokenize(tok, TEXTS[s:s + 8], None, 128)
        with torch.no_grad():
            tokens = enc(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
        mask = b["attention_mask"].numpy()
        for pooling, norm in (("mean", True), ("mean", False), ("cls", True)):
            expect = pool_embeddings(tokens.numpy(), mask, pooling, norm)
            ref = SentenceEncoder(enc, SentenceConfig(pooling, norm, "test")).embed_from_tokens(tokens, b["attention_mask"])
            assert np.abs(ref.numpy() - expect).max() < 1e-5, "torch and numpy pooling disagree"
            out += [(pooling, norm, mask[i], tokens[i].numpy(), expect[i]) for i in range(len(expect))]
    return out


def write(records, path: Path):
    with open(path, "wb") as f:
        f.write(b"PEPV" + struct.pack("<ii", 1, len(records)))
        for pooling, norm, mask, tokens, expect in records:
            tokens = np.ascontiguousarray(tokens, dtype="<f4")
            f.write(struct.pack("<iiii", 0 if pooling == "mean" else 1, int(bool(norm)), tokens.shape[0], tokens.shape[1]))
            f.write(np.asarray(mask, dtype="<i4").tobytes() + tokens.tobytes() + np.asarray(expect, dtype="<f4").tobytes())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--bundle", default=os.environ.get("PROBSCALE_ANDROID_EMBED_BUNDLE"))
    a = ap.parse_args(argv)
    records = records_from_bundle(a.bundle) if a.bundle else records_from_minilm()
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write(records, out / "pooling.bin")
    print(f"POOLING_VECTORS {len(records)} rows from {a.bundle or 'all-MiniLM-L6-v2 (PyTorch last hidden state)'} "
          f"-> {out / 'pooling.bin'}")


if __name__ == "__main__":
    sys.exit(main())
