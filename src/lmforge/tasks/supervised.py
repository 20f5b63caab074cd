"""The objective of every fine-tuning task: the head computes the loss from the batch's labels (tasks/heads.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lmforge.tasks import Batch


@dataclass
class SupervisedTask:
    """The Task of every fine-tuning objective: the head computes the loss from the batch's labels."""

    name: str

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        return model(
            batch["input_ids"],
            attention_mask=batch.get("attention_mask"),
            token_type_ids=batch.get("token_type_ids"),
            labels=batch["labels"],
        ).loss

    @torch.no_grad()
    def eval_sums(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        n = batch["input_ids"].shape[0]
        return {"loss_sum": float(self.loss(model, batch)) * n, "n": n}

    def finalize_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        return {"loss": sums["loss_sum"] / max(sums["n"], 1.0)}
