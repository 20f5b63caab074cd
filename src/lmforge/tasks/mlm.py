"""Masked language modelling (BERT): predict the selected tokens from both sides."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmforge.tasks import Batch
from lmforge.tasks.model import TaskOutput


def _forward(model: nn.Module, batch: Batch, keep_logits: bool) -> TaskOutput:
    """The model on `batch`; its MLM head runs only on the positions whose label is not -100 (tasks/heads.py)."""
    mask = batch.get("attention_mask")
    if mask is not None and bool(mask.all()):  # no padding: SDPA's fast path needs no mask at all
        mask = None
    return model(
        batch["input_ids"],
        attention_mask=mask,
        token_type_ids=batch.get("token_type_ids"),
        labels=batch["labels"],
        keep_logits=keep_logits,
    )


def masked_logits(model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
    """Logits (N, V) and labels (N,) of the N positions whose label is not -100."""
    labels = batch["labels"]
    return _forward(model, batch, keep_logits=True).logits, labels[labels != -100]


def masked_loss(model: nn.Module, batch: Batch) -> Tensor:
    """Mean fp32 cross-entropy over the selected positions (0 when none is), without their (N, V) logits.

    The head fuses its decoder with the loss (`linear_cross_entropy`).
    """
    return _forward(model, batch, keep_logits=False).loss


@dataclass
class MLMTask:
    """Masked-token prediction; metrics are loss, perplexity and masked-token accuracy."""

    name: str = "mlm"

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        return masked_loss(model, batch)

    @torch.no_grad()
    def eval_sums(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        logits, labels = masked_logits(model, batch)
        total = F.cross_entropy(logits.float(), labels, reduction="sum")
        correct = (logits.argmax(-1) == labels).sum()
        return {"loss_sum": float(total), "tokens": float(labels.numel()), "correct": float(correct)}

    def finalize_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        n = max(sums["tokens"], 1.0)
        loss = sums["loss_sum"] / n
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "masked_accuracy": sums["correct"] / n}
