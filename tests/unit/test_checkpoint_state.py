"""TrainState checkpoints: safetensors + JSON, atomic, last K kept, RNG round trip, disk-full safety."""

from __future__ import annotations

import errno
import random
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from lmforge.checkpoint import state as state_mod
from lmforge.checkpoint.state import (
    TrainState,
    capture_rng,
    list_checkpoints,
    load_checkpoint,
    load_latest_checkpoint,
    restore_rng,
    save_checkpoint,
)
from lmforge.config import ModelConfig, TrainConfig
from lmforge.errors import CheckpointError
from lmforge.tasks import build_model
from lmforge.training.optim import build_optimizer


def make(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = build_model(ModelConfig(vocab_size=97, n_layer=2, n_head=2, d_model=32, max_seq_len=16))
    opt = build_optimizer(model, TrainConfig())
    x = torch.randint(0, 97, (2, 8))
    model(x).logits.float().pow(2).mean().backward()
    opt.step()
    return model, opt


def test_roundtrip_model_optimizer_rng(tmp_path: Path) -> None:
    model, opt = make(0)
    save_checkpoint(tmp_path, TrainState(step=5, model=model, optimizer=opt, sampler={"pos": 3}), keep=2)
    expected_rand = (torch.rand(3), np.random.rand(), random.random())
    model2, opt2 = make(1)
    loaded = load_latest_checkpoint(tmp_path, model2, opt2)
    assert loaded is not None and loaded.step == 5 and loaded.sampler == {"pos": 3}
    for (k, a), (_, b) in zip(model.state_dict().items(), model2.state_dict().items()):
        assert torch.equal(a, b), k
    assert model2.head.proj.weight is model2.backbone.tok_emb.weight  # still tied after loading
    s1, s2 = opt.state_dict(), opt2.state_dict()
    for idx in s1["state"]:
        for name, value in s1["state"][idx].items():
            assert torch.equal(value, s2["state"][idx][name])
    assert s1["param_groups"] == [dict(g, betas=tuple(g["betas"])) for g in s2["param_groups"]]
    assert torch.equal(torch.rand(3), expected_rand[0])
    assert np.random.rand() == expected_rand[1] and random.random() == expected_rand[2]


def test_rng_roundtrip() -> None:
    tensors, meta = capture_rng()
    a = (torch.randn(4), np.random.randn(2), random.random())
    restore_rng(tensors, meta)
    b = (torch.randn(4), np.random.randn(2), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_keeps_last_k(tmp_path: Path) -> None:
    model, opt = make()
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, TrainState(step=step, model=model, optimizer=opt), keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 4]


def test_a_kill_while_pruning_never_leaves_a_half_deleted_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Old checkpoints are renamed away before rmtree: a kill mid-delete leaves a hidden leftover, not a step-N."""
    model, opt = make()
    save_checkpoint(tmp_path, TrainState(step=1, model=model, optimizer=opt), keep=1)
    real_rmtree = state_mod.shutil.rmtree

    def killed_midway(path: Path, ignore_errors: bool = False) -> None:
        next(Path(path).glob("optimizer.safetensors")).unlink()  # one file gone, then the process dies
        raise SystemExit("killed")

    monkeypatch.setattr(state_mod.shutil, "rmtree", killed_midway)
    with pytest.raises(SystemExit):
        save_checkpoint(tmp_path, TrainState(step=2, model=model, optimizer=opt), keep=1)
    monkeypatch.setattr(state_mod.shutil, "rmtree", real_rmtree)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2]  # step-1 is no longer a step-N directory
    assert load_latest_checkpoint(tmp_path, *make(3)).step == 2
    save_checkpoint(tmp_path, TrainState(step=3, model=model, optimizer=opt), keep=1)  # sweeps the leftover
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-3"]


def test_disk_full_leaves_previous_checkpoints_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, opt = make()
    save_checkpoint(tmp_path, TrainState(step=1, model=model, optimizer=opt), keep=1)

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(state_mod.safetensors.torch, "save_file", full)
    with pytest.raises(CheckpointError, match=r"step-2: .*No space left on device.*untouched"):
        save_checkpoint(tmp_path, TrainState(step=2, model=model, optimizer=opt), keep=1)
    monkeypatch.undo()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]  # temp dir removed
    model2, opt2 = make(3)
    assert load_latest_checkpoint(tmp_path, model2, opt2).step == 1


def test_partial_checkpoint_is_skipped(tmp_path: Path) -> None:
    model, opt = make()
    save_checkpoint(tmp_path, TrainState(step=1, model=model, optimizer=opt), keep=3)
    save_checkpoint(tmp_path, TrainState(step=2, model=model, optimizer=opt), keep=3)
    (tmp_path / "checkpoints" / "step-2" / "trainer_state.json").unlink()  # as if the write had stopped
    with pytest.warns(UserWarning, match="step-2.*trainer_state.json is missing"):
        loaded = load_latest_checkpoint(tmp_path, *make(1))
    assert loaded.step == 1


def test_no_usable_checkpoint_is_an_error(tmp_path: Path) -> None:
    model, opt = make()
    save_checkpoint(tmp_path, TrainState(step=1, model=model, optimizer=opt), keep=3)
    (tmp_path / "checkpoints" / "step-1" / "optimizer.safetensors").write_bytes(b"garbage")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="no usable checkpoint"):
        load_latest_checkpoint(tmp_path, *make(1))
    assert load_latest_checkpoint(tmp_path / "empty", *make(1)) is None


def test_wrong_model_names_the_mismatch(tmp_path: Path) -> None:
    model, opt = make()
    path = save_checkpoint(tmp_path, TrainState(step=1, model=model, optimizer=opt))
    other = build_model(ModelConfig(vocab_size=97, n_layer=3, n_head=2, d_model=32, max_seq_len=16))
    with pytest.raises(CheckpointError, match="does not fit this model"):
        load_checkpoint(path, other)


def test_files_are_safetensors_and_json(tmp_path: Path) -> None:
    model, opt = make()
    path = save_checkpoint(tmp_path, TrainState(step=1, model=model, optimizer=opt))
    for name in ("model", "optimizer", "rng"):
        safetensors.torch.load_file(str(path / f"{name}.safetensors"))  # parses as safetensors
    assert (path / "trainer_state.json").read_text().startswith("{")
