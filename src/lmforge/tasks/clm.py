"""Causal language modelling: predict token t+1 from tokens <= t."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmforge.tasks import Batch


def lm_loss(logits: Tensor, labels: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy over positions whose label is not -100.

    The loss is computed in fp32: bf16 keeps ~3 significant digits, too coarse for a log-softmax over
    thousands of logits.
    """
    V = logits.shape[-1]
    return F.cross_entropy(logits.float().reshape(-1, V), labels.reshape(-1), ignore_index=-100, reduction=reduction)


@dataclass
class CLMTask:
    """Next-token prediction. `labels` are already aligned: labels[:, t] is the token after input_ids[:, t]."""

    chars_per_token: float | None = None  # 1.0 for character tokenizers: report bits per character too
    name: str = "clm"

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        logits = model(batch["input_ids"], attention_mask=batch.get("attention_mask")).logits  # (B, T, V)
        return lm_loss(logits, batch["labels"])

    @torch.no_grad()
    def eval_sums(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        logits = model(batch["input_ids"], attention_mask=batch.get("attention_mask")).logits
        labels = batch["labels"]
        total = lm_loss(logits, labels, reduction="sum")
        return {"loss_sum": float(total), "tokens": float((labels != -100).sum())}

    def finalize_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        loss = sums["loss_sum"] / max(sums["tokens"], 1.0)
        out = {"loss": loss, "perplexity": math.exp(min(loss, 700.0))}  # exp(>709) overflows a float
        if self.chars_per_token:
            out["bits_per_char"] = loss / math.log(2) / self.chars_per_token
        return out
