"""Surgery for T5 encoder-decoders (text-to-text): encoder and decoder blocks, self- and cross-attention
heads, FFN neurons, each per layer; a folder format that saves and reloads the non-uniform shapes. Both FFN
layouts: T5 v1.0 (``wi``, ``wo``) and the gated T5 v1.1 / Flan-T5 one (``wi_0``, ``wi_1``, ``wo``: neuron j is row j
of both input projections and column j of ``wo``), usually with an untied LM head (counted as embedding).

The spec is plain data, as for classifiers: the encoder part is a :class:`SubnetworkSpec` (indices into
the source encoder), the decoder part is one too (its ``heads`` are the self-attention heads) plus
``cross_heads`` (cross-attention heads per kept decoder block). The three adapters
(:class:`~probscale_edge.adapters.t5.T5EncoderAdapter`, ``T5DecoderAdapter``, ``T5CrossAttentionAdapter``)
name the modules; :mod:`probscale_edge.prune` slices them. A pruned model exports with
:func:`probscale_edge.converters.seq2seq.export_t5_seq2seq` (per-layer cache shapes come from the modules).

Position biases: each stack's block 0 owns its relative-position bias. A dropped block 0 hands it to the
new first block; head-pruned blocks take their heads' rows of it (see the adapters). Cross-attention has
no learned bias; once cross-attention heads are pruned every block makes its own zero bias.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from probscale_edge.errors import ProbscaleError
from probscale_edge.prune import SubnetworkSpec, cut_units, prune_heads, resize_layer

FOLDER_FORMAT = "probscale-edge/seq2seq-model-v1"
SHAPES_FILE = "probscale_seq2seq.json"


def _adapters():
    from probscale_edge.adapters.t5 import T5CrossAttentionAdapter, T5DecoderAdapter, T5EncoderAdapter

    return T5EncoderAdapter(), T5DecoderAdapter(), T5CrossAttentionAdapter()


@dataclass
class Seq2SeqSpec:
    encoder: SubnetworkSpec
    decoder: SubnetworkSpec
    cross_heads: dict = field(default_factory=dict)  # decoder block (source index, str) -> kept cross heads

    def to_dict(self) -> dict:
        return {"encoder": self.encoder.to_dict(), "decoder": self.decoder.to_dict(), "cross_heads": self.cross_heads}

    @classmethod
    def from_dict(cls, d: dict) -> "Seq2SeqSpec":
        return cls(SubnetworkSpec.from_dict(d["encoder"]), SubnetworkSpec.from_dict(d["decoder"]),
                   dict(d.get("cross_heads", {})))


def _check_t5(model) -> None:
    cfg = getattr(model, "config", None)
    if getattr(cfg, "model_type", None) != "t5" or not getattr(cfg, "is_encoder_decoder", False):
        raise ProbscaleError(f"encoder-decoder surgery supports T5ForConditionalGeneration, got {type(model).__name__}",
                             "load the model with T5ForConditionalGeneration (classifiers use prune.apply_spec)")


def _check_layers(kind: str, keep, n: int) -> list[int]:
    keep = [int(i) for i in keep]
    if not keep or any(not 0 <= i < n for i in keep) or len(set(keep)) != len(keep):
        raise ProbscaleError(f"seq2seq spec keeps invalid {kind} blocks {keep} for {n} blocks",
                             f"give 1 to {n} distinct indices in [0, {n})")
    return keep


def apply_seq2seq_spec(model, spec: Seq2SeqSpec, inplace: bool = False):
    """A physically pruned copy of a ``T5ForConditionalGeneration`` (or prune in place)."""
    _check_t5(model)
    m = model if inplace else copy.deepcopy(model)
    enc_a, dec_a, cross_a = _adapters()
    enc_keep = _check_layers("encoder", spec.encoder.keep_layers, enc_a.num_layers(m))
    dec_keep = _check_layers("decoder", spec.decoder.keep_layers, dec_a.num_layers(m))
    for src in spec.cross_heads:  # checked before anything is cut (in place, a half-cut model would remain)
        if int(src) not in dec_keep:
            raise ProbscaleError(f"seq2seq spec prunes cross-attention of decoder block {src}, which it drops",
                                 "list cross_heads only for kept decoder blocks")
    cut_units(m, enc_a, spec.encoder)
    cut_units(m, dec_a, spec.decoder)
    layers = dec_a.layers(m)
    for src, heads in spec.cross_heads.items():
        prune_heads(m, cross_a, layers[int(src)], [int(h) for h in heads])
    if spec.cross_heads:
        cross_a.own_zero_bias(m)
    enc_a.keep_layers(m, enc_keep)
    dec_a.keep_layers(m, dec_keep)
    return m


def layer_shapes(model) -> dict:
    """{"encoder": [{heads, ffn[, head_ids]}], "decoder": [{heads, ffn[, head_ids], cross_heads}]}."""
    enc_a, dec_a, cross_a = _adapters()
    enc = [enc_a.layer_shape(model, layer) for layer in enc_a.layers(model)]
    dec = []
    for layer in dec_a.layers(model):
        shape = dec_a.layer_shape(model, layer)
        shape["cross_heads"] = cross_a.layer_shape(model, layer)["heads"]
        dec.append(shape)
    return {"encoder": enc, "decoder": dec}


def param_counts(model) -> dict:
    """Total, embedding (the shared table, counted once, and any separate decoder input table) and the rest."""
    total = sum(p.numel() for p in model.parameters())  # parameters() counts tied tensors once
    emb = {id(p): p.numel() for mod in (model.shared, model.decoder.embed_tokens, model.encoder.embed_tokens)
           for p in mod.parameters()}
    lm = model.lm_head.weight
    if id(lm) not in emb:
        emb[id(lm)] = lm.numel()  # an untied output table is an embedding-sized matrix too
    e = sum(emb.values())
    return {"total": int(total), "embedding": int(e), "non_embedding": int(total - e)}


def save_seq2seq(model, tokenizer, folder) -> Path:
    """Write a reloadable folder (transformers' files + the per-layer shapes), atomically."""
    import shutil
    import tempfile

    _check_t5(model)
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        (tmp / SHAPES_FILE).write_text(json.dumps({"format": FOLDER_FORMAT, "shapes": layer_shapes(model)}, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def load_seq2seq(folder):
    """Reload a folder written by :func:`save_seq2seq`: fresh blocks are cut to the recorded shapes (the
    recorded source heads where a position bias depends on them), then the weights load strictly."""
    from safetensors.torch import load_file
    from transformers import T5Config, T5ForConditionalGeneration

    folder = Path(folder)
    meta_path = folder / SHAPES_FILE
    if not meta_path.exists():
        raise ProbscaleError(f"{folder} is not a probscale-edge seq2seq folder (no {SHAPES_FILE})",
                             "save it with probscale_edge.seq2seq.save_seq2seq")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FOLDER_FORMAT:
        raise ProbscaleError(f"{meta_path} has format {meta.get('format')!r}, expected {FOLDER_FORMAT!r}",
                             "re-save the model with this version of probscale-edge")
    cfg = T5Config.from_pretrained(str(folder))
    model = T5ForConditionalGeneration(cfg)
    enc_a, dec_a, cross_a = _adapters()
    shapes = meta["shapes"]
    for adapter, rows in ((enc_a, shapes["encoder"]), (dec_a, shapes["decoder"])):
        layers = adapter.layers(model)
        if len(rows) != len(layers):
            raise ProbscaleError(f"{meta_path} lists {len(rows)} blocks where the config has {len(layers)}",
                                 "the folder is inconsistent: save it again")
        for layer, shape in zip(layers, rows):
            resize_layer(model, adapter, layer, shape)
    cross = [row["cross_heads"] for row in shapes["decoder"]]
    if any(c != cfg.num_heads for c in cross):
        for layer, c in zip(dec_a.layers(model), cross):
            if c != cfg.num_heads:
                prune_heads(model, cross_a, layer, list(range(c)))
        cross_a.own_zero_bias(model)
    state = {}
    for f in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(f)))
    import torch

    # tables saved apart from the shared one (an untied decoder input table or LM head) get their own module,
    # so that loading them does not overwrite the shared table they are tied to in a fresh model
    shared = state.get("shared.weight")
    for key, owner, attr in (("encoder.embed_tokens.weight", model.encoder, "embed_tokens"),
                             ("decoder.embed_tokens.weight", model.decoder, "embed_tokens"),
                             ("lm_head.weight", model, "lm_head")):
        if key in state and shared is not None and not torch.equal(state[key], shared):
            rows, cols = state[key].shape
            setattr(owner, attr, torch.nn.Embedding(rows, cols) if attr == "embed_tokens"
                    else torch.nn.Linear(cols, rows, bias=False))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}  # saved once, as shared
    if [k for k in missing if k not in tied] or unexpected:
        raise ProbscaleError(f"{folder}: weights do not match the recorded shapes (missing {list(missing)[:3]}, "
                             f"unexpected {list(unexpected)[:3]})", "save the model again with save_seq2seq")
    return model.eval()


