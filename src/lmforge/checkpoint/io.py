"""Model export and loading: safetensors + JSON only, written atomically, never unpickled.

An lmforge export (and the final weights of a run directory) is::

    DIR/config.json          {"format": "lmforge", "lmforge_version", "model": {ModelConfig fields}, "labels"}
    DIR/model.safetensors    our state dict; a tied decoder is stored once, as tok_emb.weight
    DIR/tokenizer.json       when a tokenizer was given

`load_model(path)` also accepts a run directory whose final weights are not written yet (it takes the
newest `checkpoints/step-N/model.safetensors` and `config.yaml`) and a Hugging Face checkpoint
directory (converted on the fly through checkpoint/hf.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from lmforge.checkpoint.hf import from_hf, load_weights, model_config_from_hf
from lmforge.config import ModelConfig, config_to_dict, model_config_from_dict
from lmforge.errors import CheckpointError, ConfigError
from lmforge.models import TransformerModel, build_model

FORMAT = "lmforge"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


@dataclass
class ModelSource:
    """What `resolve_model_dir` found at a path."""

    kind: str  # "lmforge" | "hf" | "run-checkpoint"
    weights: Path
    cfg: ModelConfig
    labels: list[str] | None = None


def _version() -> str:
    from lmforge import __version__

    return __version__


def write_json_atomic(path: Path, obj: Any) -> None:
    """json.dump to a temp file in the same directory, fsync, then rename over `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_safetensors_atomic(state: dict[str, Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """save_file to a temp file in the same directory, fsync, then rename over `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def model_state_for_saving(model: TransformerModel) -> dict[str, Tensor]:
    """State dict with tied decoder weights dropped (safetensors refuses shared storage), on CPU, contiguous."""
    state = model.state_dict()
    if model.cfg.tie_embeddings:
        state.pop("lm_head.weight", None)
        state.pop("mlm_head.decoder.weight", None)
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def save_model(
    model: TransformerModel, out_dir: str | Path, tokenizer: Any = None, labels: list[str] | None = None
) -> Path:
    """Write config.json + model.safetensors (+ tokenizer.json) to out_dir, each file atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)  # unwrap DDP
    save_safetensors_atomic(model_state_for_saving(model), out / WEIGHTS, metadata={"format": "pt"})
    meta: dict[str, Any] = {"format": FORMAT, "lmforge_version": _version(), "model": config_to_dict(model.cfg)}
    if labels is not None:
        meta["labels"] = list(labels)
    write_json_atomic(out / CONFIG, meta)
    if tokenizer is not None:
        tokenizer.save(out)
    return out


def read_weights(path: Path) -> dict[str, Tensor]:
    """Tensors of a .safetensors file (or, only with weights_only=True, a pytorch_model.bin)."""
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(
                f"{path}: not a readable safetensors file ({e}); the file is corrupt or truncated"
            ) from e
    if path.name.endswith(".bin") or path.suffix in (".pt", ".pth"):
        try:
            # weights_only: a plain tensor dict is read; any pickled code is refused, never executed
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises several types for refused pickles
            raise CheckpointError(
                f"{path}: refused to load: it is not a plain tensor file readable with weights_only=True ({e}); "
                "convert it to safetensors with a tool you trust"
            ) from e
        if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
            raise CheckpointError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
        return obj
    raise CheckpointError(f"{path}: unknown weights format {path.suffix!r}; use .safetensors")


def _hf_weights_file(d: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (d / name).is_file():
            return d / name
    if list(d.glob("model-*-of-*.safetensors")) or (d / "model.safetensors.index.json").exists():
        raise CheckpointError(f"{d}: sharded HF checkpoints are not supported yet; merge the shards first")
    raise CheckpointError(f"{d}: no model.safetensors or pytorch_model.bin found")


def _latest_step_dir(run: Path) -> Path | None:
    steps = []
    for d in (run / "checkpoints").glob("step-*"):
        m = re.fullmatch(r"step-(\d+)", d.name)
        if m and (d / WEIGHTS).is_file():
            steps.append((int(m.group(1)), d))
    return max(steps)[1] if steps else None


def resolve_model_dir(path: str | Path) -> ModelSource:
    """Find the weights and config of a run directory, an lmforge export or an HF checkpoint directory."""
    p = Path(path)
    if p.is_file() and p.name in (CONFIG, WEIGHTS):
        p = p.parent
    if not p.exists():
        raise CheckpointError(f"{p}: no such file or directory (expected a run directory, an export or an HF model)")
    if not p.is_dir():
        raise CheckpointError(f"{p}: expected a directory holding config.json and model.safetensors")
    cfg_file = p / CONFIG
    if cfg_file.is_file():
        try:
            raw = json.loads(cfg_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{cfg_file}: not valid JSON ({e})") from e
        if not isinstance(raw, dict):
            raise CheckpointError(f"{cfg_file}: expected a JSON object")
        if raw.get("format") == FORMAT:
            try:
                cfg = model_config_from_dict(raw.get("model", {}), where=str(cfg_file))
            except ConfigError as e:
                raise CheckpointError(str(e)) from e
            if not (p / WEIGHTS).is_file():
                raise CheckpointError(f"{p}: {WEIGHTS} is missing beside {CONFIG}")
            return ModelSource("lmforge", p / WEIGHTS, cfg, raw.get("labels"))
        try:
            cfg = model_config_from_hf(raw, where=str(cfg_file))
        except ConfigError as e:
            raise CheckpointError(str(e)) from e
        labels = [raw["id2label"][k] for k in sorted(raw["id2label"], key=int)] if raw.get("id2label") else None
        return ModelSource("hf", _hf_weights_file(p), cfg, labels)
    step = _latest_step_dir(p)
    if step is not None and (p / "config.yaml").is_file():
        from lmforge.config import load_config

        run_cfg = load_config(p / "config.yaml")
        return ModelSource("run-checkpoint", step / WEIGHTS, run_cfg.model)
    raise CheckpointError(
        f"{p}: not a model directory: no config.json (lmforge export or Hugging Face checkpoint) and no "
        "checkpoints/step-N/ with config.yaml (run directory)"
    )


def load_model(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> TransformerModel:
    """Load a model in eval mode from a run directory, an lmforge export or a Hugging Face checkpoint dir."""
    src = resolve_model_dir(path)
    state = read_weights(src.weights)
    if src.kind == "hf":
        state = from_hf(state, src.cfg, where=str(src.weights))
    with torch.device("meta"):
        model = build_model(src.cfg)
    model.to_empty(device=device)
    model.tie_weights()
    _init_non_persistent(model)
    load_weights(model, state, where=str(src.weights))
    if dtype is not None:
        model.to(dtype)
    model.labels = src.labels  # type: ignore[attr-defined]  # label names of a task head, if known
    return model.eval()


def _init_non_persistent(model: TransformerModel) -> None:
    """Recompute buffers that are not in checkpoints (RoPE tables) after a meta-device build."""
    from lmforge.models.layers import Rotary

    for module in model.modules():
        if isinstance(module, Rotary):
            fresh = Rotary(module.cos.shape[1] * 2, module.cos.shape[0], model.cfg.rope_theta).to(module.cos.device)
            module.cos, module.sin = fresh.cos, fresh.sin


def export_hf(
    model: TransformerModel, out_dir: str | Path, tokenizer: Any = None, labels: list[str] | None = None
) -> Path:
    """Write an HF checkpoint directory (config.json, model.safetensors, tokenizer files) for `model`."""
    from lmforge.checkpoint.hf import hf_config_from_model, to_hf

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.cfg
    hf_cfg = hf_config_from_model(cfg, labels)
    state = to_hf({k: v.detach().cpu() for k, v in model.state_dict().items()}, cfg)
    # tied tensors are written once; transformers re-ties them on load
    for name in ("lm_head.weight", "cls.predictions.decoder.weight", "cls.predictions.decoder.bias"):
        if cfg.tie_embeddings or name.endswith("decoder.bias"):
            state.pop(name, None)
    save_safetensors_atomic(state, out / WEIGHTS, metadata={"format": "pt"})
    hf_cfg["transformers_version"] = "4.40.0"
    if tokenizer is not None:
        tokenizer.save(out)
        for attr, key in (("pad_id", "pad_token_id"), ("eos_id", "eos_token_id"), ("bos_id", "bos_token_id")):
            tid = getattr(tokenizer, attr, None)
            if tid is not None and key not in hf_cfg:
                hf_cfg[key] = tid
    write_json_atomic(out / CONFIG, hf_cfg)
    return out


def copy_tokenizer_files(src: Path, dst: Path) -> list[str]:
    """Copy tokenizer files that sit beside a model (tokenizer.json, vocab files, configs)."""
    copied = []
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
        "vocab.json",
        "merges.txt",
    ):
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
            copied.append(name)
    return copied
