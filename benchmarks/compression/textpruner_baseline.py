"""Peer baseline: TextPruner's TransformerPruner (heads + FFN neurons, iterative, task-loss importance).

TextPruner (https://github.com/airaria/TextPruner, PyPI ``textpruner``) prunes attention heads and
FFN neurons of a Hugging Face encoder from gradient-times-weight importance scores, in ``n_iters``
steps (soft masking in between, physical cut at the end). Here it prunes the encoder of a
:class:`probscale_edge.modeling.EncoderClassifier` in place, with the loss of *our* classifier head
on the task's training text, to a given encoder non-embedding parameter budget. The importance
scores, the masks and the order of pruning are all TextPruner's own; this module only

* picks TextPruner's config (``target_num_of_heads``, ``target_ffn_size``: per-layer, uniform, as
  TextPruner's default even masking makes them) from the parameter budget;
* hands TextPruner a thin wrapper (``encoder`` = base model, forward returns the task loss) and the
  batches;
* bridges two gaps between TextPruner 1.1 (written for transformers 4.x) and transformers 5:

  1. ``PreTrainedModel.prune_heads`` no longer exists in transformers 5 (nor do
     ``find_pruneable_heads_and_indices`` / ``prune_linear_layer`` / ``config.pruned_heads``).
     TextPruner calls ``base_model.prune_heads({layer: [heads to remove]})`` exactly once, at its
     final iteration, with indices into the unpruned layer. A ``prune_heads`` bound to the encoder
     instance for the duration of the call (removed after) does that cut with
     :func:`probscale_edge.prune.prune_heads` (slice q/k/v rows and o columns of the removed heads,
     set ``num_attention_heads`` / ``all_head_size``), which is what transformers 4's
     ``BertAttention.prune_heads`` did, minus the ``pruned_heads`` bookkeeping that nothing reads at
     forward time any more. It is used whatever the transformers version, so no
     ``config.pruned_heads`` is ever written.
  2. TextPruner's final FFN cut assigns smaller ``weight`` / ``bias`` Parameters to the existing
     ``nn.Linear`` modules and leaves their ``in_features`` / ``out_features`` stale (harmless for
     forward, which only reads the tensors, but ``Adapter.layer_shape`` reads ``out_features`` to
     record per-layer shapes for save/reload). They are set from the weight shapes afterwards.

  TextPruner's importance pass never passes a ``head_mask`` (head importance comes from the
  gradient of the attention output projection), so the ``head_mask`` argument transformers 5
  dropped is not needed.

Families: those TextPruner's ``MODEL_MAP`` knows *and* whose layers match its BERT-style structure
patterns: bert, roberta, xlm-roberta, electra. DistilBERT, MPNet and CamemBERT are not in
TextPruner's map; T5 is, but its config has no ``intermediate_size`` (TextPruner reads it) and its
shared relative-position bias would need a per-layer head map that TextPruner does not keep. Those
raise a ``ValueError`` saying so.

    from benchmarks.compression.textpruner_baseline import prune_with_textpruner
    report = prune_with_textpruner(model, tok, task.train, target_encoder_non_embedding=n // 5)
"""

from __future__ import annotations

import logging
import tempfile
import time
import types
from dataclasses import asdict

import torch
import torch.nn as nn
import torch.nn.functional as F

# families TextPruner 1.1 can prune through its BERT-style ModelStructure and that we have adapters for
SUPPORTED_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "electra")

SHIMS = (
    "encoder.prune_heads bound for the call (transformers 5 removed PreTrainedModel.prune_heads): "
    "probscale_edge.prune.prune_heads on each layer, once, with TextPruner's final head mask",
    "nn.Linear in_features/out_features synced to the weight shapes after TextPruner's FFN cut "
    "(it replaces .weight/.bias only)",
)


class _TaskLossModel(nn.Module):
    """What TextPruner drives: ``encoder`` is the base model it inspects and cuts; forward returns
    our classifier's task loss (mean cross-entropy, as a Hugging Face classification head does)."""

    def __init__(self, classifier_model):
        super().__init__()
        self.clf = classifier_model

    @property
    def encoder(self):  # TransformerPruner(base_model_prefix="encoder") -> getattr(model, "encoder")
        return self.clf.encoder

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
        logits = self.clf(input_ids, attention_mask, token_type_ids=token_type_ids)
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


def _loss_adaptor(outputs):
    return outputs["loss"]


