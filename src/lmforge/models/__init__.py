"""Model families (backbones: token ids -> hidden states) and `build_backbone`, their one constructor."""

from __future__ import annotations

import contextlib

import torch

from lmforge.config import ModelConfig
from lmforge.models.base import Backbone, BackboneOutput
from lmforge.models.bert import BERT
from lmforge.models.gpt1 import GPT1
from lmforge.models.gpt2 import GPT2
from lmforge.models.layers import KVCache
from lmforge.models.modern import Modern

FAMILIES: dict[str, type[Backbone]] = {"gpt1": GPT1, "gpt2": GPT2, "bert": BERT, "modern": Modern}


def build_backbone(cfg: ModelConfig, device: str | torch.device | None = None) -> Backbone:
    """Build the backbone `cfg` describes; on device="meta" no memory is allocated (for counting)."""
    with torch.device(device) if device is not None else contextlib.nullcontext():
        return FAMILIES[cfg.family](cfg)


__all__ = ["FAMILIES", "Backbone", "BackboneOutput", "KVCache", "build_backbone"]
