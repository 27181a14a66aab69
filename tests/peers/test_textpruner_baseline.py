"""TextPruner peer baseline (benchmarks/compression/textpruner_baseline.py) on a tiny random BERT:
prunes to the budget, still runs, and the pruned model round-trips through save/load_classifier."""

from __future__ import annotations

import copy
import importlib.util
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("textpruner")

ROOT = Path(__file__).resolve().parents[2]


def _baseline():
    path = ROOT / "benchmarks" / "compression" / "textpruner_baseline.py"
    spec = importlib.util.spec_from_file_location("textpruner_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _toy_split(n=48, seed=0):
    rng = random.Random(seed)
    pos = ["great", "wonderful", "superb", "lovely", "excellent", "brilliant"]
    neg = ["awful", "terrible", "dreadful", "boring", "horrible", "poor"]
    texts, labels = [], []
    for i in range(n):
        y = i % 2
        words = rng.sample(pos if y else neg, 2) + rng.sample(["film", "plot", "cast", "story", "score"], 2)
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(y)
    return SimpleNamespace(texts=texts, pairs=None, labels=labels)


def test_textpruner_prunes_to_budget_and_round_trips(minilm_dir, tmp_path):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from probscale_edge.modeling import EncoderClassifier, load_classifier, save_classifier, tokenize

    mod = _baseline()
    tok = AutoTokenizer.from_pretrained(str(minilm_dir))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=64, pad_token_id=0)
    model = EncoderClassifier(BertModel(cfg, add_pooling_layer=False), num_labels=2).eval()
    split = _toy_split()

    reference = copy.deepcopy(model)
    before = model.param_counts()["encoder_non_embedding"]
    target = before // 3
    lines = []
    rep = mod.prune_with_textpruner(model, tok, split, target, iterations=2, max_examples=32, batch_size=16,
                                    max_length=32, log=lines.append)

    after = model.param_counts()["encoder_non_embedding"]
    assert after <= target < before
    assert rep["params_after"]["encoder_non_embedding"] == after == rep["predicted_encoder_non_embedding"]
    assert rep["meets_target"] and rep["config"]["pruning_method"] == "iterative"
    assert rep["textpruner_version"] and rep["seconds"] > 0
    h, f = rep["config"]["target_num_of_heads"], rep["config"]["target_ffn_size"]
    assert model.layer_shapes() == [{"heads": h, "ffn": f}] * 2 and h < 4 and f < 128
    assert not hasattr(model.encoder, "prune_heads")  # the shim is gone after the call
    assert any("New num heads" in s for s in rep["iterations_log"])

    enc = tokenize(tok, split.texts[:8], None, 32)
    with torch.no_grad():
        logits = model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    assert logits.shape == (8, 2) and torch.isfinite(logits).all()

    # the physical cut (shim prune_heads + TextPruner's FFN slicing) equals TextPruner's own
    # keep_shape masking (zeroed weights) of the same heads and neurons on the unpruned model
    from textpruner import GeneralConfig, TransformerPruner

    head_mask = torch.tensor(rep["head_mask"], dtype=torch.float32)
    ffn_mask = torch.zeros(2, 128)
    for i, kept in enumerate(rep["ffn_kept"]):
        ffn_mask[i, kept] = 1
    assert head_mask.sum().item() == 2 * h and ffn_mask.sum().item() == 2 * f
    ref = TransformerPruner(reference, general_config=GeneralConfig(use_device="cpu", output_dir=str(tmp_path / "tp")),
                            base_model_prefix="encoder")
    ref.prune_with_masks(head_mask=head_mask, ffn_mask=ffn_mask, keep_shape=True)
    with torch.no_grad():
        masked = reference(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    assert (logits - masked).abs().max().item() <= 1e-5

    folder = save_classifier(model, tok, tmp_path / "pruned", ["neg", "pos"])
    model2, tok2, meta = load_classifier(folder)
    assert meta["layer_shapes"] == model.layer_shapes()
    with torch.no_grad():
        logits2 = model2(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    assert (logits - logits2).abs().max().item() <= 1e-5
    assert model2.param_counts() == model.param_counts()


def test_textpruner_rejects_unsupported_family(minilm_dir):
    import torch
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    from probscale_edge.modeling import EncoderClassifier

    mod = _baseline()
    tok = AutoTokenizer.from_pretrained(str(minilm_dir))
    torch.manual_seed(0)
    cfg = DistilBertConfig(vocab_size=tok.vocab_size, dim=32, n_layers=1, n_heads=4, hidden_dim=64,
                           max_position_embeddings=64, pad_token_id=0)
    model = EncoderClassifier(DistilBertModel(cfg), num_labels=2)
    with pytest.raises(ValueError, match="distilbert"):
        mod.prune_with_textpruner(model, tok, _toy_split(8), 10_000, log=lambda *_: None)
