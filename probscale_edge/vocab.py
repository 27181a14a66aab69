"""Vocabulary trimming: keep the embedding rows a task uses, rewrite the tokenizer to match.

Kept: every special token, every single-character piece (``a``, ``##a``, ...) so that any text
still tokenizes (rare words fall back to shorter pieces instead of ``[UNK]``), and every token
that occurs in the task's texts (``min_count`` times or more). Ids are renumbered contiguously, the
embedding matrix is sliced to the kept rows, and tokenizer.json (vocab, added tokens, post-processor,
padding) and the model config are rewritten consistently. WordPiece tokenizers only (BERT family,
MPNet, DistilBERT, ELECTRA); BPE/Unigram vocabularies are refused with a clear error.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn as nn

from probscale_edge.errors import ProbscaleError


@dataclass
class VocabReport:
    original: int
    kept: int
    from_data: int
    characters: int
    special: int
    min_count: int
    unk_rate_before: float
    unk_rate_after: float


def _tokenizer_json(tokenizer) -> dict:
    return json.loads(tokenizer.backend_tokenizer.to_str())


def kept_tokens(tokenizer, texts, pairs=None, min_count: int = 1, max_length: int = 128):
    """The ids a trimmed vocabulary keeps -> (tokenizer json, sorted ids, counts, (special, chars, data))."""
    tj = _tokenizer_json(tokenizer)
    if tj["model"].get("type") != "WordPiece":
        raise ProbscaleError(f"vocabulary trimming supports WordPiece tokenizers, not {tj['model'].get('type')}",
                             "build without --trim-vocab for this model")
    vocab: dict = tj["model"]["vocab"]
    counts = Counter()
    enc = tokenizer(list(texts), list(pairs) if pairs else None, truncation=True, max_length=max_length)
    for ids in enc["input_ids"]:
        counts.update(ids)
    special = {t["id"] for t in tj.get("added_tokens", [])}
    chars = {i for tok, i in vocab.items() if len(tok) == 1 or (tok.startswith("##") and len(tok) == 3)}
    data = {i for i, c in counts.items() if c >= min_count}
    return tj, sorted(special | chars | data), counts, (special, chars, data)


def trim_vocabulary(model, tokenizer, texts, pairs=None, min_count: int = 1, max_length: int = 128):
    """Trim ``model`` in place; returns (new_tokenizer, VocabReport)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tj, keep, counts, parts = kept_tokens(tokenizer, texts, pairs, min_count, max_length)
    vocab: dict = tj["model"]["vocab"]
    n = len(vocab)
    emb = model.adapter.word_embeddings(model.encoder)
    if emb.weight.shape[0] < n:
        raise ProbscaleError("the tokenizer has more tokens than the embedding matrix", "check the model folder")
    special, chars, data = parts
    remap = {old: new for new, old in enumerate(keep)}
    inv = {i: t for t, i in vocab.items()}
    tj["model"]["vocab"] = {inv[old]: new for old, new in remap.items() if old in inv}
    for t in tj.get("added_tokens", []):
        t["id"] = remap[t["id"]]
    pp = tj.get("post_processor") or {}
    for st in (pp.get("special_tokens") or {}).values():
        st["ids"] = [remap[i] for i in st["ids"]]
    for key in ("sep", "cls"):  # BertProcessing / RobertaProcessing
        if key in pp:
            pp[key] = [pp[key][0], remap[pp[key][1]]]
    if tj.get("padding"):
        tj["padding"]["pad_id"] = remap[tj["padding"]["pad_id"]]
    new_backend = Tokenizer.from_str(json.dumps(tj))
    specials = {k: getattr(tokenizer, k) for k in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
                if getattr(tokenizer, k, None)}
    new_tok = PreTrainedTokenizerFast(tokenizer_object=new_backend, model_max_length=tokenizer.model_max_length,
                                      **specials)
    # slice the embedding rows
    idx = torch.tensor(keep, dtype=torch.long)
    new_emb = nn.Embedding(len(keep), emb.weight.shape[1], padding_idx=remap.get(emb.padding_idx) if
                           emb.padding_idx is not None else None)
    with torch.no_grad():
        new_emb.weight.copy_(emb.weight.index_select(0, idx))
    model.adapter.set_module(model.encoder, model.adapter.word_embeddings_path, new_emb)
    cfg = model.encoder.config
    cfg.vocab_size = len(keep)
    for key in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id"):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and v in remap:
            setattr(cfg, key, remap[v])
    unk_old = vocab.get(tokenizer.unk_token, -1)
    before = sum(c for i, c in counts.items() if i == unk_old) / max(1, sum(counts.values()))
    after_ids = new_tok(list(texts), list(pairs) if pairs else None, truncation=True, max_length=max_length)["input_ids"]
    unk_new = remap.get(unk_old, -1)
    tot = sum(len(x) for x in after_ids)
    after = sum(x.count(unk_new) for x in after_ids) / max(1, tot)
    rep = VocabReport(n, len(keep), len(data), len(chars), len(special), min_count, before, after)
    return new_tok, rep
