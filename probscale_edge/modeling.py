"""Loading encoders safely, the classifier wrapper, and saving/reloading (pruned) model folders.

A model folder written by probscale-edge is a Hugging Face folder (``config.json``,
``model.safetensors``, tokenizer files) plus ``probscale.json`` (pooling, labels, per-layer
shapes, provenance) and ``classifier.safetensors`` (the task head). Per-layer shapes that differ
from the stock config (pruned heads / FFN neurons) are re-applied before the weights load, so
non-uniform models reload exactly.
"""

from __future__ import annotations

from contextlib import contextmanager

import json
import os
from pathlib import Path

import torch
import torch.nn as nn

from probscale_edge.adapters import get_adapter
from probscale_edge.errors import ProbscaleError

FOLDER_FORMAT = 1
WEIGHT_FILES_SAFE = ("model.safetensors", "model.safetensors.index.json")
WEIGHT_FILES_PICKLE = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def resolve_model(spec: str | None, log=None) -> Path | str:
    """A built-in model name, a local folder, or a hub id (returned as a string)."""
    from probscale_edge.assets import ASSETS, DEFAULT_MODEL, fetch

    spec = spec or DEFAULT_MODEL
    if spec in ASSETS and ASSETS[spec].kind == "model":
        return fetch(spec, log=log)
    p = Path(spec)
    if p.exists() or spec.startswith((".", "/", "~")) or os.sep in spec and not _looks_like_hub_id(spec):
        p = p.expanduser()
        if not p.exists():
            raise ProbscaleError(f"model path {p} does not exist",
                                 "pass an existing Hugging Face model folder or a built-in model name (all-MiniLM-L6-v2)")
        return p
    if _looks_like_hub_id(spec):
        return spec
    raise ProbscaleError(f"model {spec!r} is neither a local folder nor a built-in model",
                         "pass a Hugging Face model folder, a hub id (online), or all-MiniLM-L6-v2")


def _looks_like_hub_id(s: str) -> bool:
    parts = s.split("/")
    return len(parts) == 2 and all(parts) and not s.startswith((".", "/", "~"))


def check_model_folder(path: Path, allow_pickle: bool = False) -> dict:
    """Validate a local model folder before loading; returns its config dict."""
    if not path.is_dir():
        raise ProbscaleError(f"model path {path} is not a folder", "pass a Hugging Face model folder")
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise ProbscaleError(f"{path} has no config.json, so it is not a Hugging Face model folder",
                             "pass the folder written by save_pretrained()")
    if not cfg_path.is_file():  # a folder, FIFO or device named config.json (a FIFO would block the read)
        raise ProbscaleError(f"{cfg_path} is not a regular file", "restore config.json from the original model")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProbscaleError(f"{cfg_path} is not valid JSON ({e})", "restore config.json from the original model")
    except OSError as e:
        raise ProbscaleError(f"could not read {cfg_path} ({e.strerror or e})", "check the file and its permissions")
    _check_config_shape(cfg, cfg_path)
    for f in WEIGHT_FILES_SAFE + WEIGHT_FILES_PICKLE:
        if (path / f).exists() and not (path / f).is_file():
            raise ProbscaleError(f"{path / f} is not a regular file", "restore the weight file from the original model")
    safe = [f for f in WEIGHT_FILES_SAFE if (path / f).exists()]
    pickle = [f for f in WEIGHT_FILES_PICKLE if (path / f).exists()]
    if not safe and not pickle:
        raise ProbscaleError(f"{path} has no weights (model.safetensors or pytorch_model.bin)",
                             "copy the weight file into the folder, or point --model at the complete folder")
    if not safe and pickle and not allow_pickle:
        raise ProbscaleError(f"{path} holds only a pickle checkpoint ({pickle[0]}), which can run arbitrary code",
                             "convert it to safetensors, or pass --allow-pickle if you trust its source")
    if cfg.get("auto_map"):
        raise ProbscaleError(f"{path} needs remote code (auto_map in config.json), which is not run",
                             "use a model of a built-in architecture")
    get_adapter(cfg.get("model_type", "?"))
    return cfg