def _unit_costs(model) -> dict:
    """Parameters per attention head and per FFN neuron of one (unpruned) layer, and the rest."""
    adapter, enc = model.adapter, model.encoder
    layers = list(adapter.layers(enc))
    hd = adapter.head_dim(enc)
    q, k, v, o = adapter.attention_linears(layers[0])
    fi, fo = adapter.ffn_linears(layers[0])
    per_head = hd * sum(lin.in_features + (lin.bias is not None) for lin in (q, k, v)) + hd * o.out_features
    per_ffn = fi.in_features + (fi.bias is not None) + fo.out_features
    heads = getattr(enc.config, adapter.heads_key)
    ffn = getattr(enc.config, adapter.ffn_key)
    n = model.param_counts()["encoder_non_embedding"]
    fixed = n - len(layers) * (heads * per_head + ffn * per_ffn)
    return {"layers": len(layers), "heads": heads, "ffn": ffn, "per_head": per_head, "per_ffn": per_ffn,
            "fixed": fixed, "encoder_non_embedding": n}


def choose_targets(model, target_encoder_non_embedding: int, target_num_of_heads: int | None = None) -> dict:
    """TextPruner's (uniform) per-layer ``target_num_of_heads`` and ``target_ffn_size`` for a budget.

    Heads and FFN shrink by about the same fraction (heads rounded, at least 1); the FFN then takes
    the largest size that keeps the encoder's non-embedding parameters <= the budget."""
    c = _unit_costs(model)
    L, H, Fn, ph, pf = c["layers"], c["heads"], c["ffn"], c["per_head"], c["per_ffn"]
    per_layer = (target_encoder_non_embedding - c["fixed"]) // L
    if per_layer < ph + pf:
        raise ValueError(f"target {target_encoder_non_embedding} is below the smallest model TextPruner can make "
                         f"(1 head, 1 FFN neuron per layer: {c['fixed'] + L * (ph + pf)} parameters)")
    frac = (target_encoder_non_embedding - c["fixed"]) / (L * (H * ph + Fn * pf))
    h = target_num_of_heads or max(1, min(H, round(frac * H)))
    while h > 1 and h * ph + pf > per_layer:
        h -= 1
    f = min(Fn, (per_layer - h * ph) // pf)
    if f < 1:
        raise ValueError(f"{h} heads per layer leave no room for the FFN under the target")
    predicted = c["fixed"] + L * (h * ph + f * pf)
    return {"target_num_of_heads": int(h), "target_ffn_size": int(f), "predicted_encoder_non_embedding": int(predicted),
            "unit_costs": c}


def _batches(tokenizer, split, adapter, max_examples, batch_size, max_length, seed):
    from probscale_edge.data import stratified_sample
    from probscale_edge.modeling import tokenize

    n = len(split.texts)
    idx = sorted(stratified_sample(split.labels, max_examples, seed=seed)) if n > max_examples else list(range(n))
    g = torch.Generator().manual_seed(seed)
    idx = [idx[i] for i in torch.randperm(len(idx), generator=g).tolist()]
    out = []
    for s in range(0, len(idx), batch_size):
        part = idx[s:s + batch_size]
        enc = tokenize(tokenizer, [split.texts[i] for i in part],
                       [split.pairs[i] for i in part] if split.pairs is not None else None, max_length)
        b = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if adapter.uses_token_type_ids and "token_type_ids" in enc:
            b["token_type_ids"] = enc["token_type_ids"]
        b["labels"] = torch.tensor([int(split.labels[i]) for i in part], dtype=torch.long)
        out.append(b)
    return out, len(idx)


def _bind_prune_heads(encoder, adapter, calls: list):
    """Shim 1: ``encoder.prune_heads({layer: [heads to remove]})`` as transformers 4 had it."""
    from probscale_edge.prune import prune_heads as cut_heads

    n_heads = getattr(encoder.config, adapter.heads_key)

    def prune_heads(self, heads_to_prune: dict):
        layers = adapter.layers(self)
        for li, remove in heads_to_prune.items():
            layer = layers[int(li)]
            if adapter.layer_shape(self, layer)["heads"] != n_heads:
                raise RuntimeError("TextPruner head indices refer to an unpruned layer; this layer was already cut")
            remove = {int(h) for h in remove}
            if remove:
                cut_heads(self, adapter, layer, [h for h in range(n_heads) if h not in remove])
        calls.append({int(k): sorted(int(h) for h in v) for k, v in heads_to_prune.items()})

    encoder.prune_heads = types.MethodType(prune_heads, encoder)  # instance attribute (not a module)


def _sync_linear_features(module) -> int:
    """Shim 2: ``nn.Linear.in_features/out_features`` from the weight (TextPruner swaps only tensors)."""
    fixed = 0
    for m in module.modules():
        if isinstance(m, nn.Linear) and (m.out_features, m.in_features) != tuple(m.weight.shape):
            m.out_features, m.in_features = m.weight.shape
            fixed += 1
    return fixed


def _check_consistent(model) -> None:
    """Head-count attributes agree with the sliced weights; no layer needs any pruned-heads bookkeeping."""
    adapter, enc = model.adapter, model.encoder
    hd = adapter.head_dim(enc)
    for i, layer in enumerate(adapter.layers(enc)):
        q, k, v, o = adapter.attention_linears(layer)
        fi, fo = adapter.ffn_linears(layer)
        attn = adapter.get_module(layer, adapter.attn_module)
        heads = q.out_features // hd
        ok = (q.out_features == k.out_features == v.out_features == o.in_features == heads * hd
              and getattr(attn, "num_attention_heads", heads) == heads
              and getattr(attn, "all_head_size", heads * hd) == heads * hd
              and fi.out_features == fo.in_features == fi.weight.shape[0] == fo.weight.shape[1]
              and (fi.bias is None or fi.bias.shape[0] == fi.out_features))
        if not ok:
            raise RuntimeError(f"layer {i} is inconsistent after TextPruner: q {tuple(q.weight.shape)}, "
                               f"o {tuple(o.weight.shape)}, heads attr {getattr(attn, 'num_attention_heads', None)}, "
                               f"ffn {tuple(fi.weight.shape)}/{tuple(fo.weight.shape)}")


class _LogForward(logging.Handler):
    def __init__(self, log, keep: list):
        super().__init__(logging.INFO)
        self.log, self.keep = log, keep

    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith(("Number of pruning iterations", "New ffn size", "New num heads")):
            self.keep.append(msg)
            self.log(f"  textpruner: {msg}")


def prune_with_textpruner(model, tokenizer, train_split, target_encoder_non_embedding: int,
                          iterations: int = 8, max_examples: int = 512, batch_size: int = 32,
                          max_length: int = 128, seed: int = 0, log=print,
                          target_num_of_heads: int | None = None) -> dict:
    """Prune ``model`` (an EncoderClassifier, fine-tuned) IN PLACE with TextPruner's TransformerPruner.

    Iterative mode, task loss through our classifier head, TextPruner's default even masking (every
    layer ends with the same head count and FFN size), to encoder non-embedding parameters <=
    ``target_encoder_non_embedding``. ``target_num_of_heads`` overrides the per-layer head count
    (the FFN size then fills the budget). Returns a plain-dict report."""
    try:
        import textpruner
        from textpruner import GeneralConfig, TransformerPruner, TransformerPruningConfig
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("TextPruner is not installed: pip install textpruner") from e
    import transformers

    adapter, enc = model.adapter, model.encoder
    mt = enc.config.model_type
    if mt not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"TextPruner 1.1 cannot prune {mt!r} encoders (it supports {', '.join(SUPPORTED_MODEL_TYPES)} "
                         "among our families: DistilBERT/MPNet/CamemBERT are not in its MODEL_MAP, and T5 lacks the "
                         "config.intermediate_size it reads and a head map for the shared position bias)")
    stock = {"heads": getattr(enc.config, adapter.heads_key), "ffn": getattr(enc.config, adapter.ffn_key)}
    if any({"heads": s["heads"], "ffn": s["ffn"]} != stock for s in model.layer_shapes()):
        raise ValueError("TextPruner needs an unpruned encoder (every layer at the config's head count and FFN size)")

    before = model.param_counts()
    choice = choose_targets(model, target_encoder_non_embedding, target_num_of_heads)
    device = next(model.parameters()).device
    batches, n_examples = _batches(tokenizer, train_split, adapter, max_examples, batch_size, max_length, seed)
    log(f"textpruner {textpruner.__version__}: {mt} {before['encoder_non_embedding']:,} -> <= "
        f"{target_encoder_non_embedding:,} encoder non-embedding params: H{choice['target_num_of_heads']} "
        f"F{choice['target_ffn_size']} per layer (predicted {choice['predicted_encoder_non_embedding']:,}), "
        f"{iterations} iterations on {n_examples} examples")

    tp_config = TransformerPruningConfig(target_ffn_size=choice["target_ffn_size"],
                                         target_num_of_heads=choice["target_num_of_heads"],
                                         pruning_method="iterative", n_iters=iterations,
                                         head_even_masking=True, ffn_even_masking=True, use_logits=False)
    wrapper = _TaskLossModel(model)
    was_training = model.training
    # embeddings need no gradient for TextPruner's scores (which read only the layers' weights): freeze
    # them for the call to save time and memory, restore after
    emb_params = list(adapter.embeddings(enc).parameters())
    emb_grad = [p.requires_grad for p in emb_params]
    for p in emb_params:
        p.requires_grad_(False)
    for p in [p for lyr in adapter.layers(enc) for p in lyr.parameters()]:
        p.requires_grad_(True)
    calls: list = []
    iter_log: list = []
    tp_logger = logging.getLogger("textpruner")
    handler = _LogForward(log, iter_log)
    old_level = tp_logger.level
    tp_logger.addHandler(handler)
    tp_logger.setLevel(logging.INFO)
    _bind_prune_heads(enc, adapter, calls)
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="textpruner-") as tmp, torch.enable_grad():
            general = GeneralConfig(use_device=str(device), output_dir=tmp)
            pruner = TransformerPruner(wrapper, transformer_pruning_config=tp_config, general_config=general,
                                       base_model_prefix="encoder")
            pruner.prune(dataloader=batches, adaptor=_loss_adaptor, keep_shape=False, save_model=False)
            head_mask = pruner.head_mask.to(torch.int).tolist()
            ffn_kept = pruner.ffn_mask.to(torch.int).sum(-1).tolist()
            ffn_ids = [torch.nonzero(r).flatten().tolist() for r in pruner.ffn_mask]
    finally:
        seconds = time.perf_counter() - t0
        enc.__dict__.pop("prune_heads", None)
        tp_logger.removeHandler(handler)
        tp_logger.setLevel(old_level)
        for p, g in zip(emb_params, emb_grad):
            p.requires_grad_(g)
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    if len(calls) != 1:
        raise RuntimeError(f"TextPruner called prune_heads {len(calls)} times (expected once, at its last iteration)")
    synced = _sync_linear_features(enc)
    _check_consistent(model)
    after = model.param_counts()
    shapes = model.layer_shapes()
    if [s["ffn"] for s in shapes] != ffn_kept or [s["heads"] for s in shapes] != [sum(r) for r in head_mask]:
        raise RuntimeError(f"pruned shapes {shapes} disagree with TextPruner's masks")
    log(f"textpruner: {before['encoder_non_embedding']:,} -> {after['encoder_non_embedding']:,} encoder "
        f"non-embedding params in {seconds:.1f}s")
    cfg = asdict(tp_config)
    cfg.pop("config_class", None)
    return {
        "method": "textpruner.TransformerPruner (iterative, task loss, even masking)",
        "textpruner_version": textpruner.__version__,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "model_type": mt,
        "config": cfg,
        "target_encoder_non_embedding": int(target_encoder_non_embedding),
        "predicted_encoder_non_embedding": choice["predicted_encoder_non_embedding"],
        "unit_costs": choice["unit_costs"],
        "params_before": before,
        "params_after": after,
        "meets_target": after["encoder_non_embedding"] <= target_encoder_non_embedding,
        "fraction_kept": after["encoder_non_embedding"] / before["encoder_non_embedding"],
        "layer_shapes": shapes,
        "head_mask": head_mask,  # per layer, source heads kept (1) / removed (0)
        "ffn_kept": ffn_ids,  # per layer, source FFN neurons kept (in order)
        "examples": n_examples,
        "batches": len(batches),
        "batch_size": batch_size,
        "max_length": max_length,
        "seed": seed,
        "iterations_log": iter_log,
        "seconds": round(seconds, 3),
        "device": str(device),
        "shims": list(SHIMS),
        "linears_synced": synced,
    }


def spec_of(rep: dict) -> dict:
    """The SubnetworkSpec dict of a :func:`prune_with_textpruner` report: every layer, the heads and FFN
    neurons TextPruner kept in each."""
    return {"keep_layers": list(range(len(rep["head_mask"]))),
            "heads": {str(i): [h for h, keep in enumerate(row) if keep] for i, row in enumerate(rep["head_mask"])},
            "ffn": {str(i): list(ids) for i, ids in enumerate(rep["ffn_kept"])}}
