"""Data parallelism under torchrun (gloo, 2 CPU processes): the launcher users already run.

- sharded forward passes gather to exactly what one process computes;
- a training run killed mid-way resumes from its checkpoint to the very same weights;
- (slow, real all-MiniLM-L6-v2) `torchrun --nproc_per_node 2 -m probscale_edge build` gives the
  same pruned-model accuracy as one process, within the tolerance stated in docs/DISTRIBUTED.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

TOLERANCE = 0.025  # accuracy points (fraction), docs/DISTRIBUTED.md


def _torchrun(nproc, args, env=None, timeout=1800):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    return subprocess.run(cmd, env={**os.environ, "PROBSCALE_EDGE_QUIET": "1", **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)


def test_sharded_logits_and_features_equal_one_process(tmp_path, tiny_bert):
    texts = [f"sample number {i} " + "word " * (i % 13) for i in range(37)]  # 37: shards of unequal size
    script = tmp_path / "shard.py"
    script.write_text(textwrap.dedent(f"""
        import sys, numpy as np
        from probscale_edge import distributed as dist
        from probscale_edge.modeling import EncoderClassifier, load_encoder, predict_logits
        from probscale_edge.probe import ProbeSettings as ProbeConfig, extract_features
        texts = {texts!r}
        enc, tok, _ = load_encoder({str(tiny_bert)!r})
        import torch; torch.manual_seed(0)
        m = EncoderClassifier(enc, 3)
        with dist.collective():
            logits = predict_logits(m, tok, texts)
            feats = extract_features(m, tok, texts, None, ProbeConfig())
        picked = dist.broadcast(dist.rank() * 10 + 7)
        if dist.is_main():
            np.savez(sys.argv[1], logits=logits, feats=feats, picked=picked)
        dist.shutdown()
    """))
    out = tmp_path / "two.npz"
    r = _torchrun(2, [str(script), str(out)], timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = np.load(out)
    assert int(got["picked"]) == 7  # rank 0's value on every rank

    import torch

    from probscale_edge.modeling import EncoderClassifier, load_encoder, predict_logits
    from probscale_edge.probe import ProbeSettings as ProbeConfig, extract_features

    enc, tok, _ = load_encoder(tiny_bert)
    torch.manual_seed(0)
    m = EncoderClassifier(enc, 3)
    ref_logits = predict_logits(m, tok, texts)
    ref_feats = extract_features(m, tok, texts, None, ProbeConfig())
    assert got["logits"].shape == ref_logits.shape and got["feats"].shape == ref_feats.shape
    assert float(np.abs(got["logits"] - ref_logits).max()) <= 1e-5
    assert float(np.abs(got["feats"] - ref_feats).max()) <= 1e-5


def _train_script(tmp_path, tiny_bert, toy_csv):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import sys, torch
        from safetensors.torch import save_file
        from probscale_edge.data import load_task
        from probscale_edge.modeling import EncoderClassifier, load_encoder
        from probscale_edge.recover import TrainSettings as RecoverConfig, train_classifier
        t = load_task({str(toy_csv)!r})
        enc, tok, _ = load_encoder({str(tiny_bert)!r})
        torch.manual_seed(0)
        m = EncoderClassifier(enc, t.num_labels)
        cfg = RecoverConfig(epochs=2, batch_size=16, checkpoint_every=3)
        ck = sys.argv[2] if sys.argv[2] != "-" else None
        rep = train_classifier(m, tok, t.train, cfg, checkpoint=ck, resume=True)
        save_file({{k: v.contiguous() for k, v in m.state_dict().items()}}, sys.argv[1])
        print("RESUMED_AT", rep["resumed_at_step"], "STEPS", rep["steps"])
    """))
    return script


def test_training_killed_midway_resumes_to_the_same_weights(tmp_path, tiny_bert, toy_csv):
    from safetensors.numpy import load_file

    script = _train_script(tmp_path, tiny_bert, toy_csv)
    env = {**os.environ, "PROBSCALE_EDGE_QUIET": "1"}
    r = subprocess.run([sys.executable, str(script), str(tmp_path / "ref.safetensors"), "-"], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    ck = tmp_path / "train.pt"
    r = subprocess.run([sys.executable, str(script), str(tmp_path / "x.safetensors"), str(ck)],
                       env={**env, "PROBSCALE_EDGE_FAULT": "train-step:7"}, capture_output=True, text=True)
    assert r.returncode != 0 and ck.exists()  # killed after the step-6 checkpoint
    r = subprocess.run([sys.executable, str(script), str(tmp_path / "resumed.safetensors"), str(ck)], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "RESUMED_AT 6 STEPS 24" in r.stdout
    assert not ck.exists()  # removed once training finished
    a, b = load_file(tmp_path / "ref.safetensors"), load_file(tmp_path / "resumed.safetensors")
    assert a.keys() == b.keys()
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) == 0.0


@pytest.mark.slow
def test_two_processes_give_the_same_pruned_accuracy_as_one(tmp_path, minilm_dir):
    args = ["--max-train", "1200", "--max-eval", "400", "--epochs", "2", "--budget", "0.5", "--target", "x86_64",
            "--precision", "fp32", "--no-cache"]
    r2 = _torchrun(2, ["-m", "probscale_edge", "build", *args, "-o", str(tmp_path / "b2"), "--json",
                       str(tmp_path / "b2.json")])
    assert r2.returncode == 0, r2.stderr[-4000:]
    env = {**os.environ, "PROBSCALE_EDGE_QUIET": "1"}
    r1 = subprocess.run([sys.executable, "-m", "probscale_edge", "build", *args, "-o", str(tmp_path / "b1"), "--json",
                         str(tmp_path / "b1.json")], env=env, capture_output=True, text=True, timeout=1800)
    assert r1.returncode == 0, r1.stderr[-4000:]
    m1 = json.loads((tmp_path / "b1.json").read_text())["manifest"]
    m2 = json.loads((tmp_path / "b2.json").read_text())["manifest"]
    assert m2["stages"]["finetune"]["fit"]["world_size"] == 2 and m1["stages"]["finetune"]["fit"]["world_size"] == 1
    assert m2["stages"]["recover"]["world_size"] == 2
    a1, a2 = m1["validation"]["accuracy"], m2["validation"]["accuracy"]
    print("1 process:", a1, "\n2 processes:", a2)
    assert a1["full_finetuned_torch_fp32"] > 0.65  # a real, learnt teacher (rotten_tomatoes, 1,200 examples)
    assert abs(a1["full_finetuned_torch_fp32"] - a2["full_finetuned_torch_fp32"]) <= TOLERANCE
    assert abs(a1["pruned_torch_fp32"] - a2["pruned_torch_fp32"]) <= TOLERANCE
    assert m1["subnetwork"]["spec"]["keep_layers"] == m2["subnetwork"]["spec"]["keep_layers"]
    assert m1["parameters"]["pruned"] == m2["parameters"]["pruned"]
    from probscale_edge.runtime.bundle import verify_bundle

    verify_bundle(tmp_path / "b2")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".b")]  # no staging left by any rank
