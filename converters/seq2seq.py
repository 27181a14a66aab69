"""T5 encoder-decoder -> ONNX with a key/value cache, a torch-free greedy generator and a parity check.

The export writes three graphs and a small spec, the layout ONNX Runtime generation loops expect:

* ``encoder.onnx``: ``input_ids, attention_mask -> encoder_hidden_states``
* ``decoder.onnx`` (first step, no cache): ``decoder_input_ids, encoder_hidden_states, encoder_attention_mask ->
  logits, present.{i}.decoder.{key,value}, present.{i}.encoder.{key,value}``
* ``decoder_with_past.onnx`` (one new token): ``decoder_input_ids, encoder_attention_mask,
  past_key_values.{i}.decoder.{key,value}, past_key_values.{i}.encoder.{key,value} ->
  logits, present.{i}.decoder.{key,value}``
* ``seq2seq.json``: file names, input/output names, per-layer cache shapes and the special token ids.

Cache tensors are ``[batch, heads, sequence, d_kv]``; the cross-attention keys/values are computed once by the
first-step decoder and fed unchanged to every later step. Batch, encoder sequence, past length and the first-step
decoder length (a forced prefix) are dynamic.

Both T5 FFN layouts export as they are (v1.0 ``wi``/``wo`` and the gated v1.1 / Flan-T5 ``wi_0``/``wi_1``/``wo``, with
its untied LM head and unscaled decoder output): the decoders run the model's own forward.

The export needs only torch and transformers (Optimum's exporter pins an older transformers and assumes
``d_kv * num_heads == d_model``, which pruned models break). :class:`OrtSeq2Seq` needs only numpy and
onnxruntime, so it runs in the torch-free runtime install.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import numpy as np

from probscale_edge.errors import ProbscaleError

SPEC_FILE = "seq2seq.json"
SPEC_FORMAT = "probscale-edge/seq2seq-v1"
GRAPHS = ("encoder", "decoder", "decoder_with_past")
SUPPORTED_MODEL_TYPES = ("t5",)


def cache_names(prefix: str, n_layers: int, cross: bool = True) -> list[str]:
    """Flat cache tensor names in graph order: per layer self-attn key, value, then (if ``cross``) cross-attn key,
    value. ``prefix`` is ``"past_key_values"`` for inputs and ``"present"`` for outputs."""
    kinds = ("decoder", "encoder") if cross else ("decoder",)
    return [f"{prefix}.{i}.{kind}.{kv}" for i in range(n_layers) for kind in kinds for kv in ("key", "value")]


def graph_names(n_layers: int) -> dict[str, dict[str, list[str]]]:
    """Input and output names of the three graphs (shared by the exporter and the runtime)."""
    return {
        "encoder": {"inputs": ["input_ids", "attention_mask"], "outputs": ["encoder_hidden_states"]},
        "decoder": {"inputs": ["decoder_input_ids", "encoder_hidden_states", "encoder_attention_mask"],
                    "outputs": ["logits"] + cache_names("present", n_layers)},
        "decoder_with_past": {"inputs": ["decoder_input_ids", "encoder_attention_mask"]
                              + cache_names("past_key_values", n_layers),
                              "outputs": ["logits"] + cache_names("present", n_layers, cross=False)},
    }


def _dynamic_axes(names: dict[str, dict[str, list[str]]]) -> dict[str, dict[str, dict[int, str]]]:
    """Per-graph dynamic axes. The with-past decoder takes exactly one new token (axis 1 of its ids is fixed)."""
    seq = {0: "batch", 1: "encoder_sequence"}
    kv_enc = {0: "batch", 2: "encoder_sequence"}
    axes = {
        "encoder": {"input_ids": seq, "attention_mask": seq, "encoder_hidden_states": seq},
        "decoder": {"decoder_input_ids": {0: "batch", 1: "decoder_sequence"}, "encoder_hidden_states": seq,
                    "encoder_attention_mask": seq, "logits": {0: "batch", 1: "decoder_sequence"}},
        "decoder_with_past": {"decoder_input_ids": {0: "batch"}, "encoder_attention_mask": seq,
                              "logits": {0: "batch"}},
    }
    for name in names["decoder"]["outputs"][1:]:
        axes["decoder"][name] = {0: "batch", 2: "decoder_sequence"} if ".decoder." in name else kv_enc
    for name in names["decoder_with_past"]["inputs"][2:]:
        axes["decoder_with_past"][name] = {0: "batch", 2: "past_decoder_sequence"} if ".decoder." in name else kv_enc
    for name in names["decoder_with_past"]["outputs"][1:]:
        axes["decoder_with_past"][name] = {0: "batch", 2: "past_decoder_sequence + 1"}
    return axes


def _wrappers(model):
    """Flat-tensor wrappers around a T5ForConditionalGeneration: (encoder, first-step decoder, decoder with past).

    They translate between flat key/value tensors and transformers' ``EncoderDecoderCache`` so that the traced
    graphs have plain named inputs and outputs; the decoders run the model's own forward (lm head, output scaling).
    """
    import torch
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    n_layers = len(model.decoder.block)

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

    class Encoder(Wrapper):
        def forward(self, input_ids, attention_mask):
            return self.model.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    class Decoder(Wrapper):
        def forward(self, decoder_input_ids, encoder_hidden_states, encoder_attention_mask):
            # an empty cache without a config: it grows to the decoder's own layer count (which may differ from
            # the encoder's after pruning)
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
            out = self.model(encoder_outputs=(encoder_hidden_states,), attention_mask=encoder_attention_mask,
                             decoder_input_ids=decoder_input_ids, cache=cache, use_cache=True)
            flat = []
            for i in range(n_layers):
                own, cross = out.cache.self_attention_cache.layers[i], out.cache.cross_attention_cache.layers[i]
                flat += [own.keys, own.values, cross.keys, cross.values]
            return (out.logits, *flat)

    class DecoderWithPast(Wrapper):
        def forward(self, decoder_input_ids, encoder_attention_mask, *past):
            own = [(past[4 * i], past[4 * i + 1]) for i in range(n_layers)]
            cross = [(past[4 * i + 2], past[4 * i + 3]) for i in range(n_layers)]
            # a filled cross-attention cache marks every layer "updated": the model reuses its keys/values and never
            # reads the encoder states, which are needed only for their shape ([batch, encoder_sequence, d_model])
            cache = EncoderDecoderCache(DynamicCache(own), DynamicCache(cross))
            shape_only = torch.zeros_like(cross[0][0][:, 0, :, :1]).expand(-1, -1, self.model.config.d_model)
            out = self.model(encoder_outputs=(shape_only,), attention_mask=encoder_attention_mask,
                             decoder_input_ids=decoder_input_ids, cache=cache, use_cache=True)
            flat = []
            for i in range(n_layers):
                layer = out.cache.self_attention_cache.layers[i]
                flat += [layer.keys, layer.values]
            return (out.logits, *flat)

    return Encoder().eval(), Decoder().eval(), DecoderWithPast().eval()


def _check_model(model) -> None:
    cfg = getattr(model, "config", None)
    supported = getattr(cfg, "model_type", None) in SUPPORTED_MODEL_TYPES and getattr(cfg, "is_encoder_decoder", False)
    if not supported or not hasattr(model, "lm_head"):
        raise ProbscaleError(f"seq2seq export supports T5 encoder-decoders with an LM head, got "
                             f"{type(model).__name__} ({getattr(cfg, 'model_type', None)})",
                             "load the model with T5ForConditionalGeneration")


def _trace_inputs(cfg, own_attn, cross_attn):
    """Example inputs to trace with: padding in the encoder mask (so the padding mask is never traced away), a
    2-token first-step decoder (so its causal mask is kept) and past lengths that differ from the encoder length.
    Returns (input_ids, attention_mask, decoder_input_ids, flat past key/values)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(2, cfg.vocab_size, (2, 5), generator=gen)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    dec_ids = torch.randint(2, cfg.vocab_size, (2, 2), generator=gen)
    past = []
    for own, cross in zip(own_attn, cross_attn):
        for attn, length in ((own, 3), (own, 3), (cross, 5), (cross, 5)):
            past.append(torch.randn(2, attn.n_heads, length, attn.key_value_proj_dim, generator=gen))
    return ids, mask, dec_ids, past


