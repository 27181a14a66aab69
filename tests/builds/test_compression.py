"""Total-parameter compression: low-rank embeddings, the --compression budget, early stopping.

Random-init tiny models: these check shapes, arithmetic and parity, not accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import make_tiny


def _classifier(folder, labels=2):
    from probscale_edge.modeling import EncoderClassifier, load_encoder

    enc, tok, _ = load_encoder(str(folder))
    return EncoderClassifier(enc, labels), tok


def _round_trip(model, tok, tmp_path):
    """Saved, reloaded and exported to ONNX: both give the model's logits. -> (meta, ONNX path, ONNX feed, logits)"""
    import onnxruntime as ort

    from probscale_edge.converters.onnx_export import ExportConfig, export_onnx
    from probscale_edge.modeling import load_classifier, predict_logits, save_classifier

    texts = ["a fine film", "the plot was dull and far too long", "ok"]
    a = predict_logits(model, tok, texts)
    save_classifier(model, tok, tmp_path / "saved", ["n", "p"])
    re, rtok, meta = load_classifier(tmp_path / "saved")
    assert np.abs(predict_logits(re, rtok, texts) - a).max() <= 1e-6
    export_onnx(re, rtok, tmp_path / "m.onnx", ExportConfig())
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    enc = rtok(texts, padding=True, return_tensors="np")
    feed = {i.name: enc[i.name].astype(np.int64) for i in sess.get_inputs()}
    assert np.abs(sess.run(None, feed)[0] - a).max() <= 1e-4
    return meta, tmp_path / "m.onnx", feed, a


@pytest.mark.parametrize("family", ["bert", "mpnet", "distilbert"])
def test_factorized_embedding_is_the_best_low_rank_and_reloads_and_exports(tmp_path, minilm_dir, family):
    from probscale_edge.embedding import FactorizedEmbedding, embedding_rank, factorize_embeddings

    model, tok = _classifier(make_tiny(family, tmp_path / family, minilm_dir))
    W = model.adapter.word_embeddings(model.encoder).weight.detach().double().clone()
    rep = factorize_embeddings(model, 8)
    emb = model.adapter.word_embeddings(model.encoder)
    assert isinstance(emb, FactorizedEmbedding) and embedding_rank(model) == 8
    # Eckart-Young: the error equals the energy of the dropped singular values
    S = torch.linalg.svdvals(W)
    want = float(torch.sqrt((S[8:] ** 2).sum() / (S ** 2).sum()))
    assert rep.relative_error == pytest.approx(want, rel=1e-4)
    assert rep.params_after == W.shape[0] * 8 + 8 * W.shape[1] < rep.params_before / 3
    assert sum(p.numel() for p in emb.parameters()) == rep.params_after
    meta, _, _, _ = _round_trip(model, tok, tmp_path)
    assert meta["embedding_rank"] == 8


def test_dense_rows_keep_the_most_used_tokens_exact_and_reload_and_export(tmp_path, minilm_dir):
    """--embedding-dense-rows K: the K heaviest rows are exact, every other row is its projection onto the subspace
    fitted to those rows; K exact rows for K low-rank ones; the form reloads and exports (ONNX fp32, int8)."""
    from probscale_edge.embedding import FactorizedEmbedding, embedding_params_after, factorize_embeddings

    model, tok = _classifier(make_tiny("bert", tmp_path / "b", minilm_dir))
    W = model.adapter.word_embeddings(model.encoder).weight.detach().double().clone()
    V, H = W.shape
    weights = torch.rand(V, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 1
    top = torch.argsort(weights, descending=True)[:50]
    rep = factorize_embeddings(model, 8, weights, dense_rows=50)
    emb = model.adapter.word_embeddings(model.encoder)
    assert isinstance(emb, FactorizedEmbedding) and emb.dense_rows == 50
    dense = emb.dense().detach().double()
    assert (dense[top] - W[top]).abs().max() <= 1e-5  # the heaviest rows are exact
    rest = torch.ones(V, dtype=torch.bool)
    rest[top] = False
    root = weights.sqrt()[:, None]
    Vh = torch.linalg.svd((root * W)[rest], full_matrices=False).Vh[:8]
    assert (dense[rest] - W[rest] @ Vh.T @ Vh).abs().max() <= 1e-4  # the rest: the subspace fitted to them
    assert rep.params_after == embedding_params_after(V, H, 8, 50) == (V - 50 + 1) * 8 + 8 * H + 51 * H
    assert sum(p.numel() for p in emb.parameters()) == rep.params_after  # the index is a buffer, not a parameter
    assert rep.dense_share == pytest.approx(float(weights[top].sum() / weights.sum()))
    meta, path, feed, a = _round_trip(model, tok, tmp_path)
    assert meta["embedding_rank"] == 8 and meta["embedding_dense_rows"] == 50
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(path), str(tmp_path / "q.onnx"), weight_type=QuantType.QInt8)
    q = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    assert np.abs(q.run(None, feed)[0] - a).max() <= 0.1