# ---------------------------------------------------------------------------------------------- selection
# (stack, role path of the output projection whose input is captured, kind); kinds: heads, cross, ffn
_UNITS = (("encoder", "layer.0.SelfAttention.o", "heads"), ("encoder", "layer.1.DenseReluDense.wo", "ffn"),
          ("decoder", "layer.0.SelfAttention.o", "heads"), ("decoder", "layer.1.EncDecAttention.o", "cross"),
          ("decoder", "layer.2.DenseReluDense.wo", "ffn"))


def unit_scores(model, tokenizer, sources, targets, max_examples: int = 256, batch_size: int = 16,
                max_length: int = 128, seed: int = 0) -> dict:
    """Fisher importance of every head (encoder self, decoder self, cross) and FFN neuron for the text-to-text
    loss on (source, target) pairs: per example, (sum over tokens of activation x gradient)^2, summed.
    -> {(stack, layer, kind): np.ndarray}."""
    import random

    import numpy as np
    import torch

    from probscale_edge import distributed as dist
    from probscale_edge.adapters.base import Adapter
    from probscale_edge.importance import fisher

    _check_t5(model)
    if len(sources) != len(targets) or not sources:
        raise ProbscaleError(f"{len(sources)} sources and {len(targets)} targets", "give one target per source, at least one")
    idx = list(range(len(sources)))
    random.Random(seed).shuffle(idx)
    idx = idx[:max_examples]
    d_kv = model.config.d_kv
    captured, handles, scores = {}, [], {}

    def hook(key):
        def fn(mod, inp):
            inp[0].retain_grad()
            captured[key] = inp[0]
        return fn

    for stack, path, kind in _UNITS:
        for li, blk in enumerate(getattr(model, stack).block):
            handles.append(Adapter.get_module(blk, path).register_forward_pre_hook(hook((stack, li, kind))))
    was_training = model.training
    model.eval()
    try:
        with dist.on_device(model) as dev:
            for b in range(0, len(idx), batch_size):
                rows = idx[b:b + batch_size]
                enc = tokenizer([sources[i] for i in rows], truncation=True, max_length=max_length, padding=True,
                                return_tensors="pt")
                lab = tokenizer([targets[i] for i in rows], truncation=True, max_length=max_length, padding=True,
                                return_tensors="pt")
                labels = lab["input_ids"].masked_fill(lab["attention_mask"] == 0, -100)
                model.zero_grad(set_to_none=True)
                out = model(input_ids=enc["input_ids"].to(dev), attention_mask=enc["attention_mask"].to(dev),
                            labels=labels.to(dev))
                out.loss.backward()
                masks = {"encoder": enc["attention_mask"].to(dev), "decoder": lab["attention_mask"].to(dev)}
                for (stack, li, kind), x in captured.items():
                    s = fisher(x, masks[stack], None if kind == "ffn" else d_kv).astype(np.float64)
                    scores[(stack, li, kind)] = scores.get((stack, li, kind), 0.0) + s
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return scores


