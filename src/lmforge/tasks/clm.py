"""Causal language modelling: predict token t+1 from tokens <= t."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lmforge.tasks import Batch


def lm_loss(model: nn.Module, batch: Batch) -> Tensor:
    """Mean `F.cross_entropy(logits.float(), labels, ignore_index=-100)` of the model's next-token logits.

    The LM head fuses it with its projection (tasks/losses.py), so the (B, T, V) logits never exist: for GPT-2
    at 1,024 tokens they and their log-softmax and gradients are four 206 MB tensors.
    """
    return model(batch["input_ids"], attention_mask=batch.get("attention_mask"), labels=batch["labels"]).loss


@dataclass
class CLMTask:
    """Next-token prediction. `labels` are already aligned: labels[:, t] is the token after input_ids[:, t]."""

    chars_per_token: float | None = None  # 1.0 for character tokenizers: report bits per character too
    name: str = "clm"

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        return lm_loss(model, batch)

    @torch.no_grad()
    def eval_sums(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        tokens = float((batch["labels"] != -100).sum())
        return {"loss_sum": float(lm_loss(model, batch)) * tokens, "tokens": tokens}

    def finalize_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        loss = sums["loss_sum"] / max(sums["tokens"], 1.0)
        out = {"loss": loss, "perplexity": math.exp(min(loss, 700.0))}  # exp(>709) overflows a float
        if self.chars_per_token:
            out["bits_per_char"] = loss / math.log(2) / self.chars_per_token
        return out