def test_dense_rows_need_a_rank_and_fewer_rows_than_the_vocabulary(tmp_path, minilm_dir):
    from probscale_edge.config import PruneConfig
    from probscale_edge.embedding import factorize_embeddings
    from probscale_edge.errors import ProbscaleError

    with pytest.raises(ProbscaleError, match="embedding-rank 0"):
        PruneConfig(embedding_rank=0, embedding_dense_rows=100)
    with pytest.raises(ProbscaleError, match="embedding_dense_rows|embedding-dense-rows"):
        PruneConfig(embedding_dense_rows=-1)
    model, _ = _classifier(make_tiny("bert", tmp_path / "b", minilm_dir))
    V = model.adapter.word_embeddings(model.encoder).weight.shape[0]
    with pytest.raises(ProbscaleError, match="below the vocabulary"):
        factorize_embeddings(model, 8, torch.ones(V), dense_rows=V)
    with pytest.raises(ProbscaleError, match="no token weights"):
        factorize_embeddings(model, 8, dense_rows=10)


@pytest.mark.parametrize("dense_rows", [0, 30])
def test_a_factorized_embedding_refits_to_a_lower_rank_and_reloads(tmp_path, minilm_dir, dense_rows):
    """The ladder's deep rungs lower the rank: the refit is the weighted best rank-r fit of the matrix the old
    factorization represents (exact rows stay exact), with r's parameters, and reloads and exports."""
    from probscale_edge.embedding import (embedding_params_after, embedding_rank, factorize_embeddings,
                                          refactorize_embeddings)
    from probscale_edge.errors import ProbscaleError

    model, tok = _classifier(make_tiny("bert", tmp_path / "b", minilm_dir))
    V, H = model.adapter.word_embeddings(model.encoder).weight.shape
    weights = torch.rand(V, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 1
    factorize_embeddings(model, 16, weights, dense_rows)
    old = model.adapter.word_embeddings(model.encoder).dense().detach().double().clone()
    rep = refactorize_embeddings(model, 8, weights, dense_rows)
    emb = model.adapter.word_embeddings(model.encoder)
    assert embedding_rank(model) == 8 and emb.dense_rows == dense_rows
    assert sum(p.numel() for p in emb.parameters()) == rep.params_after == embedding_params_after(V, H, 8, dense_rows)
    top = torch.argsort(weights, descending=True)[:dense_rows]
    rest = torch.ones(V, dtype=torch.bool)
    rest[top] = False
    Vh = torch.linalg.svd((weights.sqrt()[:, None] * old)[rest], full_matrices=False).Vh[:8]
    new = emb.dense().detach().double()
    assert (new[rest] - old[rest] @ Vh.T @ Vh).abs().max() <= 1e-4
    if dense_rows:
        assert (new[top] - old[top]).abs().max() <= 1e-5
    assert 0 < (new - old).abs().max()  # rank 8 is not rank 16
    meta, _, _, _ = _round_trip(model, tok, tmp_path)
    assert meta["embedding_rank"] == 8
    with pytest.raises(ProbscaleError, match="not below"):
        refactorize_embeddings(model, 8, weights, dense_rows)
    plain, _ = _classifier(make_tiny("bert", tmp_path / "p", minilm_dir))
    with pytest.raises(ProbscaleError, match="not factorized"):
        refactorize_embeddings(plain, 4)


def test_factorize_refuses_bad_ranks_and_tied_embeddings(tmp_path, minilm_dir):
    from probscale_edge.embedding import factorize_embeddings
    from probscale_edge.errors import ProbscaleError

    model, _ = _classifier(make_tiny("bert", tmp_path / "b", minilm_dir))
    for bad in (0, 32, 40):  # hidden size is 32
        with pytest.raises(ProbscaleError, match="embedding-rank"):
            factorize_embeddings(model, bad)
    t5, _ = _classifier(make_tiny("t5", tmp_path / "t5"))
    with pytest.raises(ProbscaleError, match="shares its embedding"):
        factorize_embeddings(t5, 4)


@pytest.mark.parametrize("dense_rows", [0, 20])
def test_compression_budget_reaches_the_total_parameter_ratio(tmp_path, tiny_bert, toy_csv, dense_rows):
    """--compression R with a trimmed, factorized embedding (and K exact rows): the built student has at most 1/R
    of the full model's total parameters, and the bundle reloads in the runtime with the build's accuracy."""
    from probscale_edge.data import load_local
    from probscale_edge.pipeline import BuildConfig, TaskSpec, build
    from probscale_edge.runtime import Predictor

    out = tmp_path / "bundle"
    m = build(BuildConfig.create(model=str(tiny_bert), tasks=[TaskSpec(str(toy_csv))], output=str(out), target="arm64",
                          compression=30, trim_vocab=True, embedding_rank=8, embedding_dense_rows=dense_rows,
                          epochs=2, lr=1e-3, student_lr=1e-3, use_cache=False,
                          latency_runs=3), log=lambda *_: None)
    full, pruned = m["parameters"]["original"]["total"], m["parameters"]["pruned"]["total"]
    assert m["stages"]["budget"]["budget"] < 1  # the layers had to be cut to reach 30x
    assert full / 30 * 0.7 <= pruned <= full / 30  # the budget is met and used, not wasted
    assert m["stages"]["embedding"]["rank"] == 8 and m["stages"]["embedding"]["dense_rows"] == dense_rows
    t = load_local(toy_csv)
    assert Predictor(out).accuracy(t.eval.texts, t.eval.labels) == pytest.approx(m["validation"]["accuracy"]["bundle"])


def test_compression_on_the_non_embedding_basis(tmp_path, tiny_bert, toy_csv):
    """--compression R --compression-basis non-embedding: R times fewer non-embedding parameters, however
    large the (untrimmed) embedding stays."""
    from probscale_edge.pipeline import BuildConfig, TaskSpec, build

    m = build(BuildConfig.create(model=str(tiny_bert), tasks=[TaskSpec(str(toy_csv))], output=str(tmp_path / "b"),
                          compression=4, compression_basis="non-embedding", recover_mode="none",
                          use_cache=False, latency_runs=3), log=lambda *_: None)
    full, pruned = m["parameters"]["original"], m["parameters"]["pruned"]
    assert m["stages"]["budget"]["basis"] == "non-embedding"
    assert 4 <= full["non_embedding"] / pruned["non_embedding"] <= 4 / 0.9  # met, and not wasted
    assert pruned["embedding"] == full["embedding"]  # no trimming asked: the ratio is not bought with the embedding
    with pytest.raises(Exception, match="compression-basis"):
        build(BuildConfig.create(model=str(tiny_bert), tasks=[TaskSpec(str(toy_csv))], output=str(tmp_path / "c"),
                          compression=4, compression_basis="embedding", use_cache=False), log=lambda *_: None)
    assert not (tmp_path / "c").exists()


def test_compression_that_leaves_no_room_is_a_clear_error(tmp_path, tiny_bert, toy_csv):
    from probscale_edge.errors import ProbscaleError
    from probscale_edge.pipeline import BuildConfig, TaskSpec, build

    out = tmp_path / "never"
    with pytest.raises(ProbscaleError, match="leaves no room") as e:
        build(BuildConfig.create(model=str(tiny_bert), tasks=[TaskSpec(str(toy_csv))], output=str(out), compression=8,
                          use_cache=False), log=lambda *_: None)
    assert "--trim-vocab" in e.value.fix
    assert not out.exists()


def test_early_stopping_keeps_the_best_dev_weights(tmp_path, tiny_bert, toy_csv):
    """A learning rate that first learns and then diverges: the recovery returns the weights that
    scored best on the held-out dev split, and reports where it stopped."""
    from probscale_edge.data import load_local
    from probscale_edge.recover import TrainSettings, recover

    t = load_local(toy_csv)
    model, tok = _classifier(tiny_bert)
    cfg = TrainSettings(mode="finetune", epochs=6, student_lr=3e-3, batch_size=16, dev_fraction=0.2,
                         eval_every=0.5, patience=3, checkpoint_every=0)
    rep = recover(model, tok, t.train, cfg)
    es = rep["early_stopping"]
    hist = es["history"]
    assert es["dev_examples"] == round(0.2 * len(t.train))
    assert es["best_dev_accuracy"] == max(h["accuracy"] for h in hist)
    best = [h for h in hist if h["step"] == es["best_step"]][0]
    assert best["accuracy"] == es["best_dev_accuracy"]
    if es["stopped_early"]:
        assert len([h for h in hist if h["step"] > es["best_step"]]) == cfg.patience
    # the returned weights are the best ones: re-scoring the dev split gives the recorded accuracy
    from probscale_edge.data import stratified_sample
    from probscale_edge.modeling import predict_logits

    dev = t.train.subset(sorted(stratified_sample(t.train.labels, es["dev_examples"], seed=cfg.seed)))
    acc = float((predict_logits(model, tok, dev.texts).argmax(-1) == np.asarray(dev.labels)).mean())
    assert acc == pytest.approx(es["best_dev_accuracy"])