def select_seq2seq(model, scores: dict, budget: float, min_heads: int = 1, min_neurons: int = 16) -> Seq2SeqSpec:
    """Heads and FFN neurons to keep so that the blocks hold at most ``budget`` of their parameters.

    Every block is kept. Units are ranked by Fisher score over the mean score of their kind in their block
    (so blocks compare on one scale) and removed lowest first; attention (self and cross) and FFN lose the
    same fraction of their parameters, so neither is emptied. Per-block shapes come out non-uniform."""
    from probscale_edge.importance import relative

    if not 0 < budget <= 1:
        raise ProbscaleError(f"budget {budget} is not a fraction in (0, 1]", "pass e.g. 0.25 to keep a quarter")
    shapes = layer_shapes(model)
    d, d_kv = model.config.d_model, model.config.d_kv
    enc_a = _adapters()[0]
    # T5's projections have no biases: a neuron is 2 x d_model (wi, wo), or 3 x d_model gated (wi_0, wi_1, wo)
    head_cost, neuron_cost = 4 * d * d_kv, enc_a.unit_costs(model, enc_a.layers(model)[0])["neuron"]
    size = {(st, li, kind): (shapes[st][li]["cross_heads"] if kind == "cross" else shapes[st][li][kind])
            for st, li, kind in scores}
    att = sum(n * head_cost for (st, li, kind), n in size.items() if kind != "ffn")
    ffn = sum(n * neuron_cost for (st, li, kind), n in size.items() if kind == "ffn")
    frac = 1 - budget
    keep = {k: set(range(n)) for k, n in size.items()}

    def ranked(group):
        items = []
        for k, s in scores.items():
            if k[2] in group:
                items += [(float(v), k, j) for j, v in enumerate(relative(s))]
        return sorted(items, key=lambda r: r[0])

    removed = 0
    groups = ((("heads", "cross"), head_cost, min_heads, frac * att), (("ffn",), neuron_cost, min_neurons, frac * ffn))
    for group, cost, floor, allowance in groups:
        got = 0
        for _, k, j in ranked(group):
            if got + cost > allowance + 1e-9 or len(keep[k]) <= floor:
                continue
            keep[k].discard(j)
            got += cost
        removed += got
    # what whole heads and the floors left over comes out of the FFN, then out of the heads
    for group, cost, floor, _ in reversed(groups):
        for _, k, j in ranked(group):
            if removed >= frac * (att + ffn) - 1e-9:
                break
            if j in keep[k] and len(keep[k]) > floor:
                keep[k].discard(j)
                removed += cost

    def part(stack, kind):
        return {str(li): sorted(keep[(st, li, kd)]) for (st, li, kd) in keep
                if st == stack and kd == kind and len(keep[(st, li, kd)]) < size[(st, li, kd)]}

    n_enc, n_dec = len(shapes["encoder"]), len(shapes["decoder"])
    return Seq2SeqSpec(SubnetworkSpec(list(range(n_enc)), part("encoder", "heads"), part("encoder", "ffn")),
                       SubnetworkSpec(list(range(n_dec)), part("decoder", "heads"), part("decoder", "ffn")),
                       part("decoder", "cross"))


