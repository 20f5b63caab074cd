"""Model families and `build_model`, the one constructor the rest of lmforge uses."""

from __future__ import annotations

import contextlib

import torch

from lmforge.config import ModelConfig
from lmforge.models.bert import BERT
from lmforge.models.gpt1 import GPT1
from lmforge.models.gpt2 import GPT2
from lmforge.models.heads import ModelOutput, TransformerModel
from lmforge.models.layers import KVCache
from lmforge.models.modern import Modern

FAMILIES: dict[str, type[TransformerModel]] = {"gpt1": GPT1, "gpt2": GPT2, "bert": BERT, "modern": Modern}


def build_model(cfg: ModelConfig, device: str | torch.device | None = None) -> TransformerModel:
    """Build the model `cfg` describes; on device="meta" no memory is allocated (for counting)."""
    with torch.device(device) if device is not None else contextlib.nullcontext():
        return FAMILIES[cfg.family](cfg)


__all__ = ["FAMILIES", "KVCache", "ModelOutput", "TransformerModel", "build_model"]
