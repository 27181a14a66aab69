"""Predictor: bundle -> tokenizer + inference session -> labels and probabilities, or sentence embeddings
(an embedding bundle, ``"kind": "embed"``: :meth:`Predictor.embed`, :meth:`Predictor.search`) (no torch)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from probscale_edge.errors import BundleError, ProbscaleError
from probscale_edge.runtime.bundle import resolve_public_key, verify_bundle

BACKENDS = ("onnxruntime", "litert")
FEEDS = ("input_ids", "attention_mask", "token_type_ids")  # what encode() makes


@dataclass
class Prediction:
    label: str
    index: int
    score: float
    probabilities: list


def pool_embeddings(tokens: np.ndarray, attention_mask: np.ndarray, pooling: str = "mean",
                    normalize: bool = True) -> np.ndarray:
    """Sentence embeddings [n, d] float32 from token embeddings [n, tokens, d]: the mean over the real tokens
    (``attention_mask`` 1) or the first token, then L2-normalized when ``normalize`` (as sentence-transformers'
    Pooling and Normalize modules, and torch's ``F.normalize(eps=1e-12)``)."""
    tokens = np.asarray(tokens, dtype=np.float32)
    if tokens.ndim != 3:
        raise BundleError(f"the model returns outputs of shape {tokens.shape}, not [texts, tokens, width]",
                          "rebuild the bundle")
    if pooling == "cls":
        e = tokens[:, 0]
    else:
        m = np.asarray(attention_mask, dtype=np.float32)[:, :, None]
        e = (tokens * m).sum(1) / np.maximum(m.sum(1), np.float32(1e-9))
    if normalize:
        e = e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), np.float32(1e-12))
    return e.astype(np.float32, copy=False)


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


class _OrtBackend:
    def __init__(self, path: Path, threads: int | None):
        import onnxruntime as ort

        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = int(threads)
            so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - ORT raises its own types for a file it cannot load
            raise BundleError(f"model file {path.name} cannot be loaded by ONNX Runtime ({str(e).splitlines()[0][:160]})",
                              "rebuild the bundle")
        self.inputs = [i.name for i in self.session.get_inputs()]
        unknown = sorted(set(self.inputs) - set(FEEDS))
        if unknown:
            raise BundleError(f"model file {path.name} wants inputs {', '.join(unknown)}", "rebuild the bundle")
        shape = self.session.get_outputs()[0].shape
        self.output_width = shape[-1] if shape and isinstance(shape[-1], int) else None  # None: known after a run

    def run(self, feed: dict) -> np.ndarray:
        return self.session.run(None, {k: feed[k] for k in self.inputs})[0]


