"""Masked language modelling (BERT): predict the selected tokens from both sides."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmforge.models.heads import ModelOutput
from lmforge.tasks import Batch
from lmforge.tasks.losses import linear_cross_entropy


def _selected_forward(
    model: nn.Module, batch: Batch, head_loss: Callable[[Tensor, nn.Module], Tensor] | None = None
) -> ModelOutput:
    """The model on `batch`, its MLM head (or `head_loss`) only on the positions whose label is not -100.

    The MLM head (dense, GELU, LayerNorm, a V-wide decoder) runs only on the ~15% selected positions
    (`head_mask`): the decoder is about half of a small BERT's FLOPs, and the other 85% of its output
    would be thrown away. Going through forward keeps this working under DDP and torch.compile.
    """
    mask = batch.get("attention_mask")
    if mask is not None and bool(mask.all()):  # no padding: SDPA's fast path needs no mask at all
        mask = None
    selected = batch["labels"] != -100
    return model(
        batch["input_ids"],
        attention_mask=mask,
        token_type_ids=batch.get("token_type_ids"),
        head_mask=selected,
        head_loss=head_loss,
    )


def masked_logits(model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
    """Logits (N, V) and labels (N,) of the N positions whose label is not -100."""
    labels = batch["labels"]
    return _selected_forward(model, batch).logits, labels[labels != -100]


def masked_loss(model: nn.Module, batch: Batch) -> Tensor:
    """Mean fp32 cross-entropy over the selected positions (0 when none is), without their (N, V) logits.

    As `masked_logits`, with the head's decoder fused into the loss (`linear_cross_entropy`).
    """
    labels = batch["labels"][batch["labels"] != -100]

    def loss(hidden: Tensor, head: nn.Module) -> Tensor:
        return linear_cross_entropy(head.transform(hidden), head.decoder.weight, labels, head.decoder.bias)

    return _selected_forward(model, batch, loss).loss


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
