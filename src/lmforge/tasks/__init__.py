"""Objectives: each Task turns (model, batch) into a loss, and into summed metrics for evaluation.

The trainer knows nothing about an objective beyond the `Task` protocol, so pretraining (CLM, MLM) and
every fine-tuning task reuse the same `train_step` and outer loop.
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor, nn

Batch = dict[str, Tensor]  # input_ids, labels (-100 = ignore), optional attention_mask / token_type_ids


class Task(Protocol):
    """An objective: a scalar loss to minimise, and per-batch sums that `finalize_metrics` turns into metrics."""

    name: str

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        """Mean loss over the batch's labelled positions, in fp32."""
        ...

    def eval_sums(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        """Additive statistics of one validation batch (e.g. summed loss and token count)."""
        ...

    def finalize_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """Metrics (loss, perplexity, ...) from statistics summed over every validation batch."""
        ...


def build_task(objective: str, chars_per_token: float | None = None) -> Task:
    """The Task for a pretraining objective ("clm" or "mlm").

    Args:
        chars_per_token: for character tokenizers 1.0, so evaluation also reports bits per character.
    """
    from lmforge.tasks.clm import CLMTask
    from lmforge.tasks.mlm import MLMTask

    if objective == "clm":
        return CLMTask(chars_per_token=chars_per_token)
    if objective == "mlm":
        return MLMTask()
    raise ValueError(f"unknown objective {objective!r}; use 'clm' or 'mlm'")


from lmforge.tasks.model import TaskModel, TaskOutput, build_model  # noqa: E402 - after Batch, which it uses

__all__ = ["Batch", "Task", "TaskModel", "TaskOutput", "build_model", "build_task"]