def _check_config_shape(cfg, cfg_path: Path) -> None:
    """config.json must be a JSON object naming its family (``model_type``, a string)."""
    if not isinstance(cfg, dict):
        kind = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(cfg), "null")
        raise ProbscaleError(f"{cfg_path} holds a JSON {kind}, not a model config (a JSON object with model_type)",
                             "restore config.json from the original model")
    mt, archs = cfg.get("model_type"), cfg.get("architectures")
    if mt is None:
        if isinstance(archs, list) and archs and all(isinstance(a, str) for a in archs):
            raise ProbscaleError(f"{cfg_path} has no model_type (architectures: {', '.join(archs[:3])})",
                                 'add the family, e.g. "model_type": "bert", or restore config.json from the original model')
        raise ProbscaleError(f"{cfg_path} is not a model config (no model_type or architectures)",
                             "restore config.json from the original model")
    if not isinstance(mt, str) or not mt:
        raise ProbscaleError(f"{cfg_path} has model_type {json.dumps(mt)}, not a family name",
                             'write the family as a string, e.g. "model_type": "bert"')
    if archs is not None and not (isinstance(archs, list) and all(isinstance(a, str) for a in archs)):
        raise ProbscaleError(f"{cfg_path} has architectures {json.dumps(archs)[:80]}, not a list of class names",
                             "restore config.json from the original model")


def load_encoder(spec, allow_pickle: bool = False, log=None, allow_unused_weights: bool = False):
    """Return (encoder, tokenizer, source_path) for a built-in name, a folder or a hub id.

    The weights load in float32 whatever precision they are stored in (fp16 and bf16 checkpoints train
    and export in float32; :func:`stored_dtype` says what the file held). Checkpoint weights the
    architecture does not use are an error naming them (task heads excepted), unless
    ``allow_unused_weights``."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    src = resolve_model(spec, log=log)
    if isinstance(src, Path):
        check_model_folder(src, allow_pickle=allow_pickle)
    try:
        config = AutoConfig.from_pretrained(str(src), trust_remote_code=False)
    except Exception as e:  # noqa: BLE001
        raise ProbscaleError(f"could not read the config of {src} ({type(e).__name__}: {str(e)[:120]})",
                             "check config.json, or pass a valid model folder")
    adapter = get_adapter(config.model_type)
    kwargs = {"use_safetensors": None if allow_pickle else True, "dtype": torch.float32}
    try:
        if config.model_type == "t5":
            from transformers import T5EncoderModel

            encoder = T5EncoderModel.from_pretrained(str(src), **kwargs)
        else:
            encoder = AutoModel.from_pretrained(str(src), **kwargs)
    except ProbscaleError:
        raise
    except Exception as e:  # noqa: BLE001
        msg = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise ProbscaleError(f"could not load the weights of {src} ({type(e).__name__}: {msg})",
                             "the weight file is truncated, corrupt or does not match config.json; restore it")
    _check_loaded_weights(encoder, src, allow_unused_weights)
    check_finite_weights(encoder, src)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(src))
    except Exception as e:  # noqa: BLE001
        raise ProbscaleError(f"could not load the tokenizer of {src} ({type(e).__name__})",
                             "add tokenizer.json (or vocab files) to the model folder")
    check_tokenizer_fits(encoder, tokenizer, src)
    adapter.drop_pooler(encoder)
    adapter.prepare_for_surgery(encoder)  # e.g. ALBERT: one copy of the shared layer per depth (same outputs)
    encoder.eval()
    return encoder, tokenizer, src


# checkpoint keys a pre-trained encoder may carry that the encoder itself does not use: task and pre-training
# heads (replaced by our task head), and buffers older transformers saved
_HEAD_KEYS = ("cls.", "lm_head.", "classifier.", "pre_classifier.", "qa_outputs.", "pooler.", "generator_",
              "discriminator_predictions.", "sop_classifier.", "predictions.", "mask_predictions.", "head.",
              "decoder.", "shared.")
_BUFFER_SUFFIXES = ("position_ids", "token_type_ids", "rotary_emb.inv_freq")


def _unused_keys(keys: set, encoder) -> list[str]:
    prefix = getattr(encoder, "base_model_prefix", "")
    own = set(encoder.state_dict().keys())
    out = []
    for k in sorted(keys):
        bare = k[len(prefix) + 1:] if prefix and k.startswith(prefix + ".") else k
        legacy = bare.replace(".gamma", ".weight").replace(".beta", ".bias")  # LayerNorm names transformers renames
        if legacy in own or bare in own or k in own or bare.startswith(_HEAD_KEYS) or k.startswith(_HEAD_KEYS) \
                or bare.endswith(_BUFFER_SUFFIXES):
            continue
        out.append(k)
    return out


def stored_dtype(src) -> str | None:
    """The floating-point dtype the checkpoint's tensors are stored in (e.g. "float16"), or None."""
    st = Path(str(src)) / "model.safetensors"
    if not st.is_file():
        return None
    from safetensors import safe_open

    names = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}
    with safe_open(str(st), "pt") as f:
        for k in f.keys():
            d = f.get_slice(k).get_dtype()
            if d in names:
                return names[d]
    return None


