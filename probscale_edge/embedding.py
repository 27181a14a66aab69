"""Embedding compression: a low-rank (SVD) factorization of the word-embedding matrix.

In small encoders the embedding is most of the model (all-MiniLM-L6-v2: 11.7M of 22.7M
parameters), so layer/head/FFN pruning alone cannot reach 5x fewer *total* parameters. After the
vocabulary is trimmed to the task's tokens (:mod:`probscale_edge.vocab`), the V x H matrix E is
replaced by E ~= A @ B with B = V_r^T (r x H, a shared projection) and A = E V_r (V x r, a lookup table):
plain, the best rank-r approximation (Eckart-Young); weighted by how often the task's text uses each token
(the SVD of diag(sqrt(w)) E), the one that keeps the text as it is read (all-MiniLM-L6-v2 fine-tuned on
rotten_tomatoes, vocabulary trimmed, rank 96, no retraining: dev accuracy 0.720 plain, 0.782 weighted, 0.816
uncut). Recovery then fine-tunes B (and the
table, unless frozen) with the rest of the student. The same idea as ALBERT's factorized
embedding, but initialised from the pre-trained matrix instead of trained from scratch.

The module traces to ONNX as Gather + MatMul, both of which ONNX Runtime and LiteRT quantize.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from probscale_edge.errors import ProbscaleError


class FactorizedEmbedding(nn.Module):
    """``embed`` (V x r lookup) followed by ``proj`` (r -> H, no bias); a drop-in nn.Embedding.

    ``dense_rows`` K > 0 (adaptive input, Baevski and Auli 2019: the rows that are read get the parameters): the K
    tokens the text uses most have their exact rows in ``frequent`` ((K + 1) x H) and the other V - K their
    low-rank rows in ``embed`` ((V - K + 1) x r); row 0 of each table is zero, the row of the tokens the other
    table holds. ``frequent_index`` and ``low_index`` (V-long buffers, not parameters) find a token's rows."""

    def __init__(self, num_embeddings: int, rank: int, embedding_dim: int, padding_idx: int | None = None,
                 dense_rows: int = 0):
        super().__init__()
        rows, pad = (num_embeddings - dense_rows + 1, 0) if dense_rows else (num_embeddings, padding_idx)
        self.embed = nn.Embedding(rows, rank, padding_idx=pad)
        self.proj = nn.Linear(rank, embedding_dim, bias=False)
        self.num_embeddings, self.embedding_dim, self.rank = num_embeddings, embedding_dim, rank
        self.padding_idx, self.dense_rows = padding_idx, dense_rows
        if dense_rows:
            self.frequent = nn.Embedding(dense_rows + 1, embedding_dim, padding_idx=0)
            self.register_buffer("frequent_index", torch.zeros(num_embeddings, dtype=torch.long))
            self.register_buffer("low_index", torch.zeros(num_embeddings, dtype=torch.long))

    @property
    def weight(self):  # the lookup table: what "freeze the word embeddings" freezes
        return self.embed.weight

    def forward(self, input_ids):
        if not self.dense_rows:
            return self.proj(self.embed(input_ids))
        return self.proj(self.embed(self.low_index[input_ids])) + self.frequent(self.frequent_index[input_ids])

    def dense(self) -> torch.Tensor:
        """The V x H matrix this module represents."""
        if not self.dense_rows:
            return self.proj(self.embed.weight)
        return self.proj(self.embed.weight[self.low_index]) + self.frequent.weight[self.frequent_index]


@dataclass
class FactorizeReport:
    rank: int
    vocab: int
    hidden: int
    params_before: int
    params_after: int
    relative_error: float  # ||E - AB||_F / ||E||_F
    energy_kept: float  # sum of the kept squared singular values / the total
    dense_rows: int = 0  # the most used tokens that keep their exact rows
    dense_share: float | None = None  # of the token occurrences the weights count, the share those rows cover


def embedding_rank(model) -> int | None:
    """The rank of a factorized word embedding, or None for a plain one."""
    emb = model.adapter.word_embeddings(model.encoder)
    return emb.rank if isinstance(emb, FactorizedEmbedding) else None


def embedding_form(model) -> dict:
    """What a saved folder records to rebuild the word embedding before its weights load (empty: a plain one)."""
    emb = model.adapter.word_embeddings(model.encoder)
    if not isinstance(emb, FactorizedEmbedding):
        return {}
    return {"embedding_rank": emb.rank, **({"embedding_dense_rows": emb.dense_rows} if emb.dense_rows else {})}


def install_from(enc, meta: dict) -> None:
    """Rebuild the word embedding a folder's ``meta`` records (:func:`embedding_form`), if any."""
    if meta.get("embedding_rank"):
        install(enc, int(meta["embedding_rank"]), int(meta.get("embedding_dense_rows") or 0))


def install(enc, rank: int, dense_rows: int = 0) -> FactorizedEmbedding:
    """Replace the encoder's word embedding by an (uninitialised) factorized one of ``rank``: used when reloading."""
    from probscale_edge.adapters import get_adapter

    a = get_adapter(enc.config.model_type)
    if getattr(a, "tied_word_embeddings", False):
        raise ProbscaleError(f"{enc.config.model_type} shares its embedding with other modules; it cannot be factorized",
                             "build without --embedding-rank for this model")
    emb = a.word_embeddings(enc)
    new = FactorizedEmbedding(emb.weight.shape[0], rank, emb.weight.shape[1], emb.padding_idx, dense_rows)
    a.set_module(enc, a.word_embeddings_path, new)
    return new


