"""Model folders checked before any heavy work: config shape (check_model_folder), tokenizer ids vs the
embedding and finite weights (load_encoder). Each fault is one ProbscaleError line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from helpers import make_tiny
from probscale_edge.errors import ProbscaleError
from probscale_edge.modeling import check_model_folder, load_encoder


def refused(match, fn, *args, **kw):
    with pytest.raises(ProbscaleError, match=match) as e:
        fn(*args, **kw)
    line = str(e.value)
    assert " -- fix: " in line and "\n" not in line, line
    return line


def copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def run_build(*args):
    return subprocess.run([sys.executable, "-m", "probscale_edge", "build", *args], capture_output=True, text=True)


def assert_one_line(proc, out, match):
    assert proc.returncode == 2, proc.stderr[-2000:]
    errs = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errs) == 1 and match in errs[0] and " -- fix: " in errs[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


# ----------------------------------------------------------------------------- config.json shape

@pytest.mark.parametrize("content,match", [
    ("[1, 2, 3]", "holds a JSON array, not a model config"),
    ('"bert"', "holds a JSON string, not a model config"),
    ("{}", r"is not a model config \(no model_type or architectures\)"),
    ('{"model_type": 5}', "has model_type 5, not a family name"),
    ('{"model_type": ["bert"]}', r'has model_type \["bert"\], not a family name'),
    ('{"model_type": "bert", "architectures": "BertModel"}', "not a list of class names"),
])
def test_config_that_is_not_a_config_object(tmp_path, tiny_bert, content, match):
    d = copy(tiny_bert, tmp_path / "m")
    (d / "config.json").write_text(content)
    refused(match, check_model_folder, d)


def test_config_without_model_type_names_its_architectures(tmp_path, tiny_bert):
    d = copy(tiny_bert, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg.pop("model_type")
    (d / "config.json").write_text(json.dumps(cfg))
    refused(r"has no model_type \(architectures: BertModel\)", check_model_folder, d)


def test_config_or_weights_that_are_folders(tmp_path, tiny_bert):
    d = copy(tiny_bert, tmp_path / "m")
    (d / "config.json").unlink()
    (d / "config.json").mkdir()
    refused("config.json is not a regular file", check_model_folder, d)
    d = copy(tiny_bert, tmp_path / "w")
    (d / "model.safetensors").unlink()
    (d / "model.safetensors").mkdir()
    refused("model.safetensors is not a regular file", check_model_folder, d)


def test_good_folder_passes(tiny_bert):
    assert check_model_folder(tiny_bert)["model_type"] == "bert"


# ----------------------------------------------------------------------------- tokenizer vs embedding

def test_tokenizer_larger_than_the_embedding(tmp_path, minilm_dir):
    from transformers import AutoTokenizer

    d = make_tiny("bert", tmp_path / "small-vocab")  # 1,000 embedding rows
    AutoTokenizer.from_pretrained(str(minilm_dir)).save_pretrained(str(d))  # 30,522 ids
    refused(r"produces ids up to 30,521, but the model's word embedding has 1,000 rows", load_encoder, str(d))


def test_added_token_beyond_the_embedding(tmp_path, tiny_bert):
    from transformers import AutoTokenizer

    d = copy(tiny_bert, tmp_path / "added")
    tok = AutoTokenizer.from_pretrained(str(d))
    tok.add_tokens(["zzqq_new_token"])
    tok.save_pretrained(str(d))
    refused(r"produces ids up to 30,522, but the model's word embedding has 30,522 rows", load_encoder, str(d))


# ----------------------------------------------------------------------------- finite weights

def _poison(folder, value, which=0):
    import torch
    from safetensors.torch import load_file, save_file

    st = load_file(str(folder / "model.safetensors"))
    name = sorted(k for k, v in st.items() if v.is_floating_point())[which]
    if value == "all-nan":
        st[name] = torch.full_like(st[name], float("nan"))
    else:
        st[name].view(-1)[0] = value
    save_file(st, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return name


@pytest.mark.parametrize("value,what", [("all-nan", "NaN"), (float("inf"), "1 Inf"), (float("nan"), "1 NaN")])
def test_non_finite_weights_name_the_first_bad_tensor(tmp_path, tiny_bert, value, what):
    d = copy(tiny_bert, tmp_path / "bad")
    name = _poison(d, value, which=2)
    prefix = "bert."  # safetensors keys may carry the base-model prefix; the message uses the module's name
    line = refused(f"are not finite: {name.removeprefix(prefix)} holds .*{what}", load_encoder, str(d))
    assert "restore it" in line


def test_good_weights_load(tiny_bert):
    enc, tok, _ = load_encoder(str(tiny_bert))
    assert len(tok) <= enc.get_input_embeddings().num_embeddings


# ----------------------------------------------------------------------------- through the CLI

def test_cli_config_array_is_one_line(tmp_path, tiny_bert, toy_csv):
    d = copy(tiny_bert, tmp_path / "m")
    (d / "config.json").write_text("[]")
    out = tmp_path / "bundle"
    assert_one_line(run_build("--model", str(d), "--data", str(toy_csv), "-o", str(out)), out, "holds a JSON array")


def test_cli_nan_weights_and_oversized_tokenizer_refused_before_the_fine_tune(tmp_path, tiny_bert, toy_csv, minilm_dir):
    from transformers import AutoTokenizer

    out = tmp_path / "bundle"
    d = copy(tiny_bert, tmp_path / "nan")
    _poison(d, "all-nan")
    p = run_build("--model", str(d), "--data", str(toy_csv), "--no-cache", "-o", str(out))
    assert_one_line(p, out, "are not finite")
    assert "fine-tun" not in p.stderr
    v = make_tiny("bert", tmp_path / "small-vocab")
    AutoTokenizer.from_pretrained(str(minilm_dir)).save_pretrained(str(v))
    p = run_build("--model", str(v), "--data", str(toy_csv), "--no-cache", "-o", str(out))
    assert_one_line(p, out, "but the model's word embedding has 1,000 rows")
    assert "fine-tun" not in p.stderr
