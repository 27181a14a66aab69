"""Helpers shared by the tests (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_tiny(model_type: str, folder: Path, tokenizer_src: Path | None = None, layers: int = 4, seed: int = 0):
    """A random-init model folder of ``model_type`` with a real tokenizer (for shapes/parity only)."""
    import torch
    from transformers import AutoTokenizer

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_src)) if tokenizer_src else None
    vocab = tok.vocab_size if tok else 1000
    if model_type == "t5":
        from transformers import T5Config, T5EncoderModel

        cfg = T5Config(vocab_size=vocab, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=layers,
                       num_decoder_layers=layers, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
        model = T5EncoderModel(cfg)
    else:
        from transformers import AutoConfig, AutoModel

        kw = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=160, pad_token_id=0)
        if model_type == "distilbert":
            kw = dict(vocab_size=vocab, dim=32, n_layers=layers, n_heads=4, hidden_dim=64, max_position_embeddings=160,
                      pad_token_id=0)
        if model_type in ("roberta", "xlm-roberta", "camembert"):
            kw["pad_token_id"] = 1
            kw["max_position_embeddings"] = 162
            kw["type_vocab_size"] = 1
        if model_type == "mpnet":
            kw["pad_token_id"] = 1
            kw["max_position_embeddings"] = 162
        if model_type == "electra":
            kw["embedding_size"] = 32
        cfg = AutoConfig.for_model(model_type, **kw)
        model = AutoModel.from_config(cfg)
    model.save_pretrained(str(folder))
    if tok:
        tok.save_pretrained(str(folder))
    return folder


def write_csv(path: Path, rows, header=("text", "label")):
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path
