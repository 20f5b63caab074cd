"""Bad checkpoints give one clear error naming the file and the tensor, never a deep traceback."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel  # noqa: E402

from lmforge.checkpoint.io import load_model  # noqa: E402
from lmforge.errors import CheckpointError  # noqa: E402


@pytest.fixture()
def hf_gpt2(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=64)).save_pretrained(
        tmp_path / "gpt2"
    )
    return tmp_path / "gpt2"


def test_missing_tensors_are_named(hf_gpt2: Path) -> None:
    sd = load_file(hf_gpt2 / "model.safetensors")
    del sd["transformer.h.1.mlp.c_fc.weight"]
    save_file(sd, hf_gpt2 / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"1 tensors missing .*transformer\.h\.1\.mlp\.c_fc\.weight"):
        load_model(hf_gpt2)


def test_extra_tensors_are_named(hf_gpt2: Path) -> None:
    sd = load_file(hf_gpt2 / "model.safetensors")
    sd["transformer.h.2.ln_1.weight"] = torch.ones(32)
    save_file(sd, hf_gpt2 / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"1 unexpected tensors .*transformer\.h\.2\.ln_1\.weight"):
        load_model(hf_gpt2)


def test_shape_mismatch_names_tensor_and_both_shapes(hf_gpt2: Path) -> None:
    cfg = json.loads((hf_gpt2 / "config.json").read_text())
    cfg["n_positions"] = 128
    (hf_gpt2 / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        CheckpointError, match=r"'backbone\.pos_emb\.weight' has shape \(64, 32\) but the config implies \(128, 32\)"
    ):
        load_model(hf_gpt2)


def test_unknown_architecture_lists_supported(hf_gpt2: Path) -> None:
    cfg = json.loads((hf_gpt2 / "config.json").read_text())
    cfg["architectures"] = ["LlamaForCausalLM"]
    cfg["model_type"] = "llama"
    (hf_gpt2 / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"architecture 'LlamaForCausalLM' is not supported; .*GPT2LMHeadModel"):
        load_model(hf_gpt2)


def test_corrupt_safetensors_is_reported(hf_gpt2: Path) -> None:
    data = (hf_gpt2 / "model.safetensors").read_bytes()
    (hf_gpt2 / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors file"):
        load_model(hf_gpt2)


class Boom:
    def __reduce__(self):
        return (Path("/tmp/lmforge-pickle-ran").touch, ())


def test_pickled_code_is_refused_never_run(tmp_path: Path) -> None:
    d = tmp_path / "evil"
    d.mkdir()
    BertModel(
        BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    ).config.save_pretrained(d)
    with open(d / "pytorch_model.bin", "wb") as f:
        pickle.dump({"x": Boom()}, f)
    Path("/tmp/lmforge-pickle-ran").unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_model(d)
    assert not Path("/tmp/lmforge-pickle-ran").exists()


def test_plain_tensor_bin_is_read_with_weights_only(tmp_path: Path) -> None:
    torch.manual_seed(0)
    hf = BertModel(
        BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    ).eval()
    hf.save_pretrained(tmp_path / "b", safe_serialization=False) if _can_save_bin() else None
    if not (tmp_path / "b" / "pytorch_model.bin").exists():
        hf.config.save_pretrained(tmp_path / "b")
        torch.save(hf.state_dict(), tmp_path / "b" / "pytorch_model.bin")
    ours = load_model(tmp_path / "b")
    ids = torch.randint(0, 97, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).last_hidden_state, hf(ids).last_hidden_state, rtol=0, atol=1e-5)


def _can_save_bin() -> bool:
    return False  # transformers 5 always writes safetensors; we write the .bin ourselves


def test_not_a_model_dir(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a model directory"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="no such file or directory"):
        load_model(tmp_path / "nope")


def test_cli_reports_bad_checkpoint_without_traceback(hf_gpt2: Path, tmp_path: Path) -> None:
    (hf_gpt2 / "model.safetensors").write_bytes(b"garbage")
    r = subprocess.run(
        [sys.executable, "-m", "lmforge", "convert", "from-hf", str(hf_gpt2), str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1
    assert "not a readable safetensors file" in r.stderr
    assert "Traceback" not in r.stderr
