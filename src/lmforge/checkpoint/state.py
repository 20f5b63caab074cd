"""TrainState: everything a bit-exact resume needs, saved as safetensors + JSON (never pickle).

A checkpoint is a directory ``checkpoints/step-N/``::

    model.safetensors       weights (tied tensors stored once)
    optimizer.safetensors   optimizer tensors (AdamW moments, Muon momentum buffers), keyed "state.<param index>.<name>"
    rng.safetensors         torch CPU/CUDA generator states and numpy's MT19937 key
    trainer_state.json      step, sampler position, schedule, optimizer hyper-parameters, python RNG,
                            counters, and the size + sha256 of each .safetensors file (written last)

It is written into a temporary sibling directory and renamed into place only when every file is on
disk, so a crash (kill -9, disk full) never leaves a ``step-N`` that resume would trust. Resume still
verifies sizes and hashes, and skips a damaged checkpoint with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import nn
from torch.optim import Optimizer

from lmforge.errors import CheckpointError

CHECKPOINT_DIR = "checkpoints"
STEP_DIR = re.compile(r"^step-(\d+)$")
FORMAT_VERSION = 1


@dataclass
class TrainState:
    """The mutable state of a run at the end of optimizer step `step`."""

    step: int  # optimizer steps completed
    model: nn.Module
    optimizer: Optimizer
    sampler: dict[str, Any] = field(default_factory=dict)  # the training batch source's state_dict()
    scheduler: dict[str, Any] = field(
        default_factory=dict
    )  # the LR schedule is a function of the step; kept for checks
    counters: dict[str, Any] = field(default_factory=dict)  # tokens seen, wall time, best val loss, ...


def unwrap(model: nn.Module) -> nn.Module:
    """The plain lmforge model inside DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        else:
            return model


