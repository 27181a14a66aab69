"""probscale_edge.sentence: the sentence-transformers files, pooling, losses and metrics (no model weights
needed: hand-made folders and vectors whose answers are known)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from probscale_edge.errors import ProbscaleError
from probscale_edge.runtime.predictor import pool_embeddings
from probscale_edge.sentence import (SentenceConfig, distill_loss, fidelity, read_sentence_config,
                                     retrieval_metrics)


def _st_folder(d, modules, pooling=None):
    d.mkdir(parents=True, exist_ok=True)
    (d / "modules.json").write_text(json.dumps(modules))
    if pooling is not None:
        (d / "1_Pooling").mkdir()
        (d / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return d


MODS = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]


def test_reads_modules_and_pooling_config(tmp_path):
    sc = read_sentence_config(_st_folder(tmp_path / "a", MODS, {"pooling_mode_mean_tokens": True,
                                                               "pooling_mode_cls_token": False}))
    assert (sc.pooling, sc.normalize, sc.source) == ("mean", True, "modules.json")
    sc = read_sentence_config(_st_folder(tmp_path / "b", MODS[:2], {"pooling_mode_cls_token": True}))
    assert (sc.pooling, sc.normalize) == ("cls", False)


def test_published_and_default(tmp_path):
    (tmp_path / "all-MiniLM-L6-v2").mkdir()
    sc = read_sentence_config(tmp_path / "all-MiniLM-L6-v2")
    assert (sc.pooling, sc.normalize) == ("mean", True) and "published" in sc.source
    (tmp_path / "plain").mkdir()
    sc = read_sentence_config(tmp_path / "plain", default_pooling="cls")
    assert (sc.pooling, sc.normalize) == ("cls", False) and sc.source.startswith("default")


@pytest.mark.parametrize("mods,pool,msg", [
    (MODS, {"pooling_mode_max_tokens": True}, "pooling_mode_max_tokens"),
    (MODS + [{"type": "sentence_transformers.models.Dense", "path": "3_Dense"}], {"pooling_mode_mean_tokens": True},
     "Dense"),
    ({"not": "a list"}, None, "not a list of modules"),
])
def test_unsupported_or_malformed_folders_are_one_line_errors(tmp_path, mods, pool, msg):
    with pytest.raises(ProbscaleError) as e:
        read_sentence_config(_st_folder(tmp_path / "x", mods, pool))
    assert msg in str(e.value) and " -- fix: " in str(e.value) and "\n" not in str(e.value)


def test_broken_json_is_refused(tmp_path):
    d = tmp_path / "x"
    d.mkdir()
    (d / "modules.json").write_text("[{")
    with pytest.raises(ProbscaleError, match="not readable JSON"):
        read_sentence_config(d)


def test_numpy_pooling_equals_torch_pooling():
    from transformers import BertConfig, BertModel

    from probscale_edge.sentence import SentenceEncoder

    torch.manual_seed(0)
    enc = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32))
    tokens = torch.randn(4, 7, 16) * 3
    mask = torch.tensor([[1] * 7, [1] * 3 + [0] * 4, [1] + [0] * 6, [1] * 5 + [0] * 2])
    for pooling in ("mean", "cls"):
        for norm in (True, False):
            ref = SentenceEncoder(enc, SentenceConfig(pooling, norm, "t")).embed_from_tokens(tokens, mask).numpy()
            got = pool_embeddings(tokens.numpy(), mask.numpy(), pooling, norm)
            assert got.dtype == np.float32 and np.abs(got - ref).max() < 1e-6
    got = pool_embeddings(tokens.numpy(), mask.numpy(), "mean", False)
    assert np.allclose(got[1], tokens[1, :3].mean(0).numpy(), atol=1e-6)  # padding left out of the mean


def test_retrieval_metrics_known_answers():
    rng = np.random.default_rng(0)
    centres = np.eye(3)[:, :3] * 10
    y = np.repeat([0, 1, 2], 20)
    tight = centres[y] + rng.normal(size=(60, 3)) * 0.1
    m = retrieval_metrics(tight, y)
    assert m["recall@10"] == pytest.approx(1.0) and m["ndcg@10"] == pytest.approx(1.0) and m["knn_accuracy"] == 1.0
    noise = rng.normal(size=(600, 32))
    y2 = rng.integers(0, 4, 600)
    r = retrieval_metrics(noise, y2)
    assert abs(r["recall@10"] - 0.25) < 0.04 and r["knn_accuracy"] < 0.4  # chance level for random vectors


def test_capped_recall_with_a_small_class():
    # class 1 has 3 members: its best recall@10 is 2 of min(10, 2) others, not 2 of 10
    emb = np.array([[1, 0.0]] * 3 + [[0, 1.0]] * 30) + np.random.default_rng(1).normal(size=(33, 2)) * 0.01
    y = np.array([1] * 3 + [0] * 30)
    assert retrieval_metrics(emb, y)["recall@10"] == pytest.approx(1.0)


def test_fidelity_rotation_keeps_similarity_structure_not_cosine():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(200, 16))
    q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    same = fidelity(t, t)
    rot = fidelity(t @ q, t)
    assert same["mean_cosine"] == pytest.approx(1.0) and same["spearman"] == pytest.approx(1.0)
    assert rot["spearman"] == pytest.approx(1.0) and rot["mean_cosine"] < 0.5
    assert fidelity(rng.normal(size=(200, 16)), t)["spearman"] < 0.1
    assert fidelity(t[:, :8], t)["mean_cosine"] is None  # other widths: no cosine


def test_distill_loss_zero_at_the_teacher_and_grows_with_distance():
    torch.manual_seed(0)
    t = torch.randn(16, 8)
    loss0, cos0, kl0 = distill_loss(t.clone(), t)
    assert float(loss0) == pytest.approx(0.0, abs=1e-6) and float(kl0) == pytest.approx(0.0, abs=1e-6)
    near = distill_loss(t + 0.1 * torch.randn(16, 8), t)[0]
    far = distill_loss(t + 2.0 * torch.randn(16, 8), t)[0]
    assert 0 < float(near) < float(far)