class _LiteRTBackend:
    """LiteRT (successor of tflite-runtime). TFLite graphs have a fixed sequence length."""

    def __init__(self, path: Path, threads: int | None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            try:
                from tflite_runtime.interpreter import Interpreter  # devices that only have the old wheel
            except ImportError:
                raise ProbscaleError("this bundle holds a .tflite model but no LiteRT interpreter is installed",
                                     "pip install ai-edge-litert")
        try:
            self.interp = Interpreter(model_path=str(path), num_threads=threads or None)
            self.interp.allocate_tensors()
        except Exception as e:  # noqa: BLE001
            raise BundleError(f"model file {path.name} cannot be loaded by LiteRT ({str(e).splitlines()[0][:160]})",
                              "rebuild the bundle")
        self.in_details = {d["name"]: d for d in self.interp.get_input_details()}
        self.out = self.interp.get_output_details()[0]
        self.output_width = int(self.out["shape"][-1]) if len(self.out["shape"]) else None
        self.inputs = list(self.in_details)
        shapes = {tuple(d["shape"]) for d in self.in_details.values()}
        first = next(iter(shapes))
        # graphs from litert-torch are exported at [1, fixed sequence length]
        self.fixed_length = int(first[1]) if len(shapes) == 1 and len(first) == 2 else None

    def _key(self, name):
        for k in self.in_details:
            if name in k:
                return k
        raise BundleError(f"TFLite model has no input like {name}", "rebuild the bundle")

    def run(self, feed):
        outs = []
        n = next(iter(feed.values())).shape[0]
        for i in range(n):  # TFLite graphs are exported at batch 1
            for name, arr in feed.items():
                try:
                    k = self._key(name)
                except BundleError:
                    continue
                d = self.in_details[k]
                self.interp.set_tensor(d["index"], arr[i:i + 1].astype(d["dtype"]))
            self.interp.invoke()
            out = self.interp.get_tensor(self.out["index"])
            scale, zero = self.out["quantization"]
            # full-integer graphs (ai-edge-quantizer static_wi8_ai8) return int8 logits
            outs.append((out.astype(np.float32) - zero) * np.float32(scale) if scale else out.astype(np.float32))
        return np.concatenate(outs)


def _load_tokenizer(path: Path, max_length: int):
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 - the Rust side raises a plain Exception
        raise BundleError(f"tokenizer file {path.name} cannot be loaded ({str(e).splitlines()[0][:160]})",
                          "rebuild the bundle")
    tok.enable_truncation(max_length=max_length)
    tok.no_padding()
    return tok


class Predictor:
    """Load a bundle (verifying every checksum) and predict labels for texts.

    ``backend``: onnxruntime (``.onnx`` / ``.ort``) or litert (``.tflite``); default from the manifest.
    ``threads``: intra-op threads (None: the runtime's default).
    ``public_key``: an EC public key (PEM); the bundle must carry a valid ``bundle.sig`` made with its private
    key. None reads ``$PROBSCALE_EDGE_PUBLIC_KEY``; False checks no signature.
    ``verify=False`` still checks the manifest (digest, schema) and the layout, but hashes no file and so
    checks no signature (a ``public_key`` with it is refused).
    """

    def __init__(self, bundle, backend: str | None = None, threads: int | None = None, verify: bool = True,
                 model_file: str | None = None, public_key=None):
        t0 = time.perf_counter()
        self.path = Path(bundle)
        if not verify and public_key:
            raise ProbscaleError("a public key needs verify=True", "drop verify=False to check the signature")
        self.manifest = verify_bundle(self.path, public_key=public_key if verify else False, checksums=verify)
        self.public_key = resolve_public_key(public_key) if verify else None
        self.generator = None  # a text2text bundle's greedy generator (runtime/generate.py)
        if self.manifest.get("kind") == "text2text":
            if backend not in (None, "onnxruntime"):
                raise ProbscaleError(f"backend {backend!r}: a text2text bundle runs on ONNX Runtime only",
                                     "leave out the backend, or pass onnxruntime")
            self._open_text2text(threads)
            self.init_seconds = time.perf_counter() - t0
            return
        m = self.manifest["model"]
        tk = self.manifest["tokenizer"]
        fixed = m.get("fixed_sequence_length")
        tfl = self.manifest.get("tflite") or {}
        if backend == "litert" and model_file is None and not str(m["file"]).endswith(".tflite"):
            if not tfl.get("included"):
                raise ProbscaleError(f"bundle {self.path} has no TFLite model", "rebuild it with `probscale-edge build "
                                     "--tflite`, or use --backend onnxruntime")
            model_file, fixed = tfl["file"], tfl.get("sequence_length")  # the bundle's LiteRT model
        if model_file is not None and model_file not in self.manifest["files"]:
            raise BundleError(f"model file {model_file!r} is not one of the bundle's checksummed files",
                              "pass a file that the bundle's manifest lists")
        self.model_file = model_file or m["file"]
        self.embedding = self.manifest.get("embedding") if self.manifest.get("kind") == "embed" else None
        self._setup(self.path / self.model_file, self.path / tk["file"], list(self.manifest.get("labels") or []),
                    tk["max_length"], tk.get("pad_id", 0), backend, threads, fixed)
        self.input_names = list(m.get("inputs") or self.backend.inputs)
        self.init_seconds = time.perf_counter() - t0

    @classmethod
    def from_files(cls, model_path, tokenizer_path, labels, max_length: int = 128, pad_id: int = 0,
                   backend: str | None = None, threads: int | None = None,
                   embedding: dict | None = None) -> "Predictor":
        """A predictor over loose files (used by the build to validate exactly what the bundle will run);
        ``embedding`` ({"dimension", "pooling", "normalize"}, the manifest's section): an embedding model."""
        self = cls.__new__(cls)
        self.path = Path(model_path).parent
        self.manifest = {"model": {}, "files": {}}
        self.embedding = embedding
        self.model_file = Path(model_path).name
        self.public_key = None
        self._setup(Path(model_path), Path(tokenizer_path), list(labels), max_length, pad_id, backend, threads, None)
        self.input_names = list(self.backend.inputs)
        self.init_seconds = 0.0
        return self

    def _setup(self, model_path: Path, tokenizer_path: Path, labels, max_length, pad_id, backend, threads, fixed):
        if not labels and self.embedding is None:
            raise BundleError("the model has no labels", "rebuild the bundle")
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 0):
            raise ProbscaleError(f"threads {threads!r} is not a whole number >= 1", "pass e.g. threads=1, or None for the default")
        self.labels = labels
        self.max_length = int(max_length)
        backend = backend or ("litert" if str(model_path).endswith(".tflite") else "onnxruntime")
        if backend not in BACKENDS:
            raise ProbscaleError(f"unknown backend {backend!r}", f"use {' or '.join(BACKENDS)}")
        self.backend_name = backend
        self.threads = threads
        self.tokenizer = _load_tokenizer(tokenizer_path, self.max_length)
        if not 0 <= int(pad_id) < self.tokenizer.get_vocab_size():
            raise BundleError(f"tokenizer.pad_id {pad_id} is not in the tokenizer's vocabulary", "rebuild the bundle")
        self.pad_id = int(pad_id)
        self.fixed_length = fixed
        if not model_path.exists():
            raise BundleError(f"bundle model file {model_path.name} is missing", "rebuild the bundle")
        self.backend = (_OrtBackend if backend == "onnxruntime" else _LiteRTBackend)(model_path, threads)
        self.fixed_length = fixed or getattr(self.backend, "fixed_length", None)  # a .tflite fixes it
        self._check_width(self.backend.output_width)

    def _check_width(self, width):
        """The model's output width is the number of labels, or an embedding bundle's dimension (checked at load
        when the graph says it, else on every result)."""
        if self.embedding is not None:
            if width is not None and width != self.embedding["dimension"]:
                raise BundleError(f"the model gives {width}-wide token embeddings but the bundle says "
                                  f"{self.embedding['dimension']}", "rebuild the bundle; do not edit its manifest")
            return
        if width is not None and width != len(self.labels):
            raise BundleError(f"the model gives {width} scores per text but the bundle has {len(self.labels)} labels",
                              "rebuild the bundle; do not edit its labels")

    # ------------------------------------------------------------------ pre/post-processing
    def encode(self, texts, pairs=None) -> dict:
        """Token ids, attention mask and type ids, padded to the longest text (or the fixed length)."""
        texts = [t if isinstance(t, str) else str(t) for t in texts]
        # encode_batch_fast (tokenizers >= 0.20) skips the character offsets, which a classifier never
        # reads: half the tokenizing time of a batch-1 call
        enc = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        encs = enc(list(zip(texts, [str(p) for p in pairs])) if pairs is not None else texts)
        ids = [e.ids for e in encs]  # each property access copies the ids out of Rust: once per row
        types = [e.type_ids for e in encs]
        n = len(ids)
        width = self.fixed_length or max((len(r) for r in ids), default=1)
        if all(len(r) == width for r in ids):  # nothing to pad or cut (a single text at its own length)
            return {"input_ids": np.array(ids, dtype=np.int64).reshape(n, width),
                    "attention_mask": np.ones((n, width), dtype=np.int64),
                    "token_type_ids": np.array(types, dtype=np.int64).reshape(n, width)}
        out = {"input_ids": np.full((n, width), self.pad_id, dtype=np.int64),
               "attention_mask": np.zeros((n, width), dtype=np.int64),
               "token_type_ids": np.zeros((n, width), dtype=np.int64)}
        for r in range(n):  # each row cut or right-padded to the width
            k = min(len(ids[r]), width)
            out["input_ids"][r, :k] = ids[r][:k]
            out["attention_mask"][r, :k] = 1
            out["token_type_ids"][r, :k] = types[r][:k]
        return out

    def logits(self, texts, pairs=None, batch_size: int = 32, timings: dict | None = None) -> np.ndarray:
        """Logits [n, labels]. ``timings``: a dict that receives the seconds spent tokenizing
        (``tokenize_s``), in the inference session (``session_s``) and in post-processing (``post_s``)."""
        if isinstance(texts, str):
            texts = [texts]
        if getattr(self, "generator", None) is not None:
            raise ProbscaleError(f"bundle {self.path} is a text2text bundle: it generates text, it has no scores",
                                 "call Predictor.generate(texts) (or `probscale-edge predict`, which generates)")
        if self.embedding is not None:
            raise ProbscaleError(f"bundle {self.path} is an embedding bundle: it has no labels to score",
                                 "call Predictor.embed(texts) (or `probscale-edge predict`, which prints embeddings)")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ProbscaleError(f"batch size {batch_size!r} is not a whole number >= 1", "pass e.g. batch_size=32")
        clock = time.perf_counter
        t_pre = t_run = 0.0
        t0 = clock()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths batch together
        parts = []
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            a = clock()
            feed = self.encode([texts[i] for i in idx], [pairs[i] for i in idx] if pairs is not None else None)
            b = clock()
            lg = self.backend.run(feed)
            if lg.ndim != 2:
                raise BundleError(f"the model returns scores of shape {lg.shape}, not [texts, labels]", "rebuild the bundle")
            self._check_width(lg.shape[1])
            parts.append(lg)
            t_pre += b - a
            t_run += clock() - b
        if not parts:
            out = np.zeros((0, len(self.labels)), np.float32)
        else:
            out = parts[0] if len(parts) == 1 else np.concatenate(parts)
            if order != list(range(len(order))):
                out = out[np.argsort(order)]  # back to the input order
            if out.dtype != np.float32:
                out = out.astype(np.float32)
        if timings is not None:
            timings["tokenize_s"] = timings.get("tokenize_s", 0.0) + t_pre
            timings["session_s"] = timings.get("session_s", 0.0) + t_run
            timings["post_s"] = timings.get("post_s", 0.0) + (clock() - t0 - t_pre - t_run)
        return out

    def predict(self, texts, pairs=None, batch_size: int = 32, timings: dict | None = None) -> list[Prediction]:
        """Labels and probabilities; ``timings`` as in :meth:`logits` (softmax and labels count as post)."""
        lg = self.logits(texts, pairs, batch_size, timings)
        t0 = time.perf_counter()
        out = []
        for row in lg.tolist():  # a handful of labels: plain Python beats numpy's per-call cost here
            top = max(row)
            ex = [math.exp(v - top) for v in row]
            total = sum(ex)
            probs = [v / total for v in ex]
            i = max(range(len(probs)), key=probs.__getitem__)
            out.append(Prediction(self.labels[i], i, probs[i], probs))
        if timings is not None:
            timings["post_s"] = timings.get("post_s", 0.0) + time.perf_counter() - t0
        return out

    def accuracy(self, texts, labels, pairs=None, batch_size: int = 32) -> float:
        lg = self.logits(texts, pairs, batch_size)
        return float((lg.argmax(-1) == np.asarray(labels)).mean()) if len(labels) else float("nan")

    # ------------------------------------------------------------------ embedding bundles
    def embed_outputs(self, outputs: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """The bundle's pooling and normalization on the model's token embeddings."""
        e = self.embedding
        if outputs.ndim != 3 or outputs.shape[-1] != e["dimension"]:
            raise BundleError(f"the model returns outputs of shape {outputs.shape}, not [texts, tokens, "
                              f"{e['dimension']}]", "rebuild the bundle")
        return pool_embeddings(outputs, attention_mask, e["pooling"], e["normalize"])

    def embed(self, texts, batch_size: int = 32, timings: dict | None = None) -> np.ndarray:
        """Sentence embeddings float32 [n, dimension], pooled and normalized as the teacher (torch-free)."""
        if self.embedding is None:
            raise ProbscaleError(f"bundle {self.path} is a classification bundle, not an embedding bundle",
                                 "use Predictor.predict(texts), or build one with `probscale-edge build --task embed`")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ProbscaleError(f"batch size {batch_size!r} is not a whole number >= 1", "pass e.g. batch_size=32")
        clock = time.perf_counter
        t0, t_pre, t_run = clock(), 0.0, 0.0
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.embedding["dimension"]), np.float32)
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            a = clock()
            feed = self.encode([texts[i] for i in idx])
            b = clock()
            tokens = self.backend.run(feed)
            t_pre, t_run = t_pre + b - a, t_run + clock() - b
            out[idx] = self.embed_outputs(tokens, feed["attention_mask"])
        if timings is not None:
            timings["tokenize_s"] = timings.get("tokenize_s", 0.0) + t_pre
            timings["session_s"] = timings.get("session_s", 0.0) + t_run
            timings["post_s"] = timings.get("post_s", 0.0) + (clock() - t0 - t_pre - t_run)
        return out

    def search(self, queries, index: np.ndarray, k: int = 10) -> list[list[tuple[int, float]]]:
        """The ``k`` rows of ``index`` (embeddings from :meth:`embed`) most similar to each query, by cosine
        similarity: for each query a list of (row, similarity), best first."""
        index = np.asarray(index, dtype=np.float32)
        if index.ndim != 2 or (self.embedding is not None and index.shape[1] != self.embedding["dimension"]):
            raise ProbscaleError(f"the index has shape {index.shape}, not [rows, {(self.embedding or {}).get('dimension')}]",
                                 "build the index with Predictor.embed(texts) of this bundle")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ProbscaleError(f"k {k!r} is not a whole number >= 1", "pass e.g. k=10")
        q = self.embed(queries)
        unit = index / np.maximum(np.linalg.norm(index, axis=1, keepdims=True), np.float32(1e-12))
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), np.float32(1e-12))
        sims = q @ unit.T
        k = min(k, len(index))
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < len(index) else np.tile(np.arange(k), (len(q), 1))
        out = []
        for r, row in enumerate(top):
            best = row[np.argsort(-sims[r, row], kind="stable")]
            out.append([(int(i), float(sims[r, i])) for i in best])
        return out

    # ------------------------------------------------------------------ text2text bundles
    def _open_text2text(self, threads):
        """A T5 bundle: tokenizer, the three graphs and their generation spec (runtime/generate.py)."""
        from probscale_edge.runtime.generate import open_bundle

        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
            raise ProbscaleError(f"threads {threads!r} is not a whole number >= 1", "pass e.g. threads=1, or None for the default")
        self.embedding, self.threads, self.backend_name, self.fixed_length = None, threads, "onnxruntime", None
        self.labels = list(self.manifest.get("labels") or [])
        self.model_file = self.manifest["model"]["file"]
        self.generator = open_bundle(self.path, self.manifest, threads)
        self.tokenizer, self.max_length, self.pad_id = self.generator.tokenizer, self.generator.max_length, self.generator.pad_id
        self.input_names = ["input_ids", "attention_mask"]

    def generate(self, texts, max_new_tokens: int | None = None, num_beams: int = 1, batch_size: int = 16) -> list[str]:
        """Greedy outputs of a text2text bundle for ``texts`` (torch-free, key/value cache); ``max_new_tokens``
        defaults to the bundle's ``generation.max_new_tokens``."""
        if getattr(self, "generator", None) is None:
            raise ProbscaleError(f"bundle {self.path} is not a text2text bundle", "use Predictor.predict(texts), or "
                                 "build one with `probscale-edge build --kind text2text`")
        return self.generator.generate(texts, max_new_tokens, num_beams, batch_size)