def _check_loaded_weights(encoder, src, allow_unused: bool = False):
    """transformers silently random-inits missing weights (a pre-trained model must not have any) and
    silently drops weights it has no place for (the bundle would be built from another model)."""
    # compare the model's parameters with the checkpoint's keys (safetensors files)
    if isinstance(src, Path):
        st = src / "model.safetensors"
        if st.exists():
            from safetensors import safe_open

            try:
                with safe_open(str(st), "pt") as f:
                    keys = set(f.keys())
            except Exception as e:  # noqa: BLE001
                raise ProbscaleError(f"{st} is not a readable safetensors file ({e})", "restore the weight file")
            own = {k for k, _ in encoder.named_parameters()}
            prefix = getattr(encoder, "base_model_prefix", "")
            norm = {k[len(prefix) + 1:] if prefix and k.startswith(prefix + ".") else k for k in keys}
            missing = [k for k in own if k not in norm and not k.startswith("pooler.") and "relative_attention_bias" not in k]
            if len(missing) > 0.5 * max(len(own), 1):
                raise ProbscaleError(f"{st} does not contain this architecture's weights ({len(missing)} of {len(own)} missing)",
                                     "config.json and the weights disagree; use the matching pair")
            unused = _unused_keys(keys, encoder)
            if unused and not allow_unused:
                raise ProbscaleError(f"{st} holds {len(unused)} weight(s) this architecture does not use "
                                     f"({', '.join(unused[:3])}{', ...' if len(unused) > 3 else ''}): the bundle would be "
                                     "built from a different model than the checkpoint",
                                     "use a transformers version that implements them, or pass --allow-unused-weights "
                                     "to build without them")


def check_finite_weights(module, src="the model") -> None:
    """Every floating-point weight and buffer must be finite; names the first tensor holding NaN or Inf."""
    with torch.no_grad():
        for name, t in module.state_dict(keep_vars=False).items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                n_nan, n_inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
                what = " and ".join(x for x in (f"{n_nan:,} NaN" if n_nan else "", f"{n_inf:,} Inf" if n_inf else "") if x)
                raise ProbscaleError(f"the weights of {src} are not finite: {name} holds {what} of {t.numel():,} values",
                                     "the checkpoint is corrupt (or diverged in training); restore it from the original model")


def check_tokenizer_fits(encoder, tokenizer, src="the model") -> None:
    """Every id the tokenizer can produce must index a row of the model's word embedding."""
    emb = encoder.get_input_embeddings()
    rows = getattr(emb, "num_embeddings", None)
    if rows is None:
        weight = getattr(emb, "weight", None)
        rows = weight.shape[0] if weight is not None else None
    if rows is None:
        return
    max_id = len(tokenizer) - 1
    try:
        max_id = max(max_id, max(tokenizer.get_vocab().values(), default=-1))
    except Exception:  # noqa: BLE001  (a tokenizer without get_vocab: len() is all there is)
        pass
    if max_id >= rows:
        raise ProbscaleError(f"the tokenizer of {src} produces ids up to {max_id:,}, but the model's word embedding "
                             f"has {rows:,} rows (vocab_size {getattr(encoder.config, 'vocab_size', '?')})",
                             "use the tokenizer the model was trained with, or resize the embedding "
                             "(model.resize_token_embeddings(len(tokenizer))) and save the model again")


_ACTS = {"tanh": nn.Tanh, "gelu": nn.GELU, "relu": nn.ReLU}

# the task heads of fine-tuned *ForSequenceClassification checkpoints: (dense, activation, final linear) as
# paths into the Hugging Face model, all on the first token's state
_HF_HEADS = {
    "BertForSequenceClassification": ("bert.pooler.dense", "tanh", "classifier"),
    "RobertaForSequenceClassification": ("classifier.dense", "tanh", "classifier.out_proj"),
    "XLMRobertaForSequenceClassification": ("classifier.dense", "tanh", "classifier.out_proj"),
    "CamembertForSequenceClassification": ("classifier.dense", "tanh", "classifier.out_proj"),
    "MPNetForSequenceClassification": ("classifier.dense", "tanh", "classifier.out_proj"),
    "ElectraForSequenceClassification": ("classifier.dense", "gelu", "classifier.out_proj"),
    "DistilBertForSequenceClassification": ("pre_classifier", "relu", "classifier"),
}


