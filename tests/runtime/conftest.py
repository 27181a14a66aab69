"""Fixtures for the runtime tests: a hand-made bundle (tiny ONNX bag-of-words model, WordPiece tokenizer)
written in milliseconds by the runtime's own manifest writer, and elliptic-curve key pairs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "great", "bad", "awful", "movie", "film"]
LABELS = ["neg", "pos"]


def tiny_onnx(width: int = 2, static: bool = True) -> bytes:
    """logits[b, k] = sum over tokens of E[input_ids[b, t], k] * attention_mask[b, t] (good/great: pos)."""
    import numpy as np

    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    emb = np.zeros((len(VOCAB), width), np.float32)
    for w in ("good", "great"):
        emb[VOCAB.index(w), 1 % width] = 1.0
    for w in ("bad", "awful"):
        emb[VOCAB.index(w), 0] = 1.0
    nodes = [helper.make_node("Gather", ["E", "input_ids"], ["e"]),
             helper.make_node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["mf", "ax2"], ["m3"]),
             helper.make_node("Mul", ["e", "m3"], ["em"]),
             helper.make_node("ReduceSum", ["em", "ax1"], ["summed" if not static else "logits"], keepdims=0)]
    if not static:  # a Reshape to [batch, -1] hides the width from shape inference: known only after a run
        nodes += [helper.make_node("Shape", ["input_ids"], ["shp"]),
                  helper.make_node("Slice", ["shp", "zero", "one"], ["b"]),
                  helper.make_node("Concat", ["b", "minus1"], ["to"], axis=0),
                  helper.make_node("Reshape", ["summed", "to"], ["logits"])]
    inits = [numpy_helper.from_array(emb, "E"), numpy_helper.from_array(np.array([2], np.int64), "ax2"),
             numpy_helper.from_array(np.array([1], np.int64), "ax1")]
    inits += [numpy_helper.from_array(np.array([v], np.int64), n) for n, v in (("zero", 0), ("one", 1), ("minus1", -1))]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in ("input_ids", "attention_mask")]
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", width if static else "labels"])
    graph = helper.make_graph(nodes, "tiny", inputs, [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def tiny_tokenizer_json() -> str:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tok.to_str()


def base_manifest(max_length: int = 16) -> dict:
    return {"created_by": "tests/runtime (hand-made bundle)", "labels": list(LABELS), "task": {"name": "tiny"},
            "model": {"file": "model.onnx", "format": "onnx", "precision": "fp32",
                      "inputs": ["input_ids", "attention_mask"], "outputs": ["logits"]},
            "tokenizer": {"file": "tokenizer.json", "vocab_file": "vocab.txt", "max_length": max_length, "pad_id": 0,
                          "do_lower_case": True}}


def make_bundle(folder: Path, model: bytes, tokenizer: str, manifest: dict | None = None) -> Path:
    from probscale_edge.runtime.bundle import write_manifest

    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(model)
    (folder / "tokenizer.json").write_text(tokenizer, encoding="utf-8")
    (folder / "vocab.txt").write_text("".join(w + "\n" for w in VOCAB), encoding="utf-8")
    (folder / "labels.json").write_text(json.dumps(LABELS))
    write_manifest(folder, manifest or base_manifest())
    return folder


@pytest.fixture(scope="session")
def hand_bundle(tmp_path_factory):
    """A pristine hand-made bundle (do not change it: copy it with ``bundle_copy``)."""
    return make_bundle(tmp_path_factory.mktemp("hand") / "bundle", tiny_onnx(), tiny_tokenizer_json())


@pytest.fixture
def bundle_copy(hand_bundle, tmp_path):
    """A fresh copy of the hand-made bundle to tamper with."""
    def copy(name: str = "bundle") -> Path:
        return Path(shutil.copytree(hand_bundle, tmp_path / name))
    return copy


@pytest.fixture(scope="session")
def ec_keys(tmp_path_factory):
    """Two P-256 key pairs (PEM): {"a": (private, public), "b": (private, public)}."""
    pytest.importorskip("model_signing")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    d = tmp_path_factory.mktemp("keys")
    out = {}
    for name in ("a", "b"):
        k = ec.generate_private_key(ec.SECP256R1())
        priv, pub = d / f"{name}.pem", d / f"{name}.pub"
        priv.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
        pub.write_bytes(k.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo))
        out[name] = (priv, pub)
    return out


@pytest.fixture(scope="session")
def bundle_kit():
    """The builders above, for tests that need a bundle of another shape."""
    from types import SimpleNamespace

    return SimpleNamespace(tiny_onnx=tiny_onnx, tokenizer_json=tiny_tokenizer_json, base_manifest=base_manifest,
                           make_bundle=make_bundle, vocab=VOCAB, labels=LABELS)
