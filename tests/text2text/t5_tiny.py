"""Random-init tiny T5 folders for the text2text tests (no pretrained T5 offline): both FFN layouts, v1.0
(``relu``, tied LM head) and the gated v1.1 / Flan-T5 one (``gated-gelu``, its own LM head), with a Unigram
tokenizer trained on the test's own texts (probscale_edge.text2text.train_tokenizer)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

WORDS = ("good great fine nice bad awful poor dull film movie plot actors story ending music scene "
         "quite really very not so a the it was is").split()


def pairs_rows(n: int = 120, seed: int = 0):
    """(source, target) rows with a learnable rule: the target is 'pos' when the text has more positive words."""
    rng = random.Random(seed)
    pos, neg = set(WORDS[:4]), set(WORDS[4:8])
    rows = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 12))]
        score = sum(w in pos for w in words) - sum(w in neg for w in words)
        rows.append((" ".join(words), "pos" if score >= 0 else "neg"))
    return rows


def write_pairs(path: Path, rows, source="source", target="target") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([source, target])
        w.writerows(rows)
    return path


def make_t5(folder: Path, gated: bool = False, texts=None, d_model=32, layers=4, heads=4, d_ff=64, seed=0,
            vocab_size=300) -> Path:
    """A random-init T5ForConditionalGeneration folder (save_seq2seq format) with a trained tokenizer."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from probscale_edge.seq2seq import save_seq2seq
    from probscale_edge.text2text import train_tokenizer

    texts = list(texts or [" ".join(r) for r in pairs_rows(200)])
    tok = train_tokenizer(texts, vocab_size=vocab_size)
    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=len(tok), d_model=d_model, d_kv=d_model // heads, num_heads=heads, d_ff=d_ff,
                   num_layers=layers, num_decoder_layers=layers, feed_forward_proj="gated-gelu" if gated else "relu",
                   tie_word_embeddings=not gated, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                   dropout_rate=0.0, relative_attention_num_buckets=8, relative_attention_max_distance=32)
    m = T5ForConditionalGeneration(cfg).eval()
    if gated:  # Flan-T5 checkpoints have their own LM head
        m.lm_head = torch.nn.Linear(d_model, len(tok), bias=False)
        torch.nn.init.normal_(m.lm_head.weight, std=d_model ** -0.5)
    save_seq2seq(m, tok, folder)
    return folder