def block_params(model) -> int:
    """Parameters in the encoder and decoder blocks (what a budget is a fraction of)."""
    return sum(p.numel() for stack in (model.encoder, model.decoder) for p in stack.block.parameters())


# ---------------------------------------------------------------------------------------------- block search
def stack_block_costs(model) -> dict:
    """Parameters of every encoder and decoder block (the decoder's include cross-attention): {"encoder": [..],
    "decoder": [..]}. The two stacks' blocks cost differently."""
    return {stack: [sum(p.numel() for p in blk.parameters()) for blk in getattr(model, stack).block]
            for stack in ("encoder", "decoder")}


def check_block_budget(costs: dict, budget: float, what: str = "--budget") -> None:
    """A budget must keep at least one block of each stack (the cheapest of each)."""
    total = sum(costs["encoder"]) + sum(costs["decoder"])
    least = min(costs["encoder"]) + min(costs["decoder"])
    if budget * total < least * (1 - 1e-9):
        raise ProbscaleError(f"{what} {budget:g} keeps {budget * total:,.0f} block parameters, fewer than one encoder "
                             f"and one decoder block ({least:,} of {total:,})",
                             f"pass {what} {least / total:.3f} or more")


def _stack_frontier(costs, gains, max_enumerate: int):
    """(cost, gain, subset) for the subsets of one stack worth combining: every non-empty subset when there are
    at most ``max_enumerate``, else the best k blocks by gain for every k (exact when the blocks cost the same)."""
    import itertools

    n = len(costs)
    if 2 ** n - 1 <= max_enumerate:
        subs = [c for k in range(1, n + 1) for c in itertools.combinations(range(n), k)]
    else:
        order = sorted(range(n), key=lambda i: (-gains[i], i))
        subs = [tuple(sorted(order[:k])) for k in range(1, n + 1)]
    return [(sum(costs[i] for i in s), sum(gains[i] for i in s), s) for s in subs]