def _export_graph(graph: str, module, args, out_dir: Path, names, axes, opset: int) -> None:
    """One traced graph to ``out_dir/{graph}.onnx`` (written whole or not at all)."""
    import torch

    path = out_dir / f"{graph}.onnx"
    tmp = path.with_suffix(".onnx.part")
    try:
        torch.onnx.export(module, args, str(tmp), input_names=names[graph]["inputs"],
                          output_names=names[graph]["outputs"], dynamic_axes=axes[graph],
                          opset_version=opset, dynamo=False, do_constant_folding=True)
        os.replace(tmp, path)
    except Exception as e:  # noqa: BLE001 - one line for the user, the cause stays chained
        tmp.unlink(missing_ok=True)
        raise ProbscaleError(f"seq2seq ONNX export of {graph} failed "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:160]})",
                             "report the model and transformers version; try opset 18") from e


def _export_graphs(model, out_dir: Path, names, axes, inputs, opset: int) -> float:
    """Trace the three graphs in eval mode with eager attention (both restored afterwards). Returns the
    ``time.time()`` at which the export started."""
    import torch

    ids, mask, dec_ids, past = inputs
    cfg = model.config
    prev_attn = getattr(cfg, "_attn_implementation", None)
    was_training = model.training
    model.eval()
    model.set_attn_implementation("eager")  # the traced graph must not depend on an SDPA kernel choice
    enc, dec, dec_past = _wrappers(model)
    t0 = time.time()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # the tracer freezes a few Python branches of transformers' cache and mask code (cache initialized, the
            # cross-attention cache filled, no extra mask padding); none depends on batch or sequence lengths, which
            # seq2seq_parity checks at lengths other than these
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            hidden = enc(ids, mask)
            jobs = {"encoder": (enc, (ids, mask)), "decoder": (dec, (dec_ids, hidden, mask)),
                    "decoder_with_past": (dec_past, (dec_ids[:, :1], mask, *past))}
            for graph, (module, args) in jobs.items():
                _export_graph(graph, module, args, out_dir, names, axes, opset)
    finally:
        if prev_attn:
            model.set_attn_implementation(prev_attn)
        model.train(was_training)
    return t0


