"""The KV cache of one generation call: allocated once for prompt + new tokens, reordered in place for beams."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lmforge.models import KVCache


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of a model's weights (the embedding survives int8 dynamic quantization)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def allocate_cache(model: nn.Module, batch: int, max_len: int) -> list[KVCache]:
    """One preallocated (B, H, max_len, D) key and value buffer per layer; no step ever concatenates."""
    device, dtype = model_device_dtype(model)
    cfg = model.cfg
    return [KVCache.empty(cfg, batch, max_len, device, dtype) for _ in range(cfg.n_layer)]


def reorder_cache(cache: list[KVCache], index: Tensor) -> None:
    """Row i of every layer becomes old row index[i] (beam search keeps the beams it continues)."""
    for layer in cache:
        layer.reorder(index)
