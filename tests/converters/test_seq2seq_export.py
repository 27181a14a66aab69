"""T5 encoder-decoder export with a key/value cache: ONNX Runtime greedy generation equals PyTorch's.

Random-init T5 models (shapes and parity only). With T5's tied embeddings a random decoder mostly echoes its
input token (all pad), which would make token equality vacuous; the fixture models draw the decoder's input
embedding separately, and the tests check that the sequences really vary.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
onnxruntime = pytest.importorskip("onnxruntime")

from probscale_edge.converters.seq2seq import (  # noqa: E402
    SPEC_FILE,
    OrtSeq2Seq,
    export_t5_seq2seq,
    seq2seq_parity,
)

NEW_TOKENS = 20
TOLERANCE = 1e-4  # max |delta logit| vs PyTorch
VOCAB = 1000
PAD = 0


def tiny_t5(seed: int = 0, **overrides):
    """A random-init T5ForConditionalGeneration (d_model 64, 2 + 2 layers) with T5's special ids (pad 0, eos 1).

    The decoder's input embedding is drawn apart from the shared (input = output) one, so that the next token is
    not simply the current one."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    kw = dict(vocab_size=VOCAB, d_model=64, d_kv=16, num_heads=4, d_ff=128, num_layers=2, num_decoder_layers=2,
              pad_token_id=PAD, eos_token_id=1, decoder_start_token_id=PAD)
    kw.update(overrides)
    model = T5ForConditionalGeneration(T5Config(**kw)).eval()
    model.decoder.embed_tokens = torch.nn.Embedding(kw["vocab_size"], kw["d_model"])
    torch.nn.init.normal_(model.decoder.embed_tokens.weight)  # the scale of T5's own embedding init
    return model