def choose_blocks(costs: dict, curves: dict | None, budget: float, strategy: str = "probscale",
                  max_enumerate: int = 200_000, seed: int = 0) -> tuple[tuple, tuple]:
    """Encoder and decoder blocks to keep within ``budget`` x all block parameters (pure: costs and probe curves).

    ``probscale``: the pair of subsets (one per stack) with the largest summed probe gain (accuracy after a block
    minus before it), searched exactly over every pair that fits and cannot take another block; ties go to more
    parameters kept. ``bottom``: drop the top blocks, i.e. keep the first k_e and k_d blocks (the pair that keeps
    the most parameters, then the most even depths). ``top``: the blocks whose own probe accuracy is highest.
    ``random``: a random maximal pair."""
    check_block_budget(costs, budget)
    ce, cd = costs["encoder"], costs["decoder"]
    limit = budget * (sum(ce) + sum(cd)) * (1 + 1e-9)
    if strategy == "bottom":
        ge, gd = [-i for i in range(len(ce))], [-i for i in range(len(cd))]
    elif strategy == "top":
        ge, gd = list(curves["encoder"][1:]), list(curves["decoder"][1:])
    elif strategy == "random":
        rng = random.Random(seed)
        ge, gd = [rng.random() for _ in ce], [rng.random() for _ in cd]
    else:
        e, d = curves["encoder"], curves["decoder"]
        ge, gd = [e[i + 1] - e[i] for i in range(len(ce))], [d[i + 1] - d[i] for i in range(len(cd))]
    fe, fd = _stack_frontier(ce, ge, max_enumerate), _stack_frontier(cd, gd, max_enumerate)
    best = None
    for cost_e, gain_e, se in fe:
        for cost_d, gain_d, sd in fd:
            cost = cost_e + cost_d
            if cost > limit:
                continue
            maximal = all(i in se or cost + ce[i] > limit for i in range(len(ce))) and \
                all(i in sd or cost + cd[i] > limit for i in range(len(cd)))
            if not maximal:
                continue
            if strategy == "bottom":
                if se != tuple(range(len(se))) or sd != tuple(range(len(sd))):
                    continue
                key = (cost, -abs(len(se) / len(ce) - len(sd) / len(cd)))
            else:
                key = (round(gain_e + gain_d, 9), cost)
            if best is None or key > best[0]:
                best = (key, se, sd)
    return best[1], best[2]


def compose_spec(enc_keep, dec_keep, inner: Seq2SeqSpec | None = None) -> Seq2SeqSpec:
    """The spec, in source indices, of keeping ``enc_keep``/``dec_keep`` and then cutting heads and neurons by
    ``inner`` (a spec over the block-cut model, whose block i is source block keep[i])."""
    enc_keep, dec_keep = [int(i) for i in enc_keep], [int(i) for i in dec_keep]
    if inner is None:
        return Seq2SeqSpec(SubnetworkSpec(enc_keep), SubnetworkSpec(dec_keep), {})

    def remap(part, keep):
        return {str(keep[int(k)]): list(v) for k, v in part.items()}

    return Seq2SeqSpec(SubnetworkSpec(enc_keep, remap(inner.encoder.heads, enc_keep), remap(inner.encoder.ffn, enc_keep)),
                       SubnetworkSpec(dec_keep, remap(inner.decoder.heads, dec_keep), remap(inner.decoder.ffn, dec_keep)),
                       remap(inner.cross_heads, dec_keep))


# ---------------------------------------------------------------------------------------------- the whole job
def _check_prune_args(model_dir: Path, out: Path, spec, budget, pairs, force: bool) -> None:
    if out.exists() and not force:
        raise ProbscaleError(f"{out} already exists", "pass --force to replace it, or another -o")
    if (spec is None) == (budget is None) or (budget is not None and not pairs):
        raise ProbscaleError("give either a spec, or a budget with (source, target) pairs",
                             "e.g. --budget 0.25 --data pairs.csv (columns source,target), or --spec FILE")
    if budget is not None and not 0 < budget <= 1:
        raise ProbscaleError(f"--budget {budget:g} is not a fraction in (0, 1]", "pass e.g. --budget 0.25")
    cfg_path = model_dir / "config.json"
    kind = json.loads(cfg_path.read_text()).get("model_type") if cfg_path.exists() else None
    if kind != "t5":
        raise ProbscaleError(f"{model_dir} is not a T5 model folder (model_type {kind!r})",
                             "give a T5 encoder-decoder folder; encoders are cut with `prune`")


