"""Model export and loading: safetensors + JSON only, written atomically, never unpickled.

An lmforge export (and the final weights of a run directory) is::

    DIR/config.json          {"format": "lmforge", "lmforge_version", "model": {ModelConfig fields},
                              "head": {HeadConfig fields}, "labels"}
    DIR/model.safetensors    our state dict (backbone.* and head.*); a tied decoder is stored once, as
                             backbone.tok_emb.weight
    DIR/tokenizer.json       when a tokenizer was given

`load_model(path)` also accepts a run directory whose final weights are not written yet (it takes the
newest `checkpoints/step-N/model.safetensors` and `config.yaml`) and a Hugging Face checkpoint
directory (converted on the fly through checkpoint/hf.py). `load_backbone(path, head)` loads the same sources'
backbone under a new head, for fine-tuning, and reports which weights are new and which were dropped.
Files written before the backbone/head split (flat keys such as `tok_emb.weight`, `lm_head.weight`, and the
head inside the `model` section) are migrated on load.
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

from lmforge.checkpoint.hf import from_hf, head_config_from_hf, load_weights, model_config_from_hf
from lmforge.config import (
    HeadConfig,
    ModelConfig,
    config_to_dict,
    head_config_from_dict,
    model_config_from_dict,
    split_legacy_head,
)
from lmforge.errors import CheckpointError, ConfigError
from lmforge.tasks import TaskModel, build_model

FORMAT = "lmforge"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


@dataclass
class ModelSource:
    """What `resolve_model_dir` found at a path."""

    kind: str  # "lmforge" | "hf" | "run-checkpoint"
    weights: Path
    cfg: ModelConfig
    head: HeadConfig
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


def model_state_for_saving(model: TaskModel) -> dict[str, Tensor]:
    """State dict with tied decoder weights dropped (safetensors refuses shared storage), on CPU, contiguous."""
    state = model.state_dict()
    if model.tied_key:
        state.pop(model.tied_key, None)
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


# flat keys of files written before the backbone/head split -> today's head keys (the rest gains "backbone.")
_LEGACY_HEAD_PREFIXES = {
    "lm_head.": "head.proj.",
    "mlm_head.": "head.",
    "cls_head.": "head.",
    "token_head.": "head.",
    "pooler.": "head.pooler.",
}


def migrate_legacy_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Today's `backbone.*` / `head.*` keys for a state dict saved with the flat keys of lmforge <= 0.1."""
    if any(k.startswith(("backbone.", "head.")) for k in state):
        return state
    out = {}
    for key, value in state.items():
        old = next((p for p in _LEGACY_HEAD_PREFIXES if key.startswith(p)), None)
        out[_LEGACY_HEAD_PREFIXES[old] + key[len(old) :] if old else "backbone." + key] = value
    return out