def _spec(cfg, opset: int, own_attn, cross_attn, names) -> dict:
    """What ``seq2seq.json`` holds: file and tensor names, per-layer cache shapes, special token ids."""
    return {
        "format": SPEC_FORMAT,
        "model_type": cfg.model_type,
        "opset": opset,
        "num_decoder_layers": len(own_attn),
        "self_attention_heads": [attn.n_heads for attn in own_attn],
        "cross_attention_heads": [attn.n_heads for attn in cross_attn],
        "d_kv": [attn.key_value_proj_dim for attn in own_attn],
        "d_model": cfg.d_model,
        "vocab_size": cfg.vocab_size,
        "decoder_start_token_id": cfg.decoder_start_token_id,
        "pad_token_id": cfg.pad_token_id,
        "eos_token_id": cfg.eos_token_id,
        "files": {graph: f"{graph}.onnx" for graph in GRAPHS},
        **names,
    }


def export_t5_seq2seq(model, out_dir, opset: int = 17) -> dict:
    """Export a ``T5ForConditionalGeneration`` to ``out_dir`` (encoder, decoder, decoder_with_past + seq2seq.json).

    Uses the TorchScript exporter (``dynamo=False``, as :mod:`.onnx_export` does: it exports ~10x faster than
    dynamo). Returns a report with file sizes and timing; check generation with :func:`seq2seq_parity`.
    """
    _check_model(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    blocks = model.decoder.block
    n_layers = len(blocks)
    # cache shapes per layer, from the modules themselves (a pruned model's layers may differ from its config)
    own_attn = [block.layer[0].SelfAttention for block in blocks]
    cross_attn = [block.layer[1].EncDecAttention for block in blocks]
    names = graph_names(n_layers)
    axes = _dynamic_axes(names)
    inputs = _trace_inputs(cfg, own_attn, cross_attn)
    t0 = _export_graphs(model, out_dir, names, axes, inputs, opset)
    (out_dir / SPEC_FILE).write_text(json.dumps(_spec(cfg, opset, own_attn, cross_attn, names), indent=2))
    return {"dir": str(out_dir), "opset": opset, "exporter": "torchscript",
            "export_seconds": round(time.time() - t0, 2), "num_decoder_layers": n_layers,
            "bytes": {graph: (out_dir / f"{graph}.onnx").stat().st_size for graph in GRAPHS}}


class OrtSeq2Seq:
    """Greedy generation with ONNX Runtime over an exported encoder-decoder (numpy + onnxruntime only).

    ``calls`` counts session runs per graph since construction (one ``decoder`` run per generation, then one
    ``decoder_with_past`` run per further token).
    """

    def __init__(self, out_dir, threads: int | None = None):
        import onnxruntime as ort

        out_dir = Path(out_dir)
        spec_path = out_dir / SPEC_FILE
        if not spec_path.exists():
            raise ProbscaleError(f"no {SPEC_FILE} in {out_dir}", "export the model with export_t5_seq2seq first")
        self.spec = json.loads(spec_path.read_text())
        if self.spec.get("format") != SPEC_FORMAT:
            raise ProbscaleError(f"{spec_path} has format {self.spec.get('format')!r}, expected {SPEC_FORMAT!r}",
                                 "re-export with this version of probscale-edge")
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        self.sessions = {graph: ort.InferenceSession(str(out_dir / self.spec["files"][graph]), so,
                                                     providers=["CPUExecutionProvider"]) for graph in GRAPHS}
        self.calls = dict.fromkeys(GRAPHS, 0)

    def _run(self, graph: str, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls[graph] += 1
        names = self.spec[graph]["outputs"]
        return dict(zip(names, self.sessions[graph].run(names, feed)))

    def encode(self, input_ids, attention_mask) -> np.ndarray:
        """Encoder hidden states ``[batch, sequence, d_model]``."""
        feed = {"input_ids": np.asarray(input_ids, dtype=np.int64),
                "attention_mask": np.asarray(attention_mask, dtype=np.int64)}
        return self._run("encoder", feed)["encoder_hidden_states"]

    def generate(self, input_ids, attention_mask=None, max_new_tokens: int = 20, decoder_start_token_id=None,
                 eos_token_id=None, pad_token_id=None, return_logits: bool = False):
        """Greedy decoding with the key/value cache.

        Returns ``[batch, 1 + steps]`` int64 tokens starting with the decoder start token, as transformers'
        ``generate`` does for encoder-decoders (and, with ``return_logits``, the ``[batch, steps, vocab]`` logits
        each token was chosen from). ``decoder_start_token_id`` defaults to the exported config's;
        ``eos_token_id`` (an id, a list of ids, or None to always run ``max_new_tokens`` steps) stops a sequence,
        which is then filled with ``pad_token_id`` (default: the config's, else the first eos id) until every
        sequence has stopped.
        """
        if max_new_tokens < 1:
            raise ProbscaleError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        input_ids = np.asarray(input_ids, dtype=np.int64)
        mask = np.ones_like(input_ids) if attention_mask is None else np.asarray(attention_mask, dtype=np.int64)
        start = self.spec["decoder_start_token_id"] if decoder_start_token_id is None else decoder_start_token_id
        eos = np.asarray([] if eos_token_id is None else np.ravel(eos_token_id), dtype=np.int64)
        if pad_token_id is None:
            pad_token_id = self.spec["pad_token_id"]
        if pad_token_id is None and eos.size:  # as transformers does: pad finished sequences with eos
            pad_token_id = int(eos[0])
        n_layers = self.spec["num_decoder_layers"]

        hidden = self.encode(input_ids, mask)
        tokens = np.full((input_ids.shape[0], 1), start, dtype=np.int64)
        done = np.zeros(input_ids.shape[0], dtype=bool)
        step_logits = []
        past: dict[str, np.ndarray] = {}
        for step in range(max_new_tokens):
            if step == 0:
                out = self._run("decoder", {"decoder_input_ids": tokens, "encoder_hidden_states": hidden,
                                            "encoder_attention_mask": mask})
                # the cross-attention keys/values depend only on the encoder: computed once, reused every step
                past = {f"past_key_values.{i}.encoder.{kv}": out[f"present.{i}.encoder.{kv}"]
                        for i in range(n_layers) for kv in ("key", "value")}
            else:
                out = self._run("decoder_with_past", {"decoder_input_ids": tokens[:, -1:],
                                                      "encoder_attention_mask": mask, **past})
            past.update({f"past_key_values.{i}.decoder.{kv}": out[f"present.{i}.decoder.{kv}"]
                         for i in range(n_layers) for kv in ("key", "value")})
            logits = out["logits"][:, -1]
            step_logits.append(logits)
            nxt = logits.argmax(-1).astype(np.int64)
            if eos.size:
                nxt = np.where(done, pad_token_id, nxt)
                done |= np.isin(nxt, eos)
            tokens = np.concatenate([tokens, nxt[:, None]], axis=1)
            if done.all():
                break
        if not return_logits:
            return tokens
        return tokens, np.stack(step_logits, axis=1)


def fresh_cache():
    """An empty key/value cache for ``generate``: made without the config, it grows to the decoder's own block count.
    (transformers sizes a cache from ``config.num_layers``, the encoder's, which a pruned decoder may not have.)"""
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    return EncoderDecoderCache(DynamicCache(), DynamicCache())


def seq2seq_parity(model, out_dir, input_ids, attention_mask, max_new_tokens: int = 20, eos_token_id=None,
                   ort_model: OrtSeq2Seq | None = None) -> dict:
    """Greedy generation parity of an export in ``out_dir`` against ``model.generate`` in PyTorch.

    Reports whether the tokens are identical, the max |Δlogit| against generate's raw logits at the first decoder
    step (``decoder.onnx``) and over every step (so the ``decoder_with_past`` steps too; only when the tokens, and
    so the inputs of every step, are equal), and how many runs each graph took. ``eos_token_id=None`` generates
    ``max_new_tokens`` tokens.
    """
    import torch
    from transformers import GenerationConfig

    ort_model = ort_model or OrtSeq2Seq(out_dir)
    cfg = model.config
    start = cfg.decoder_start_token_id
    before = dict(ort_model.calls)
    got, got_logits = ort_model.generate(np.asarray(input_ids), np.asarray(attention_mask), max_new_tokens, start,
                                         eos_token_id, cfg.pad_token_id, return_logits=True)
    calls = {graph: ort_model.calls[graph] - before[graph] for graph in GRAPHS}

    ids = torch.as_tensor(np.asarray(input_ids), dtype=torch.long)
    mask = torch.as_tensor(np.asarray(attention_mask), dtype=torch.long)
    # eos None would fall back to the model's own eos; an empty list means "no eos" to generate()
    gen_cfg = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, min_new_tokens=0,
                               decoder_start_token_id=start, eos_token_id=[] if eos_token_id is None else eos_token_id,
                               pad_token_id=cfg.pad_token_id, return_dict_in_generate=True, output_logits=True)
    model.eval()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen_cfg, cache=fresh_cache())
    ref, ref_logits = out.sequences.numpy(), torch.stack(out.logits, dim=1).numpy()
    same = got.shape == ref.shape and bool(np.array_equal(got, ref))
    return {
        "tokens_equal": same,
        "new_tokens": int(ref.shape[1] - 1),
        "ort_tokens": got.tolist(),
        "torch_tokens": ref.tolist(),
        "first_step_max_abs_logit": float(np.abs(got_logits[:, 0] - ref_logits[:, 0]).max()),
        "all_steps_max_abs_logit": float(np.abs(got_logits - ref_logits).max()) if same else None,
        "calls": calls,
    }