def token_weights(tokenizer, texts, vocab: int, max_length: int = 128) -> torch.Tensor:
    """How often each of the ``vocab`` ids occurs in ``texts`` (plus one, so no row weighs nothing)."""
    counts = torch.ones(vocab, dtype=torch.float64)
    for ids in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]:
        counts.index_add_(0, torch.tensor(ids, dtype=torch.long), torch.ones(len(ids), dtype=torch.float64))
    return counts


def factorize_embeddings(model, rank: int, weights: torch.Tensor | None = None, dense_rows: int = 0) -> FactorizeReport:
    """Factorize ``model``'s word embedding in place to ``rank`` with a truncated SVD.

    ``weights`` (one per row, e.g. :func:`token_weights`): the shared projection is the rank-``rank`` subspace
    that best keeps the rows as the task's text uses them (the SVD of diag(sqrt(w)) E), and each row is its
    projection onto it: frequent tokens stay close to exact where a plain SVD spends rank on rare ones.
    ``energy_kept`` and ``relative_error`` are then weighted the same way. ``dense_rows`` K (needs ``weights``):
    the K heaviest rows stay exact and the subspace is the one that best keeps the rest (``energy_kept``: of those)."""
    a, enc = model.adapter, model.encoder
    emb = a.word_embeddings(enc)
    if isinstance(emb, FactorizedEmbedding):
        raise ProbscaleError("the word embedding is already factorized", "factorize once, from the dense model")
    V, H = emb.weight.shape
    if not 1 <= rank < H:
        raise ProbscaleError(f"--embedding-rank {rank} must be between 1 and the hidden size {H} (exclusive)",
                             f"pass a rank such as {max(1, H // 6)}; smaller ranks save more and lose more")
    if dense_rows and not 0 < dense_rows < V:
        raise ProbscaleError(f"--embedding-dense-rows {dense_rows} must be below the vocabulary's {V:,} rows",
                             f"pass fewer rows, such as {V // 10:,}, or 0 for none")
    if dense_rows and weights is None:
        raise ProbscaleError("exact rows go to the tokens the text uses most, and no token weights were given",
                             "pass token_weights(...) of the task's text")
    W = emb.weight.detach().double()
    if weights is not None and weights.shape[0] != V:
        raise ProbscaleError(f"{weights.shape[0]} token weights for {V} embedding rows", "weigh every row once")
    root = torch.ones(V, 1, dtype=torch.float64) if weights is None else weights.double().clamp(min=0).sqrt()[:, None]
    order = torch.argsort(root[:, 0], descending=True, stable=True)
    top, low = order[:dense_rows], torch.sort(order[dense_rows:]).values  # the low-rank rows in their id order
    _, S, Vh = torch.linalg.svd((root * W)[low], full_matrices=False)  # the subspace of the rows without a copy
    new = install(enc, rank, dense_rows)
    with torch.no_grad():
        projected = (W[low] @ Vh[:rank].T).to(emb.weight.dtype)  # each row projected onto the subspace
        new.proj.weight.copy_(Vh[:rank].T.to(emb.weight.dtype))  # Linear(r -> H): weight is H x r
        if dense_rows:
            new.low_index[low] = torch.arange(1, len(low) + 1)
            new.frequent_index[top] = torch.arange(1, dense_rows + 1)
            new.embed.weight[1:] = projected
            new.frequent.weight[1:] = W[top].to(emb.weight.dtype)
        else:
            new.embed.weight.copy_(projected)
        err = float(torch.linalg.norm(root * (W - new.dense().double())) / torch.linalg.norm(root * W))
    energy = float((S[:rank] ** 2).sum() / (S ** 2).sum())
    share = float(root[top].square().sum() / root.square().sum()) if dense_rows else None
    return FactorizeReport(rank, V, H, V * H, embedding_params_after(V, H, rank, dense_rows), err, energy,
                           dense_rows, share)


def refactorize_embeddings(model, rank: int, weights: torch.Tensor | None = None,
                           dense_rows: int = 0) -> FactorizeReport:
    """Refit ``model``'s factorized word embedding, in place, to a lower ``rank``: :func:`factorize_embeddings` of
    the matrix it represents (trained rows and all), so the new rows are the best rank-``rank`` fit of the old."""
    a, enc = model.adapter, model.encoder
    emb = a.word_embeddings(enc)
    if not isinstance(emb, FactorizedEmbedding):
        raise ProbscaleError("the word embedding is not factorized", "factorize it first (factorize_embeddings)")
    if rank >= emb.rank:
        raise ProbscaleError(f"rank {rank} is not below the embedding's rank {emb.rank}", "pass a lower rank")
    plain = nn.Embedding(emb.num_embeddings, emb.embedding_dim, padding_idx=emb.padding_idx)
    with torch.no_grad():
        plain.weight.copy_(emb.dense())
    a.set_module(enc, a.word_embeddings_path, plain.to(emb.proj.weight.device))
    return factorize_embeddings(model, rank, weights, dense_rows)


def dense_rows_note(rep: FactorizeReport) -> str:
    """The log's words for the exact rows of a factorization (empty without)."""
    return (f"; the {rep.dense_rows:,} most used tokens kept exact ({rep.dense_share:.1%} of the token occurrences)"
            if rep.dense_rows else "")


def embedding_params_after(vocab: int, hidden: int, rank: int | None, dense_rows: int = 0) -> int:
    """Word-embedding parameters for ``vocab`` rows, dense (rank None) or factorized (with ``dense_rows`` exact)."""
    if not rank:
        return vocab * hidden
    if not dense_rows:
        return vocab * rank + rank * hidden
    return (vocab - dense_rows + 1) * rank + rank * hidden + (dense_rows + 1) * hidden