def classification_architecture(src) -> str | None:
    """The *ForSequenceClassification class a model folder's config names, or None."""
    try:
        c = json.loads((Path(str(src)) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    archs = (c.get("architectures") or []) if isinstance(c, dict) else []
    return next((a for a in archs if isinstance(a, str) and a.endswith("ForSequenceClassification")), None)


def finetuned_classifier(src, label_names: list, allow_unused_weights: bool = False):
    """A fine-tuned classification checkpoint as the teacher, as it is: its encoder and its own head, the head's
    rows reordered from the checkpoint's ``id2label`` to ``label_names`` (refused when they do not match).
    Returns (EncoderClassifier, tokenizer, {"architecture", "labels"})."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    arch = classification_architecture(src)
    if arch not in _HF_HEADS:
        raise ProbscaleError(f"{src} is a fine-tuned {arch}, whose task head probscale-edge cannot take over yet",
                             f"pass its base model to fine-tune a new head (supported heads: {', '.join(_HF_HEADS)})")
    hf = AutoModelForSequenceClassification.from_pretrained(str(src), use_safetensors=True, dtype=torch.float32)
    names = [str(hf.config.id2label[i]) for i in range(hf.config.num_labels)]
    lower = {n.strip().lower(): i for i, n in enumerate(names)}
    order = [lower.get(str(t).strip().lower()) for t in label_names]
    if None in order or len(set(order)) != len(names):
        raise ProbscaleError(f"the checkpoint's labels {names} are not the task's {list(label_names)}",
                             "use the checkpoint with the task it was fine-tuned on (label names must match), or "
                             "pass its base model to fine-tune a new head")
    dense_path, act, final_path = _HF_HEADS[arch]
    get = lambda path: get_adapter("bert").get_module(hf, path)  # noqa: E731  (plain attribute navigation)
    encoder = hf.base_model
    model = EncoderClassifier(encoder, len(names), pooling="cls", pre_head=act)
    model.pre_head[0].load_state_dict(get(dense_path).state_dict())
    final = get(final_path)
    idx = torch.tensor(order)
    model.classifier.load_state_dict({"weight": final.weight.detach()[idx], "bias": final.bias.detach()[idx]})
    get_adapter(encoder.config.model_type).drop_pooler(encoder)
    _check_loaded_weights(encoder, Path(str(src)), allow_unused_weights)
    check_finite_weights(model, src)
    tokenizer = AutoTokenizer.from_pretrained(str(src))
    check_tokenizer_fits(encoder, tokenizer, src)
    return model.eval(), tokenizer, {"architecture": arch, "labels": names}


class EncoderClassifier(nn.Module):
    """encoder -> pooling (mean over the attention mask, or first token) -> dropout -> linear."""

    def __init__(self, encoder, num_labels: int, pooling: str = "mean", dropout: float = 0.1,
                 pre_head: str | None = None):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ProbscaleError(f"unknown pooling {pooling!r}", "use --pooling mean or --pooling cls")
        self.encoder = encoder
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        hidden = getattr(encoder.config, get_adapter(encoder.config.model_type).hidden_key)
        # a fine-tuned checkpoint's head (probscale_edge.modeling.finetuned_classifier): pooled -> dense -> act
        self.pre_head_act = pre_head
        self.pre_head = nn.Sequential(nn.Linear(hidden, hidden), _ACTS[pre_head]()) if pre_head else None
        self.classifier = nn.Linear(hidden, num_labels)

    @property
    def adapter(self):
        return get_adapter(self.encoder.config.model_type)

    def pool(self, hidden, attention_mask):
        if self.pooling == "cls":
            return hidden[:, 0]
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kw = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self.adapter.uses_token_type_ids:
            kw["token_type_ids"] = token_type_ids
        pooled = self.pool(self.encoder(**kw).last_hidden_state, attention_mask)
        if self.pre_head is not None:
            pooled = self.pre_head(pooled)
        return self.classifier(self.dropout(pooled))

    def hidden_states(self, input_ids, attention_mask, token_type_ids=None):
        """(embedding output, output of every layer) for the layers the encoder has *now*.

        Captured with our own hooks rather than ``output_hidden_states``: transformers 5 records hidden
        states by hooks installed on the first call and indexed by each layer's original position, so
        after a layer subset is swapped in (``probe.composed``) it returns too few states, or none. The
        last entry is the encoder's own output (after a final norm where the family has one)."""
        kw = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self.adapter.uses_token_type_ids:
            kw["token_type_ids"] = token_type_ids
        with self.capture_states() as states:
            states[-1] = self.encoder(**kw).last_hidden_state
        if any(s is None for s in states):
            raise RuntimeError("a layer's output was not captured; report this model family")
        return tuple(states)

    @contextmanager
    def capture_states(self):
        """Within the block, every forward pass fills the yielded list: [embedding output, output of
        layer 0, layer 1, ...] (raw layer outputs, before any final norm). Works under DDP too, since it
        hooks the layers rather than calling a method of the wrapped model."""
        layers = self.adapter.layers(self.encoder)
        states = [None] * (len(layers) + 1)

        def first_input(mod, args, kwargs):
            states[0] = args[0] if args else kwargs.get("hidden_states", kwargs.get("x"))

        def output(i):
            def fn(mod, args, out):
                states[i + 1] = out[0] if isinstance(out, (tuple, list)) else out
            return fn

        handles = [layers[0].register_forward_pre_hook(first_input, with_kwargs=True)]
        handles += [layer.register_forward_hook(output(i)) for i, layer in enumerate(layers)]
        try:
            yield states
        finally:
            for h in handles:
                h.remove()

    def param_counts(self) -> dict:
        c = self.adapter.count_params(self.encoder)
        head = sum(p.numel() for p in self.classifier.parameters())
        head += sum(p.numel() for p in self.pre_head.parameters()) if self.pre_head is not None else 0
        return {"total": c["total"] + head, "embedding": c["embedding"], "non_embedding": c["non_embedding"] + head,
                "encoder_non_embedding": c["non_embedding"]}

    def layer_shapes(self) -> list[dict]:
        a = self.adapter
        return [a.layer_shape(self.encoder, layer) for layer in a.layers(self.encoder)]


def save_classifier(model: EncoderClassifier, tokenizer, folder: Path, labels: list, extra: dict | None = None):
    """Write a reloadable model folder (atomic: written beside, then renamed)."""
    from safetensors.torch import save_file
    import shutil
    import tempfile

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        model.encoder.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        head = {k: v.detach().contiguous() for k, v in model.classifier.state_dict().items()}
        if model.pre_head is not None:
            head.update({f"pre_head.{k}": v.detach().contiguous() for k, v in model.pre_head.state_dict().items()})
        save_file(head, str(tmp / "classifier.safetensors"))
        meta = {"format": FOLDER_FORMAT, "pooling": model.pooling, "labels": list(labels),
                "layer_shapes": model.layer_shapes(), "model_type": model.encoder.config.model_type}
        if model.pre_head is not None:
            meta["pre_head"] = model.pre_head_act
        from probscale_edge.embedding import embedding_form

        meta.update(embedding_form(model))  # a low-rank word embedding is rebuilt before the weights load
        meta.update(extra or {})
        (tmp / "probscale.json").write_text(json.dumps(meta, indent=2))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def apply_layer_shapes(encoder, shapes: list[dict]) -> None:
    """Resize heads / FFN of each layer to ``shapes`` (weights are overwritten by the load after).

    A shape's ``head_ids`` (T5, MPNet: source heads a layer kept) rebuild that layer's selection of
    the shared relative-position bias, which is not a weight and so is not in model.safetensors."""
    from probscale_edge.prune import resize_layer

    adapter = get_adapter(encoder.config.model_type)
    for layer, shape in zip(adapter.layers(encoder), shapes):
        cur = adapter.layer_shape(encoder, layer)
        if cur != shape:
            resize_layer(encoder, adapter, layer, shape)


def load_classifier(folder) -> tuple[EncoderClassifier, object, dict]:
    """Reload a folder written by :func:`save_classifier` -> (model, tokenizer, meta)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    folder = Path(folder)
    meta_path = folder / "probscale.json"
    if not meta_path.exists():
        raise ProbscaleError(f"{folder} is not a probscale-edge model folder (no probscale.json)",
                             "pass a folder written by `probscale-edge prune` or `recover`")
    meta = json.loads(meta_path.read_text())
    config = AutoConfig.from_pretrained(str(folder))
    if config.model_type == "t5":
        from transformers import T5EncoderModel

        encoder = T5EncoderModel(config)
    else:
        encoder = AutoModel.from_config(config)
    adapter = get_adapter(config.model_type)
    adapter.drop_pooler(encoder)
    apply_layer_shapes(encoder, meta["layer_shapes"])
    from probscale_edge.embedding import install_from

    install_from(encoder, meta)
    state = load_file(str(folder / "model.safetensors"))
    prefix = getattr(encoder, "base_model_prefix", "")
    own = encoder.state_dict()
    fixed = {}
    for k, v in state.items():
        kk = k if k in own else (k[len(prefix) + 1:] if prefix and k.startswith(prefix + ".") else k)
        fixed[kk] = v
    missing, unexpected = encoder.load_state_dict(fixed, strict=False)
    # tied weights (e.g. T5's encoder.embed_tokens is shared.weight) are saved once
    ptr = {}
    for k, v in encoder.state_dict(keep_vars=True).items():
        ptr.setdefault(v.data_ptr(), []).append(k)
    aliases = {k for ks in ptr.values() if any(x in fixed for x in ks) for k in ks}
    missing = [m for m in missing if not m.endswith("position_ids") and m not in aliases]
    if missing or unexpected:
        raise ProbscaleError(f"{folder} weights do not match its shapes (missing {missing[:3]}, unexpected {unexpected[:3]})",
                             "rebuild the model folder")
    adapter.prepare_for_surgery(encoder)  # after the weights: a folder saved with shared layers loads as saved
    model = EncoderClassifier(encoder, len(meta["labels"]), pooling=meta["pooling"], pre_head=meta.get("pre_head"))
    head = load_file(str(folder / "classifier.safetensors"))
    model.classifier.load_state_dict({k: v for k, v in head.items() if not k.startswith("pre_head.")})
    if model.pre_head is not None:
        model.pre_head.load_state_dict({k[len("pre_head."):]: v for k, v in head.items() if k.startswith("pre_head.")})
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return model, tokenizer, meta


def length_limits(encoder, tokenizer, cap: int) -> dict:
    """The longest input this model and tokenizer take, capped by ``cap``: {"cap", "model", "tokenizer", "used"}.
    The model's limit is its position table (less the padding offset of RoBERTa-style positions); families
    with relative positions only (T5) have none."""
    c = encoder.config
    model = getattr(c, "max_position_embeddings", None) if c.model_type != "t5" else None
    pad = getattr(get_adapter(c.model_type).embeddings(encoder), "padding_idx", None) if model else None
    if pad is not None:  # RoBERTa-style positions start after the padding index
        model -= int(pad) + 1
    tok = getattr(tokenizer, "model_max_length", None)
    tok = int(tok) if isinstance(tok, (int, float)) and 0 < tok < 10**7 else None
    used = min(x for x in (cap, model, tok) if x is not None)
    return {"cap": cap, "model": model, "tokenizer": tok, "used": int(used)}


def tokenize(tokenizer, texts, pairs=None, max_length=128):
    kw = dict(padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return tokenizer(list(texts), list(pairs), **kw) if pairs is not None else tokenizer(list(texts), **kw)


def predict_logits(model, tokenizer, texts, pairs=None, batch_size=64, max_length=128, progress=None):
    """Batched logits in the original order (batches sorted by length to save padding).

    Inside ``distributed.collective()`` under ``torchrun``, each rank computes a shard on its
    device and every rank gets all rows."""
    from probscale_edge import distributed as dist

    def part(start, stop):
        sub_p = list(pairs[start:stop]) if pairs else None
        with dist.on_device(model):
            return predict_logits_local(model, tokenizer, list(texts[start:stop]), sub_p, batch_size, max_length, progress)

    return dist.sharded_map(len(texts), part)


@torch.no_grad()
def predict_logits_local(model, tokenizer, texts, pairs, batch_size, max_length, progress):
    import numpy as np

    model.eval()
    dev = next(model.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]) + (len(pairs[i]) if pairs else 0))
    out = np.zeros((len(texts), model.classifier.out_features), dtype=np.float32)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        enc = tokenize(tokenizer, [texts[i] for i in idx], [pairs[i] for i in idx] if pairs else None, max_length)
        args = {k: v.to(dev) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        out[idx] = model(**args).float().cpu().numpy()
        if progress:
            progress(len(idx))
    return out
