"""`train_step`: one optimizer step over accumulated micro-batches. Every objective and fine-tuning task uses it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import clip_grad_norm_
from torch.optim import Optimizer

from lmforge.config import TrainConfig
from lmforge.tasks import Batch, Task

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class StepStats:
    """What one optimizer step reports; tensors, because `.item()` syncs a GPU (call it only when logging)."""

    loss: Tensor  # mean training loss over the micro-batches
    grad_norm: Tensor  # global L2 norm of the gradients before clipping
    finite: bool = True  # False: loss or gradient was NaN/inf and the optimizer step was skipped


@contextlib.contextmanager
def autocast(precision: str, device_type: str) -> Iterator[None]:
    """bf16/fp16 autocast for the forward pass, or nothing for fp32."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device_type, dtype=AUTOCAST_DTYPES[precision]):
        yield


@contextlib.contextmanager
def grad_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce of a DDP/FSDP2-wrapped model unless `enabled` (a plain model: no-op)."""
    if enabled:
        yield
    elif hasattr(model, "no_sync"):  # DDP
        with model.no_sync():
            yield
    elif hasattr(model, "set_requires_gradient_sync"):  # FSDP2 (fully_shard)
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


def train_step(
    model: nn.Module,
    micro_batches: list[Batch],
    optimizer: Optimizer,
    task: Task,
    cfg: TrainConfig,
    scaler: torch.amp.GradScaler | None = None,
) -> StepStats:
    """One optimizer step over len(micro_batches) accumulated micro-batches.

    Args:
        scaler: a GradScaler for fp16 (bf16 and fp32 need none).
    """
    device = micro_batches[0]["input_ids"].device
    optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), device=device)
    for i, batch in enumerate(micro_batches):
        sync = i == len(micro_batches) - 1  # all-reduce grads only on the last micro-batch
        with grad_sync(model, enabled=sync), autocast(cfg.precision, device.type):
            loss = task.loss(model, batch) / len(micro_batches)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        loss_sum += loss.detach()
    if scaler is not None:
        scaler.unscale_(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
    grad_norm = clip_grad_norm_(params, max_norm)
    # a NaN/inf would poison AdamW's moments for good: skip the update and let the trainer stop. (This check
    # syncs a GPU once per step; the trainer needs the verdict before the next step anyway.)
    finite = bool(torch.isfinite(loss_sum) & torch.isfinite(grad_norm))
    if scaler is not None:
        scaler.step(optimizer)  # fp16 overflow is expected now and then: the scaler skips and lowers its scale
        scaler.update()
        finite = bool(torch.isfinite(loss_sum))
    elif finite:
        optimizer.step()
    return StepStats(loss=loss_sum, grad_norm=grad_norm, finite=finite)