def _load_t5(model_dir: Path):
    """The folder's model (a pruned folder, or a transformers T5) and its tokenizer (None if it has none)."""
    if (model_dir / SHAPES_FILE).exists():
        m = load_seq2seq(model_dir)
    else:
        from transformers import T5ForConditionalGeneration

        m = T5ForConditionalGeneration.from_pretrained(str(model_dir)).eval()
    tok = None
    if (model_dir / "tokenizer_config.json").exists():
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(model_dir))
    return m, tok


def _check_reload(p, staging: Path, rep: dict, log):
    """Reload ``staging`` and compare it with ``p`` on random inputs (``rep["reload_max_abs"]``).
    Returns (reloaded model, input_ids, attention_mask)."""
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, p.config.vocab_size, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    dec = torch.randint(2, p.config.vocab_size, (3, 5), generator=g)
    reloaded = load_seq2seq(staging)
    with torch.no_grad():
        diff = float((p(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
                      - reloaded(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits).abs().max())
    rep["reload_max_abs"] = diff
    log(f"[{'PASS' if diff <= 1e-5 else 'FAIL'}] reload: max |Δlogit| {diff:.1e}")
    if diff > 1e-5:
        raise ProbscaleError("the pruned model does not reload to the same outputs", "report this model")
    return reloaded, ids, mask


def _check_onnx(reloaded, staging: Path, ids, mask, rep: dict, log) -> None:
    """Export ``reloaded`` to ``staging/onnx`` and check greedy generation against PyTorch (``rep["onnx"]``)."""
    import numpy as np

    from probscale_edge.converters.seq2seq import export_t5_seq2seq, seq2seq_parity

    export_t5_seq2seq(reloaded, staging / "onnx")
    r = seq2seq_parity(reloaded, staging / "onnx", ids.numpy(), mask.numpy().astype(np.int64), max_new_tokens=16)
    ok = r["tokens_equal"] and r["all_steps_max_abs_logit"] <= 1e-4
    rep["onnx"] = {k: r[k] for k in ("tokens_equal", "first_step_max_abs_logit", "all_steps_max_abs_logit")}
    log(f"[{'PASS' if ok else 'FAIL'}] ONNX greedy generation (16 tokens, key/value cache): tokens "
        f"{'equal' if r['tokens_equal'] else 'differ'}, max |Δlogit| {r['all_steps_max_abs_logit']}")
    if not ok:
        raise ProbscaleError("the ONNX export does not generate what PyTorch generates", "try another opset")


def prune_folder(model_dir, output, spec: Seq2SeqSpec | None = None, budget: float | None = None, pairs=None,
                 onnx: bool = False, force: bool = False, log=None) -> dict:
    """Cut the T5 in ``model_dir`` to ``spec`` (or to ``budget`` by Fisher importance on ``pairs`` = (sources,
    targets)), save it to ``output``, reload and compare it, and with ``onnx`` export it with a key/value cache
    and check greedy generation against PyTorch. ``output`` appears only when every check passed.
    Returns a report (parameter counts before and after, the spec, the checks)."""
    import shutil

    log = log or (lambda m: None)
    model_dir, out = Path(model_dir), Path(output)
    _check_prune_args(model_dir, out, spec, budget, pairs, force)
    m, tok = _load_t5(model_dir)
    before = param_counts(m)
    if spec is None:
        if tok is None:
            raise ProbscaleError(f"{model_dir} has no tokenizer, which a budget needs to read the pairs",
                                 "save the tokenizer into the model folder, or pass a spec")
        spec = select_seq2seq(m, unit_scores(m, tok, *pairs), budget)
        log(f"selected by Fisher importance under budget {budget:g} (kept in {out}/spec.json)")
    p = apply_seq2seq_spec(m, spec, inplace=True)
    rep = {"parameters": {"original": before, "pruned": param_counts(p)}, "spec": spec.to_dict(),
           "shapes": layer_shapes(p)}
    staging = out.with_name(f".{out.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        save_seq2seq(p, tok, staging)
        (staging / "spec.json").write_text(json.dumps(spec.to_dict(), indent=1))
        reloaded, ids, mask = _check_reload(p, staging, rep, log)
        if onnx:
            _check_onnx(reloaded, staging, ids, mask, rep, log)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return rep
