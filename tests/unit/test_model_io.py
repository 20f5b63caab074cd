"""lmforge exports and run directories load back to the same model; writes are atomic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
import torch

import lmforge
from lmforge.checkpoint.io import save_model
from lmforge.config import HeadConfig, ModelConfig, load_config, save_config
from lmforge.errors import CheckpointError
from lmforge.tasks import build_model


@pytest.mark.parametrize(
    "family,head",
    [("gpt2", "lm"), ("gpt1", "lm"), ("modern", "lm"), ("bert", "mlm"), ("bert", "sequence"), ("gpt2", "token")],
)
def test_export_roundtrip(tmp_path: Path, family: str, head: str) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(
        family=family,
        vocab_size=97,
        n_layer=2,
        n_head=2,
        d_model=32,
        max_seq_len=32,
        bias=family != "modern",
    )
    m = build_model(cfg, HeadConfig(kind=head, num_labels=3)).eval()
    save_model(m, tmp_path / "exp", labels=["a", "b", "c"])
    meta = json.loads((tmp_path / "exp" / "config.json").read_text())
    assert meta["format"] == "lmforge" and meta["model"]["family"] == family and meta["labels"] == ["a", "b", "c"]
    assert not list((tmp_path / "exp").glob("*.tmp"))
    loaded = lmforge.load_model(tmp_path / "exp")
    assert loaded.cfg == cfg and loaded.labels == ["a", "b", "c"] and not loaded.training
    assert loaded.head_cfg == HeadConfig(kind=head, num_labels=3)
    ids = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).last_hidden_state, m(ids).last_hidden_state, rtol=0, atol=0)
    if head in ("lm", "mlm"):
        decoder = loaded.head.proj if head == "lm" else loaded.head.decoder
        assert decoder.weight is loaded.backbone.tok_emb.weight


def test_run_directory_without_final_weights_uses_latest_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    run_cfg = load_config(None, ["--model.preset", "gpt-nano", "--model.vocab_size", "97", "--data.seq_len", "64"])
    save_config(run_cfg, tmp_path / "config.yaml")
    old, new = build_model(run_cfg.model), build_model(run_cfg.model)
    for step, m in ((2, old), (10, new)):
        d = tmp_path / "checkpoints" / f"step-{step}"
        d.mkdir(parents=True)
        safetensors.torch.save_model(m, str(d / "model.safetensors"))  # keeps head.proj.weight for the tied matrix
    loaded = lmforge.load_model(tmp_path)
    torch.testing.assert_close(loaded.backbone.tok_emb.weight, new.backbone.tok_emb.weight, rtol=0, atol=0)
    assert loaded.head.proj.weight is loaded.backbone.tok_emb.weight


def test_export_config_with_unknown_field_is_named(tmp_path: Path) -> None:
    save_model(build_model(ModelConfig(vocab_size=97, n_layer=1, n_head=2, d_model=32)), tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["model"]["n_layers"] = 3
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"unknown key 'model.n_layers' \(did you mean 'n_layer'\?\)"):
        lmforge.load_model(tmp_path)


def test_missing_weights_file_is_named(tmp_path: Path) -> None:
    save_model(build_model(ModelConfig(vocab_size=97, n_layer=1, n_head=2, d_model=32)), tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing beside config.json"):
        lmforge.load_model(tmp_path)


def test_failed_write_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = build_model(ModelConfig(vocab_size=97, n_layer=1, n_head=2, d_model=32))
    save_model(m, tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("lmforge.checkpoint.io.save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_model(build_model(ModelConfig(vocab_size=97, n_layer=1, n_head=2, d_model=32)), tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))
