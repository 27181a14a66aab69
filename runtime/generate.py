"""Torch-free text generation for a text2text (T5) bundle: greedy decoding over the three exported graphs with
a key/value cache (numpy + onnxruntime + tokenizers only), and its benchmark (time to first token, tokens per
second, per-request latency).

The graphs and their tensor names are the exporter's (``probscale_edge.converters.seq2seq``): ``encoder``
(``input_ids, attention_mask -> encoder_hidden_states``), ``decoder`` (the first step: ``decoder_input_ids,
encoder_hidden_states, encoder_attention_mask -> logits, present.*``) and ``decoder_with_past`` (one new token:
``decoder_input_ids, encoder_attention_mask, past_key_values.* -> logits, present.{i}.decoder.*``). The
cross-attention keys and values come from the first step and are reused by every later one.

Greedy decoding here is transformers' ``generate(num_beams=1, do_sample=False)``: a sequence stops at its first
eos, finished rows are filled with the pad id until every row has stopped, and decoding drops the special tokens.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from probscale_edge.errors import BundleError, ProbscaleError
from probscale_edge.runtime.bundle import MAX_NEW_TOKENS, TEXT2TEXT_GRAPHS as GRAPHS

SPEC_FORMAT = "probscale-edge/seq2seq-v1"


def _session(path: Path, threads: int | None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - ORT raises its own types for a file it cannot load
        raise BundleError(f"model file {path.name} cannot be loaded by ONNX Runtime ({str(e).splitlines()[0][:160]})",
                          "rebuild the bundle")


def check_spec(spec) -> dict:
    """The generation spec (``seq2seq.json``): its format, layer count and token ids, as the runtime reads them."""
    ok = isinstance(spec, dict) and spec.get("format") == SPEC_FORMAT
    if not ok:
        raise BundleError(f"the seq2seq spec has format {spec.get('format') if isinstance(spec, dict) else None!r}, "
                          f"expected {SPEC_FORMAT!r}", "rebuild the bundle with this probscale-edge")
    n = spec.get("num_decoder_layers")
    ids = [spec.get(k) for k in ("decoder_start_token_id", "eos_token_id")]
    if not (isinstance(n, int) and 0 < n <= 1024) or not all(isinstance(i, int) and i >= 0 for i in ids):
        raise BundleError("the seq2seq spec has no valid num_decoder_layers, decoder_start_token_id or eos_token_id",
                          "rebuild the bundle")
    for g in GRAPHS:
        io = spec.get(g)
        if not (isinstance(io, dict) and all(isinstance(io.get(k), list) for k in ("inputs", "outputs"))):
            raise BundleError(f"the seq2seq spec has no input/output names for {g}", "rebuild the bundle")
    return spec


def clean_up_tokenization(text: str) -> str:
    """transformers' ``clean_up_tokenization`` (what ``decode`` does with ``clean_up_tokenization_spaces``)."""
    for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
                 (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(a, b)
    return text


class Generator:
    """Greedy generation over three graph files. ``files``: {graph: path}; ``tokenizer``: a ``tokenizers.Tokenizer``
    (truncating at ``max_length``, padding off)."""

    def __init__(self, files: dict, spec: dict, tokenizer, max_length: int, pad_id: int = 0, threads=None,
                 max_new_tokens: int = 32, clean_up_spaces: bool = False):
        self.spec = check_spec(spec)
        self.clean_up_spaces = bool(clean_up_spaces)  # transformers' clean_up_tokenization_spaces, as the tokenizer had it
        self.tokenizer, self.max_length, self.threads = tokenizer, int(max_length), threads
        self.pad_id = int(spec.get("pad_token_id") if spec.get("pad_token_id") is not None else pad_id)
        self.start, self.eos = int(spec["decoder_start_token_id"]), int(spec["eos_token_id"])
        self.n_layers = int(spec["num_decoder_layers"])
        self.default_new_tokens = int(max_new_tokens)
        self.sessions = {g: _session(Path(files[g]), threads) for g in GRAPHS}
        for g, sess in self.sessions.items():
            got = [i.name for i in sess.get_inputs()]
            if sorted(got) != sorted(spec[g]["inputs"]):
                raise BundleError(f"graph {g} takes inputs {got[:4]}... where the seq2seq spec names "
                                  f"{spec[g]['inputs'][:4]}...", "rebuild the bundle; do not mix files of two bundles")
        self.vocab_size = self.sessions["decoder"].get_outputs()[0].shape[-1]

    @classmethod
    def from_export(cls, folder, tokenizer_path, max_length: int = 128, threads=None, max_new_tokens: int = 32,
                    clean_up_spaces: bool = False):
        """Over an export folder (``seq2seq.json`` + graphs) and a ``tokenizer.json``: what the build validates."""
        import json

        from probscale_edge.runtime.predictor import _load_tokenizer

        folder = Path(folder)
        spec = json.loads((folder / "seq2seq.json").read_text())
        files = {g: folder / spec["files"][g] for g in GRAPHS}
        return cls(files, spec, _load_tokenizer(Path(tokenizer_path), max_length), max_length, threads=threads,
                   max_new_tokens=max_new_tokens, clean_up_spaces=clean_up_spaces)

    # ------------------------------------------------------------------ encode / decode
    def encode(self, texts) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and mask, right-padded with the pad id to the longest text."""
        texts = [t if isinstance(t, str) else str(t) for t in texts]
        enc = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        rows = [e.ids or [self.eos] for e in enc(texts)]
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = r
            mask[i, :len(r)] = 1
        return ids, mask

    def decode(self, tokens: np.ndarray) -> list[str]:
        """Texts from generated rows (start token first): cut at the first eos, special tokens dropped."""
        out = []
        for row in np.asarray(tokens)[:, 1:].tolist():
            if self.eos in row:
                row = row[:row.index(self.eos)]
            text = self.tokenizer.decode(row, skip_special_tokens=True)
            out.append((clean_up_tokenization(text) if self.clean_up_spaces else text).strip())
        return out

    # ------------------------------------------------------------------ decoding
    def _run(self, graph: str, feed: dict) -> dict:
        names = self.spec[graph]["outputs"]
        return dict(zip(names, self.sessions[graph].run(names, feed)))

    def generate_ids(self, ids: np.ndarray, mask: np.ndarray, max_new_tokens: int, timings: dict | None = None):
        """Greedy tokens ``[batch, 1 + steps]`` (the start token first). ``timings`` receives ``first_token_s``
        (encoder + first decoder step), ``total_s`` and ``steps``."""
        t0 = time.perf_counter()
        hidden = self._run("encoder", {"input_ids": ids, "attention_mask": mask})["encoder_hidden_states"]
        n = ids.shape[0]
        tokens = np.full((n, 1), self.start, dtype=np.int64)
        done = np.zeros(n, dtype=bool)
        past: dict = {}
        kv = ("key", "value")
        for step in range(max_new_tokens):
            if step == 0:
                out = self._run("decoder", {"decoder_input_ids": tokens, "encoder_hidden_states": hidden,
                                            "encoder_attention_mask": mask})
                past = {f"past_key_values.{i}.encoder.{k}": out[f"present.{i}.encoder.{k}"]
                        for i in range(self.n_layers) for k in kv}
            else:
                out = self._run("decoder_with_past", {"decoder_input_ids": tokens[:, -1:],
                                                      "encoder_attention_mask": mask, **past})
            past.update({f"past_key_values.{i}.decoder.{k}": out[f"present.{i}.decoder.{k}"]
                         for i in range(self.n_layers) for k in kv})
            nxt = out["logits"][:, -1].argmax(-1).astype(np.int64)
            nxt = np.where(done, self.pad_id, nxt)
            done |= nxt == self.eos
            tokens = np.concatenate([tokens, nxt[:, None]], axis=1)
            if step == 0 and timings is not None:
                timings["first_token_s"] = time.perf_counter() - t0
            if done.all():
                break
        if timings is not None:
            timings["total_s"] = time.perf_counter() - t0
            timings["steps"] = tokens.shape[1] - 1
        return tokens

    def generate(self, texts, max_new_tokens: int | None = None, num_beams: int = 1, batch_size: int = 16) -> list[str]:
        """Greedy outputs for ``texts`` (batched by length; the order of ``texts`` is kept)."""
        if isinstance(texts, str):
            texts = [texts]
        max_new_tokens = self.default_new_tokens if max_new_tokens is None else max_new_tokens
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
            raise ProbscaleError(f"max_new_tokens {max_new_tokens!r} is not a whole number in [1, {MAX_NEW_TOKENS}]",
                                 "pass e.g. max_new_tokens=32")
        if num_beams != 1:
            raise ProbscaleError(f"num_beams {num_beams!r}: this runtime decodes greedily only", "pass num_beams=1")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ProbscaleError(f"batch size {batch_size!r} is not a whole number >= 1", "pass e.g. batch_size=16")
        out = [None] * len(texts)
        order = sorted(range(len(texts)), key=lambda i: len(str(texts[i])))
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            ids, mask = self.encode([texts[i] for i in idx])
            for i, text in zip(idx, self.decode(self.generate_ids(ids, mask, max_new_tokens))):
                out[i] = text
        return out


# ---------------------------------------------------------------------------------------------- benchmark
def bench_generate(pred, cfg, init_ms: float, rss0, eval_texts=None, eval_targets=None) -> dict:
    """Per request (batch ``cfg.batch_size``): time to first token (tokenize + encoder + first decoder step),
    decode tokens per second (new tokens after the first / the time after the first), end-to-end latency."""
    from probscale_edge.runtime.bench import DEFAULT_TEXT, _rss_peak_bytes, percentiles

    g, m = pred.generator, pred.manifest
    texts = list(cfg.texts) or [DEFAULT_TEXT]
    batch = [[texts[(i * cfg.batch_size + j) % len(texts)] for j in range(cfg.batch_size)]
             for i in range(min(cfg.num_runs, len(texts)) or 1)]
    new = g.default_new_tokens

    def one(i):
        t = time.perf_counter()
        ids, mask = g.encode(batch[i % len(batch)])
        tm = {}
        tokens = g.generate_ids(ids, mask, new, tm)
        g.decode(tokens)
        tok_ms = (time.perf_counter() - t) * 1000 - tm["total_s"] * 1000
        return tok_ms + tm["first_token_s"] * 1000, (time.perf_counter() - t) * 1000, tm

    first = one(0)[1]
    for i in range(cfg.warmup_runs):
        one(i)
    ttft, e2e, tps, steps = [], [], [], []
    for i in range(cfg.num_runs):
        a, b, tm = one(i)
        ttft.append(a)
        e2e.append(b)
        steps.append(tm["steps"])
        if tm["steps"] > 1 and tm["total_s"] > tm["first_token_s"]:
            tps.append(cfg.batch_size * (tm["steps"] - 1) / (tm["total_s"] - tm["first_token_s"]))
    files = m["model"]["graphs"]
    out = {"schema": "probscale-edge.bench/1", "kind": "text2text", "bundle": str(pred.path), "backend": "onnxruntime",
           "model_file": ",".join(files.values()), "precision": m["model"].get("precision"), "threads": cfg.threads,
           "batch_size": cfg.batch_size, "warmup_runs": cfg.warmup_runs, "num_runs": cfg.num_runs, "init_ms": init_ms,
           "first_inference_ms": first, "latency": percentiles(e2e), "time_to_first_token": percentiles(ttft),
           "tokens_per_second": {"p50": float(np.median(tps)) if tps else None, "mean": float(np.mean(tps)) if tps else None},
           "new_tokens": {"max": new, "mean_generated": float(np.mean(steps))},
           "model_bytes": sum(m["files"][f]["bytes"] for f in files.values()),
           "bundle_bytes": sum(f["bytes"] for f in m["files"].values()),
           "parameters": m.get("parameters", {}).get("pruned"), "rss_before_bytes": rss0,
           "peak_rss_bytes": _rss_peak_bytes()}
    if eval_texts is not None and eval_targets is not None:
        from probscale_edge.text2text import score

        t = time.perf_counter()
        metric = (m.get("task") or {}).get("metric", "exact_match")
        out.update(accuracy=score(metric, g.generate(list(eval_texts)), list(eval_targets)), metric=metric,
                   eval_examples=len(eval_targets), eval_seconds=time.perf_counter() - t)
    return out


def open_bundle(bundle: Path, manifest: dict, threads=None) -> Generator:
    """The generator of a verified text2text bundle: its spec (read bounded, parsed strictly) and graphs."""
    from probscale_edge.runtime.bundle import MAX_MANIFEST_BYTES, _read_bounded, parse_json
    from probscale_edge.runtime.predictor import _load_tokenizer

    m, tk = manifest["model"], manifest["tokenizer"]
    spec = parse_json(_read_bounded(bundle / m["spec_file"], m["spec_file"], MAX_MANIFEST_BYTES), m["spec_file"])
    tok = _load_tokenizer(bundle / tk["file"], int(tk["max_length"]))
    new = (manifest.get("generation") or {}).get("max_new_tokens", 32)
    return Generator({g: bundle / f for g, f in m["graphs"].items()}, spec, tok, int(tk["max_length"]),
                     int(tk.get("pad_id", 0)), threads, int(new), tk.get("clean_up_tokenization_spaces") is True)