def save_model(model: TaskModel, out_dir: str | Path, tokenizer: Any = None, labels: list[str] | None = None) -> Path:
    """Write config.json + model.safetensors (+ tokenizer.json) to out_dir, each file atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)  # unwrap DDP
    save_safetensors_atomic(model_state_for_saving(model), out / WEIGHTS, metadata={"format": "pt"})
    meta: dict[str, Any] = {
        "format": FORMAT,
        "lmforge_version": _version(),
        "model": config_to_dict(model.cfg),
        "head": config_to_dict(model.head_cfg),
    }
    labels = labels if labels is not None else model.labels
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
            cfg, head = _model_and_head(raw, str(cfg_file))
            if not (p / WEIGHTS).is_file():
                raise CheckpointError(f"{p}: {WEIGHTS} is missing beside {CONFIG}")
            return ModelSource("lmforge", p / WEIGHTS, cfg, head, raw.get("labels"))
        try:
            cfg, head = model_config_from_hf(raw, where=str(cfg_file)), head_config_from_hf(raw, where=str(cfg_file))
        except ConfigError as e:
            raise CheckpointError(str(e)) from e
        labels = [raw["id2label"][k] for k in sorted(raw["id2label"], key=int)] if raw.get("id2label") else None
        if head.kind not in ("sequence", "token"):
            labels = None  # transformers writes LABEL_0, LABEL_1 into every config
        return ModelSource("hf", _hf_weights_file(p), cfg, head, labels)
    step = _latest_step_dir(p)
    if step is not None and (p / "config.yaml").is_file():
        raw = _read_yaml(p / "config.yaml")
        cfg, head = _model_and_head(raw, str(p / "config.yaml"))
        return ModelSource("run-checkpoint", step / WEIGHTS, cfg, head, raw.get("labels"))
    raise CheckpointError(
        f"{p}: not a model directory: no config.json (lmforge export or Hugging Face checkpoint) and no "
        "checkpoints/step-N/ with config.yaml (run directory)"
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a mapping of sections")
    return raw


def _model_and_head(raw: dict[str, Any], where: str) -> tuple[ModelConfig, HeadConfig]:
    """The backbone and head configs of a saved config (config.json of an export, or a run's config.yaml).

    Files from before the backbone/head split keep the head in the `model` section; a pretraining run's
    config.yaml names only its objective.
    """
    model_raw = raw.get("model", {})
    if not isinstance(model_raw, dict):
        raise CheckpointError(f"{where}: 'model' must be a mapping of fields")
    model_raw, legacy_head = split_legacy_head(model_raw)
    head_raw = raw.get("head", legacy_head)
    if not head_raw and "objective" in raw:
        head_raw = {"kind": "mlm" if raw["objective"] == "mlm" else "lm"}
    if not isinstance(head_raw, dict):
        raise CheckpointError(f"{where}: 'head' must be a mapping of fields")
    if not head_raw:  # a legacy export of a model without head field: the family's pretraining head
        family = model_raw.get("family")
        if family is None and isinstance(model_raw.get("preset"), str):
            from lmforge.config import PRESETS

            family = PRESETS.get(model_raw["preset"], {}).get("family")
        head_raw = {"kind": "mlm" if family == "bert" else "lm"}
    try:
        cfg = model_config_from_dict(model_raw, where=where)
        head = head_config_from_dict(head_raw, where=where)
        head.check_fits(cfg)
    except ConfigError as e:
        raise CheckpointError(str(e)) from e
    return cfg, head


def _source_state(src: ModelSource) -> dict[str, Tensor]:
    """The weights of a resolved source under our key names (converted from HF, migrated from old files)."""
    state = read_weights(src.weights)
    if src.kind == "hf":
        return from_hf(state, src.cfg, src.head.kind, where=str(src.weights))
    return migrate_legacy_keys(state)


def _empty_model(
    cfg: ModelConfig, head: HeadConfig, device: str | torch.device, labels: list[str] | None = None
) -> TaskModel:
    """A TaskModel without initialised memory (the weights are loaded next), on `device`."""
    with torch.device("meta"):
        model = build_model(cfg, head, labels=labels)
    model.to_empty(device=device)
    model.tie_weights()
    _init_non_persistent(model)
    return model


def load_model(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> TaskModel:
    """Load a model in eval mode from a run directory, an lmforge export or a Hugging Face checkpoint dir."""
    src = resolve_model_dir(path)
    state = _source_state(src)
    model = _empty_model(src.cfg, src.head, device, src.labels)
    load_weights(model, state, where=str(src.weights))
    if dtype is not None:
        model.to(dtype)
    return model.eval()


@dataclass
class BackboneLoad:
    """What `load_backbone` built, and which weights it took, made and left."""

    model: TaskModel
    source: ModelSource
    new: list[str]  # head weights initialised afresh
    reused: list[str]  # head weights taken from the source (e.g. BERT's pooler, or the same head again)
    dropped: list[str]  # source weights that the new model has no place for (the old head)

    def summary(self) -> str:
        """One line for logs: what was loaded, what is new, what was dropped."""

        def short(keys: list[str]) -> str:
            return ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "") if keys else "none"

        return (
            f"loaded the {self.source.cfg.family} backbone of {self.source.weights.parent} "
            f"(it had a {self.source.head.kind!r} head); new: {short(self.new)}; reused: {short(self.reused)}; "
            f"dropped: {short(self.dropped)}"
        )


def load_backbone(
    path: str | Path,
    head: HeadConfig,
    *,
    device: str | torch.device = "cpu",
    labels: list[str] | None = None,
    class_weights: Tensor | None = None,
    seed: int | None = None,
) -> BackboneLoad:
    """The pretrained backbone at `path` with a newly initialised `head`, for fine-tuning (in train mode).

    Works from a run directory, an lmforge export and a Hugging Face directory (BertModel, BertForMaskedLM,
    GPT2LMHeadModel, ...). Head weights of the source are reused where the new head has the same kind and shape,
    and BERT's pooler always (as transformers does when it puts a classifier on BertModel); the rest is
    reported as dropped.

    Args:
        seed: seeds torch before the head is initialised, so the same seed gives the same head.
    """
    src = resolve_model_dir(path)
    state = _source_state(src)
    if seed is not None:
        torch.manual_seed(seed)
    model = build_model(src.cfg, head, labels=labels, class_weights=class_weights)
    own = model.state_dict()
    tied = model.tied_key
    if tied and "backbone.tok_emb.weight" not in state and tied in state:
        state = {**state, "backbone.tok_emb.weight": state[tied]}
    missing = sorted(k for k in own if k.startswith("backbone.") and k not in state)
    if missing:
        raise CheckpointError(f"{src.weights}: {len(missing)} backbone weights missing (e.g. {missing[:3]})")
    bad = [k for k in own if k.startswith("backbone.") and tuple(state[k].shape) != tuple(own[k].shape)]
    if bad:
        raise CheckpointError(
            f"{src.weights}: backbone tensor {bad[0]!r} has shape {tuple(state[bad[0]].shape)} but the config "
            f"implies {tuple(own[bad[0]].shape)}"
        )

    def reusable(key: str) -> bool:
        same_kind = src.head.kind == head.kind or key.startswith("head.pooler.")
        return key.startswith("head.") and key in own and same_kind and state[key].shape == own[key].shape

    take = {k: v for k, v in state.items() if k.startswith("backbone.") or reusable(k)}
    model.load_state_dict(take, strict=False)
    model.tie_weights()
    reused = sorted(k for k in take if k.startswith("head.") and k != tied)
    new = sorted(k for k in own if k.startswith("head.") and k not in take and k != tied)
    # the source's tied decoder is the token embedding under another name: kept, not dropped
    src_tied = (
        {"lm": "head.proj.weight", "mlm": "head.decoder.weight"}.get(src.head.kind) if src.cfg.tie_embeddings else None
    )
    dropped = sorted(k for k in state if k not in take and k not in (tied, src_tied))
    return BackboneLoad(model.to(device).train(), src, new, reused, dropped)


def _init_non_persistent(model: TaskModel) -> None:
    """Recompute buffers that are not in checkpoints (RoPE tables) after a meta-device build."""
    from lmforge.models.layers import Rotary

    for module in model.modules():
        if isinstance(module, Rotary):
            fresh = Rotary(module.cos.shape[1] * 2, module.cos.shape[0], model.cfg.rope_theta).to(module.cos.device)
            module.cos, module.sin = fresh.cos, fresh.sin


def export_hf(model: TaskModel, out_dir: str | Path, tokenizer: Any = None, labels: list[str] | None = None) -> Path:
    """Write an HF checkpoint directory (config.json, model.safetensors, tokenizer files) for `model`."""
    from lmforge.checkpoint.hf import hf_config_from_model, to_hf

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg, head = model.cfg, model.head_cfg
    if head.kind == "cosine":  # a bi-encoder's head has no weights (only BERT's unused pooler): a bare base model
        head = HeadConfig(kind="none")
    hf_cfg = hf_config_from_model(cfg, head, labels if labels is not None else model.labels)
    state = to_hf({k: v.detach().cpu() for k, v in model.state_dict().items()}, cfg, head.kind)
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


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to a temp file in the same directory, fsync, then rename over `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