# --- RNG -----------------------------------------------------------------------------------------------------
def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every RNG the run touches: torch CPU and CUDA, numpy's global generator and python's `random`."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda.{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.uint32).view(np.int32).copy())
    py_version, py_state, py_gauss = random.getstate()
    meta = {
        "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": py_version, "state": list(py_state), "gauss_next": py_gauss},
    }
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Put back what `capture_rng` saved."""
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = sorted((k for k in tensors if k.startswith("torch_cuda.")), key=lambda k: int(k.split(".")[1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    n = meta["numpy"]
    keys = tensors["numpy_keys"].numpy().view(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = meta["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


# --- optimizer <-> safetensors + JSON --------------------------------------------------------------------------
def _optimizer_to_flat(optimizer: Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{name}"] = value.detach().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    for idx, values in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(values)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


# --- writing -------------------------------------------------------------------------------------------------
def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems (and Windows) cannot open a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every ``checkpoints/step-N`` directory, oldest first (complete or not)."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return sorted(found)


def save_checkpoint(run_dir: str | Path, state: TrainState, keep: int = 2) -> Path:
    """Write ``checkpoints/step-N`` atomically and delete all but the newest `keep` checkpoints.

    Raises CheckpointError (with the previous checkpoints untouched) when the write fails, e.g. disk full.
    """
    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".step-*"):  # half-written or half-deleted, left by a process killed there
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"step-{state.step}"
    tmp = root / f".step-{state.step}.tmp-{os.getpid()}"
    try:
        tmp.mkdir()
        model = unwrap(state.model)
        safetensors.torch.save_model(model, str(tmp / "model.safetensors"))
        opt_tensors, opt_meta = _optimizer_to_flat(state.optimizer)
        safetensors.torch.save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        rng_tensors, rng_meta = capture_rng()
        safetensors.torch.save_file(rng_tensors, str(tmp / "rng.safetensors"))
        files = {}
        for name in ("model.safetensors", "optimizer.safetensors", "rng.safetensors"):
            _fsync_file(tmp / name)
            files[name] = {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
        meta = {
            "format": FORMAT_VERSION,
            "step": state.step,
            "sampler": state.sampler,
            "scheduler": state.scheduler,
            "counters": state.counters,
            "optimizer": opt_meta,
            "rng": rng_meta,
            "files": files,
        }
        (tmp / "trainer_state.json").write_text(json.dumps(meta), encoding="utf-8")
        _fsync_file(tmp / "trainer_state.json")
        _fsync_dir(tmp)
        if final.exists():  # the same step saved again (e.g. SIGTERM right after a scheduled save)
            _remove_checkpoint(final)
        tmp.rename(final)
        _fsync_dir(root)
    except (OSError, RuntimeError, TypeError, ValueError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(
            f"could not write checkpoint {final}: {e}; the previous checkpoints in {root} are untouched"
        ) from e
    for _, old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        _remove_checkpoint(old)
    return final


def _remove_checkpoint(path: Path) -> None:
    """Delete a step-N directory so that a kill at any moment never leaves a half-deleted `step-N` behind.

    rmtree removes files one by one; a kill in between would leave a step-N that lacks some files. Renaming
    it to a hidden name first is atomic, and the next save sweeps up whatever the kill left of it.
    """
    trash = path.with_name(f".{path.name}.trash-{os.getpid()}")
    try:
        path.rename(trash)
        _fsync_dir(path.parent)
    except OSError:  # left in place: a surplus old checkpoint is harmless, and the next save tries again
        return
    shutil.rmtree(trash, ignore_errors=True)


# --- reading -------------------------------------------------------------------------------------------------
@dataclass
class LoadedState:
    """What `load_checkpoint` restored besides the model and optimizer (which it loads in place)."""

    step: int
    path: Path
    sampler: dict[str, Any]
    scheduler: dict[str, Any]
    counters: dict[str, Any]


def _verify(path: Path) -> dict[str, Any]:
    meta_path = path / "trainer_state.json"
    if not meta_path.is_file():
        raise CheckpointError(f"{path}: trainer_state.json is missing (an incomplete write?)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{meta_path}: not valid JSON ({e})") from e
    for name, info in meta.get("files", {}).items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{f} is missing")
        if f.stat().st_size != info["bytes"]:
            raise CheckpointError(f"{f} has {f.stat().st_size} bytes, {info['bytes']} were written (truncated?)")
        if _sha256(f) != info["sha256"]:
            raise CheckpointError(f"{f} does not match the sha256 recorded when it was written (corrupt)")
    return meta


def load_checkpoint(path: str | Path, model: nn.Module, optimizer: Optimizer | None = None) -> LoadedState:
    """Load one ``step-N`` directory into `model` (and `optimizer`) in place, and restore every RNG."""
    path = Path(path)
    meta = _verify(path)
    target = unwrap(model)
    try:
        missing, unexpected = safetensors.torch.load_model(target, str(path / "model.safetensors"), strict=False)
    except (OSError, RuntimeError, safetensors.SafetensorError) as e:
        raise CheckpointError(f"{path / 'model.safetensors'}: cannot load into this model: {e}") from e
    if missing or unexpected:
        raise CheckpointError(
            f"{path / 'model.safetensors'} does not fit this model: missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}; was the run's model config changed?"
        )
    if optimizer is not None:
        device = next(target.parameters()).device
        opt_tensors = safetensors.torch.load_file(str(path / "optimizer.safetensors"), device=str(device))
        # moments come from the checkpoint, hyper-parameters (betas, weight decay, Muon's lr_scale and momentum)
        # from the optimizer as this run configured it: load_state_dict would bring back the saved ones
        configured = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        try:
            optimizer.load_state_dict(_optimizer_from_flat(opt_tensors, meta["optimizer"]))
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"{path / 'optimizer.safetensors'}: does not fit this optimizer: {e}") from e
        for group, settings in zip(optimizer.param_groups, configured):
            group.update(settings)
    restore_rng(safetensors.torch.load_file(str(path / "rng.safetensors")), meta["rng"])
    return LoadedState(
        step=int(meta["step"]),
        path=path,
        sampler=meta.get("sampler", {}),
        scheduler=meta.get("scheduler", {}),
        counters=meta.get("counters", {}),
    )


def load_latest_checkpoint(
    run_dir: str | Path, model: nn.Module, optimizer: Optimizer | None = None
) -> LoadedState | None:
    """Load the newest checkpoint that verifies; a corrupt or partial one is skipped with a warning.

    Returns None when the run directory has no checkpoint at all; raises CheckpointError when it has
    checkpoints but none of them can be loaded.
    """
    found = list_checkpoints(run_dir)
    problems = []
    for _, path in reversed(found):
        try:
            return load_checkpoint(path, model, optimizer)
        except CheckpointError as e:
            warnings.warn(f"skipping checkpoint {path}: {e}", stacklevel=2)
            problems.append(str(e))
    if found:
        raise CheckpointError(f"no usable checkpoint in {Path(run_dir) / CHECKPOINT_DIR}:\n  " + "\n  ".join(problems))
    return None
