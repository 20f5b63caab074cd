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


def next_token_logits(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    position_ids: Tensor | None,
    cache: list[KVCache],
) -> Tensor:
    """fp32 logits (B, V) of the token after input_ids (B, T), appending T positions to the cache.

    For our own models the LM head runs on the last position only: at prefill that skips T - 1 rows of
    the (C x V) matmul and a (B, T, V) logits tensor (51 MB for GPT-2 at batch 8, T = 32), as
    transformers does with logits_to_keep=1. Other modules go through their forward.
    """
    lm_head = getattr(model, "lm_head", None)
    if lm_head is not None and hasattr(model, "encode"):
        hidden = model.encode(input_ids, attention_mask, None, position_ids, cache, False).hidden
        return lm_head(hidden[:, -1]).float()
    out = model(input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache)
    return out.logits[:, -1].float()


def reorder_cache(cache: list[KVCache], index: Tensor) -> None:
    """Row i of every layer becomes old row index[i] (beam search keeps the beams it continues)."""
    for layer in cache:
        layer.reorder(index)