def padded_batch(lengths=(9, 6, 3), seed: int = 1):
    """Three inputs of different lengths, right-padded with PAD (ids >= 2 so no pad/eos inside)."""
    rng = np.random.default_rng(seed)
    ids = np.full((len(lengths), max(lengths)), PAD, dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(2, VOCAB, n)
        mask[row, :n] = 1
    return ids, mask


CASES = {
    "d_model=heads*d_kv": dict(),
    "d_kv*heads!=d_model": dict(d_kv=24, num_heads=4),  # inner dim 96 vs d_model 64 (breaks Optimum's ORT model)
    "pruned decoder": dict(),
}
BASE = "d_model=heads*d_kv"


@pytest.fixture(scope="module")
def export_case(tmp_path_factory):
    """case -> (case, model, export dir, export report); each case is exported once per module."""
    done = {}

    def get(case):
        if case not in done:
            model = tiny_t5(**CASES[case])
            if case == "pruned decoder":
                # drop the block that owned the position bias: the harder case
                from probscale_edge.prune import SubnetworkSpec
                from probscale_edge.seq2seq import Seq2SeqSpec, apply_seq2seq_spec

                apply_seq2seq_spec(model, Seq2SeqSpec(SubnetworkSpec([0, 1]), SubnetworkSpec([1])), inplace=True)
            out = tmp_path_factory.mktemp("seq2seq")
            done[case] = case, model, out, export_t5_seq2seq(model, out, opset=17)
        return done[case]

    return get


@pytest.fixture(params=list(CASES))
def exported(request, export_case):
    return export_case(request.param)


@pytest.fixture
def base(export_case):
    """The plain case, for the checks that do not depend on the shapes."""
    return export_case(BASE)


def test_export_writes_three_graphs_and_spec(exported):
    case, model, out, report = exported
    spec = json.loads((out / SPEC_FILE).read_text())
    for graph in ("encoder", "decoder", "decoder_with_past"):
        assert (out / spec["files"][graph]).exists()
        assert report["bytes"][graph] > 0
    n_layers = len(model.decoder.block)
    assert spec["num_decoder_layers"] == report["num_decoder_layers"] == n_layers == (1 if case == "pruned decoder"
                                                                                      else 2)
    assert len(spec["decoder"]["outputs"]) == 1 + 4 * n_layers  # logits + self/cross key/value per layer
    assert len(spec["decoder_with_past"]["inputs"]) == 2 + 4 * n_layers
    assert len(spec["decoder_with_past"]["outputs"]) == 1 + 2 * n_layers  # logits + updated self-attn key/value
    inner = spec["d_kv"][0] * spec["self_attention_heads"][0]
    assert (inner != spec["d_model"]) == (case == "d_kv*heads!=d_model")


def test_greedy_tokens_equal_pytorch(exported):
    case, model, out, _ = exported
    ids, mask = padded_batch()
    ort_model = OrtSeq2Seq(out)
    r = seq2seq_parity(model, out, ids, mask, max_new_tokens=NEW_TOKENS, eos_token_id=None, ort_model=ort_model)

    assert r["tokens_equal"], f"{case}\nORT:   {r['ort_tokens']}\ntorch: {r['torch_tokens']}"
    assert r["new_tokens"] == NEW_TOKENS
    assert r["first_step_max_abs_logit"] <= TOLERANCE, r["first_step_max_abs_logit"]
    assert r["all_steps_max_abs_logit"] <= TOLERANCE, r["all_steps_max_abs_logit"]
    # the cache path did the work: one first step, then one decoder_with_past run per further token
    assert (out / "decoder_with_past.onnx").exists()
    assert r["calls"] == {"encoder": 1, "decoder": 1, "decoder_with_past": NEW_TOKENS - 1}
    # not a degenerate model: every sequence varies, and the inputs lead to different outputs
    tokens = np.asarray(r["ort_tokens"])[:, 1:]
    assert all(len(set(row)) >= 3 for row in tokens.tolist()), tokens  # random models may settle into a cycle
    assert len({tuple(row) for row in tokens.tolist()}) == len(tokens)


def test_eos_stops_and_pads_like_pytorch(base):
    _, model, out, _ = base
    ids, mask = padded_batch()
    ort_model = OrtSeq2Seq(out)
    free = ort_model.generate(ids, mask, NEW_TOKENS, eos_token_id=None)
    # an eos the model really emits mid-sequence: row 0's first token that it has not emitted before step 5
    step = next(s for s in range(5, NEW_TOKENS) if free[0, s] not in free[0, 1:s])
    eos = int(free[0, step])
    r = seq2seq_parity(model, out, ids, mask, max_new_tokens=NEW_TOKENS, eos_token_id=eos, ort_model=ort_model)

    assert r["tokens_equal"], f"ORT:   {r['ort_tokens']}\ntorch: {r['torch_tokens']}"
    got = np.asarray(r["ort_tokens"])
    assert got[0, step] == eos and (got[0, step + 1:] == PAD).all()  # stopped, then padded
    assert r["calls"]["decoder_with_past"] == got.shape[1] - 2


def test_first_step_decoder_takes_a_forced_prefix(exported):
    """decoder.onnx has a dynamic decoder length: a 3-token prefix gives PyTorch's logits at every position."""
    _, model, out, _ = exported
    ids, mask = padded_batch()
    prefix = np.array([[PAD, 5, 7], [PAD, 11, 13], [PAD, 17, 19]], dtype=np.int64)
    ort_model = OrtSeq2Seq(out)
    hidden = ort_model.encode(ids, mask)
    got = ort_model.sessions["decoder"].run(["logits"], {"decoder_input_ids": prefix, "encoder_hidden_states": hidden,
                                                         "encoder_attention_mask": mask})[0]
    with torch.no_grad():
        ref = model(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                    decoder_input_ids=torch.as_tensor(prefix)).logits.numpy()
    assert np.abs(got - ref).max() <= TOLERANCE


def test_generation_runs_without_torch(base):
    """OrtSeq2Seq imports neither torch nor transformers (the torch-free runtime install can run it)."""
    _, _, out, _ = base
    ids, mask = padded_batch()
    expected = OrtSeq2Seq(out).generate(ids, mask, NEW_TOKENS)
    code = (
        "import sys, json, numpy as np\n"
        "sys.modules['torch'] = None; sys.modules['transformers'] = None  # any import of them fails\n"
        "from probscale_edge.converters.seq2seq import OrtSeq2Seq\n"
        f"ids = np.array({ids.tolist()}); mask = np.array({mask.tolist()})\n"
        f"print(json.dumps(OrtSeq2Seq({str(out)!r}).generate(ids, mask, {NEW_TOKENS}).tolist()))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout) == expected.tolist()
