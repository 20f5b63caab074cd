"""The KV cache of one generation call: allocated once for prompt + new tokens, reordered in place for beams."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lmforge.models import KVCache
from lmforge.models.layers import plain
from lmforge.tasks.heads import LMHead


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


class NextTokenLogits:
    """f(input_ids (B, T), attention_mask, position_ids, cache) -> fp32 logits (B, V) of the next token.

    Build one per generation call: it appends T positions to the cache on every call. A prompt (T > 1)
    runs through the backbone's `encode`, and the LM head only on the last position: at prefill that skips
    T - 1 rows of the (C x V) matmul and a (B, T, V) logits tensor (51 MB for GPT-2 at batch 8, T = 32),
    as transformers does with logits_to_keep=1. Each new token (T = 1) runs through the backbone's
    `decoder()`, the same math without module calls (see models/layers.py). Modules that are not ours,
    and models with forward hooks, go through their forward.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        backbone, head = getattr(model, "backbone", None), getattr(model, "head", None)
        # forward hooks (recording, steering, pruning) run only through nn.Module calls: a model with any
        # goes through its plain forward, as a model that is not ours does
        hooked = any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
        self.ours = isinstance(head, LMHead) and hasattr(backbone, "encode") and not hooked
        if self.ours:
            self.backbone, self.lm_head, self.decode = backbone, plain(head.proj), backbone.decoder()

    def __call__(
        self, input_ids: Tensor, attention_mask: Tensor | None, position_ids: Tensor | None, cache: list[KVCache]
    ) -> Tensor:
        if not self.ours:
            out = self.model(input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache)
            return out.logits[:, -1].float()
        if input_ids.shape[1] > 1:
            hidden = self.backbone.encode(input_ids, attention_mask, None, position_ids, cache)
            return self.lm_head(hidden[:, -1]).float()
        if position_ids is None:  # no row is padded: every row is at the cache's length
            position_ids = torch.full((1, 1), cache[0].length, dtype=torch.long, device=input_ids.device)
        return self.lm_head(self.decode(input_ids[:, 0], position_ids, cache, attention_mask)).float()


def reorder_cache(cache: list[KVCache], index: Tensor) -> None:
    """Row i of every layer becomes old row index[i] (beam search keeps the beams it continues)."""
    for layer in cache:
        layer.reorder(index)
