"""Hidden-state distillation: the layer map, the tokenizer alignment and the training signal.

Tiny random-init models with a real tokenizer: these check the mechanics, never accuracy (the
accuracy effect is measured in benchmarks/compression)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from helpers import make_tiny
from probscale_edge.data import load_task
from probscale_edge.modeling import EncoderClassifier, load_encoder, predict_logits
from probscale_edge.prune import SubnetworkSpec, apply_spec
from probscale_edge.recover import HiddenDistill, TeacherStates, TrainSettings as RecoverConfig, _Encoded, recover


def _teacher(tmp_path, minilm_dir, model_type="bert"):
    enc, tok, _ = load_encoder(str(make_tiny(model_type, tmp_path / model_type, minilm_dir)))
    return EncoderClassifier(enc, 2).eval(), tok


def _hidden_loss(student, stok, teacher, tok, layer_map, split, idx, states=None):
    hd = HiddenDistill(teacher, tok, layer_map, states)
    cfg = RecoverConfig()
    hd.prepare(student, split, cfg, torch.device("cpu"))
    enc = _Encoded(stok, split, cfg.max_length).batch(idx)
    with torch.no_grad(), student.capture_states() as states:
        student(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))
    return float(hd.loss(states, idx, enc["attention_mask"], amp=False)), hd


@pytest.mark.parametrize("model_type", ["bert", "mpnet", "distilbert"])
def test_layer_map_and_vocabulary_alignment(model_type, tmp_path, minilm_dir, toy_csv):
    """An uncut copy scores exactly 0 under the identity map, also through a trimmed vocabulary; a wrong
    map or a cut layer does not."""
    from probscale_edge.vocab import trim_vocabulary

    teacher, tok = _teacher(tmp_path, minilm_dir, model_type)
    split = load_task(str(toy_csv)).train
    idx = list(range(16))
    same = apply_spec(teacher, SubnetworkSpec([0, 1, 2, 3], {}, {}))
    stok, _ = trim_vocabulary(same, tok, split.texts)
    assert same.adapter.word_embeddings(same.encoder).weight.shape[0] < len(tok)  # really renumbered
    loss, hd = _hidden_loss(same, stok, teacher, tok, [0, 1, 2, 3], split, idx)
    assert loss <= 1e-10 and hd.mismatched == 0 and hd.rows == 16
    wrong, _ = _hidden_loss(same, stok, teacher, tok, [1, 0, 2, 3], split, idx)
    assert wrong > 1e-6  # random-init layers change the residual little, but not nothing
    cut = apply_spec(teacher, SubnetworkSpec([1, 3], {"1": [0, 2]}, {"3": list(range(0, 64, 4))}))
    loss_cut, _ = _hidden_loss(cut, tok, teacher, tok, [1, 3], split, idx)
    assert loss_cut > 1e-6
    with pytest.raises(Exception, match="layer map"):
        _hidden_loss(cut, tok, teacher, tok, [1, 2, 3], split, idx)


def test_distillation_pulls_hidden_states_to_the_teacher(tmp_path, minilm_dir, toy_csv):
    teacher, tok = _teacher(tmp_path, minilm_dir)
    task = load_task(str(toy_csv))
    spec = SubnetworkSpec([1, 3], {"1": [0, 2]}, {"3": list(range(0, 64, 4))})
    teacher_logits = predict_logits(teacher, tok, task.train.texts, max_length=128)
    idx = list(range(32))
    results = {}
    for weight in (0.0, 1.0):
        student = apply_spec(teacher, spec)
        torch.manual_seed(1)  # move the student well away from the teacher (random-init layers barely differ)
        with torch.no_grad():
            for layer in student.adapter.layers(student.encoder):
                for p in layer.parameters():
                    if p.ndim == 2:
                        p.add_(0.1 * torch.randn_like(p))
        before, _ = _hidden_loss(student, tok, teacher, tok, spec.keep_layers, task.train, idx)
        cfg = RecoverConfig(mode="distill", epochs=3, lr=1e-3, student_lr=1e-3, hidden_weight=weight, dev_fraction=0)
        rep = recover(student, tok, task.train, cfg, teacher_logits=teacher_logits,
                      hidden_teacher=HiddenDistill(teacher, tok, spec.keep_layers))
        after, _ = _hidden_loss(student, tok, teacher, tok, spec.keep_layers, task.train, idx)
        results[weight] = (before, after, rep)
    before, after, rep = results[1.0]
    assert rep["hidden_distill"]["rows_mismatched"] == 0 and rep["hidden_distill"]["layer_map"] == [1, 3]
    assert after < 0.5 * before  # the hidden loss really trains
    assert "hidden_distill" not in results[0.0][2]  # weight 0: logits only, the teacher is not run
    assert after < results[0.0][1]  # and it beats logits-only distillation on that measure


def test_cached_teacher_states_give_the_live_loss(tmp_path, minilm_dir, toy_csv):
    """The teacher's states computed once (fp16, length-sorted batches) give the loss of running the teacher at
    every step, through a trimmed vocabulary and a cut student; the file goes with release(); other rows refused."""
    from probscale_edge.vocab import trim_vocabulary

    teacher, tok = _teacher(tmp_path, minilm_dir)
    split = load_task(str(toy_csv)).train
    cut = apply_spec(teacher, SubnetworkSpec([1, 3], {"1": [0, 2]}, {"3": list(range(0, 64, 4))}))
    stok, _ = trim_vocabulary(cut, tok, split.texts)
    states = TeacherStates.compute(teacher, tok, split, 128, tmp_path / "states.npy", batch_size=7)
    assert states.table.shape[:2] == (sum(len(r) for r in states.encoded.fields["input_ids"]), 4)
    for idx in (list(range(16)), [len(split) - 1, 3, 0]):
        live, hd_live = _hidden_loss(cut, stok, teacher, tok, [1, 3], split, idx)
        cached, hd = _hidden_loss(cut, stok, teacher, tok, [1, 3], split, idx, states)
        assert live > 1e-6 and abs(cached - live) <= 2e-3 * live
        assert (hd.rows, hd.mismatched) == (hd_live.rows, hd_live.mismatched)
    with pytest.raises(Exception, match="other rows"):
        _hidden_loss(cut, stok, teacher, tok, [1, 3], split.subset(list(range(20))), [0], states)
    assert TeacherStates.compute(teacher, tok, split, 128, tmp_path / "x.npy", max_bytes=1000) is None
    states.release()
    assert not (tmp_path / "states.npy").exists()


def test_cli_rejects_hidden_weight_without_distill(tmp_path):
    r = subprocess.run([sys.executable, "-m", "probscale_edge", "build", "--recover", "finetune", "--distill-hidden", "1",
                        "-o", str(tmp_path / "b")], capture_output=True, text=True)
    assert r.returncode != 0
    assert "--distill-hidden 1 with --recover-mode finetune" in r.stderr
    assert not (tmp_path / "b").exists()
