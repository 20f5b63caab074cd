"""Cross-entropy fused with the output projection, so that the (N, V) logits never exist at once.

`F.cross_entropy(F.linear(h, W), labels)` writes the logits, their log-softmax, a zero-filled gradient and the
log-softmax gradient: four (N, V) fp32 tensors, 206 MB each for GPT-2 at 1,024 tokens. On a CPU with glibc's default
malloc every one of them is freshly mapped memory, and the page faults plus the passes over it cost about as much as
the head's matmuls. Not all four live at once, but they raise that GPT-2 step's peak memory by 220 MB, and by
690 MB (2.9 -> 3.6 GB) where freed memory is kept for reuse (training/malloc.py).
`linear_cross_entropy` instead walks the rows in chunks: per chunk it computes the logits, the loss and, when training,
the gradient of the logits in place (softmax minus one-hot), and at once turns it into the gradients of the hidden
states and of the weight. The matmul FLOPs are the same; the (N, V) traffic is gone. Backward then only scales the
saved gradients by the incoming one. (The idea is Liger-Kernel's fused linear cross-entropy, written here in plain
PyTorch ops.)
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

CHUNK_ELEMENTS = 1 << 23  # logits per chunk (32 MB in fp32); rows = this / V, at least MIN_ROWS
MIN_ROWS = 512  # fewer rows make the weight-gradient matmul (K = rows) re-read the (V, C) gradient too often
SMALL_LOGITS = 1 << 20  # up to this many logits (4 MB), F.linear + F.cross_entropy: its fewer ops win


def chunk_rows(vocab_size: int) -> int:
    """Rows per chunk for a vocabulary of `vocab_size`: about CHUNK_ELEMENTS logits, never under MIN_ROWS."""
    return max(MIN_ROWS, CHUNK_ELEMENTS // vocab_size)


class _LinearCrossEntropy(torch.autograd.Function):
    """sum over labelled rows of CE(h @ W^T + b, y), its input gradients computed chunk by chunk in forward.

    The gradients are those of the sum, so that they stay in range under fp16; a mean's 1/n, like a GradScaler's
    scale or gradient accumulation's 1/k, reaches them in backward, through grad_loss.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        h: Tensor,  # (N, C), N >= 1
        weight: Tensor,  # (V, C)
        bias: Tensor | None,  # (V,)
        labels: Tensor,  # (N,) in [0, V)
        labelled: Tensor,  # (N,) fp32: 1 for rows that count, 0 for ignored ones
        compute_dtype: torch.dtype,
        grad_enabled: bool,  # forward itself always runs without grad mode: the caller's, for evaluation
    ) -> Tensor:
        needs = ctx.needs_input_grad if grad_enabled else (False,) * 3  # type: ignore[attr-defined]
        hc, wc = h.to(compute_dtype), weight.to(compute_dtype)
        bc = bias.to(compute_dtype) if bias is not None else None
        grad_h = torch.empty_like(h) if needs[0] else None
        # fp32 accumulators, left uninitialised: the first chunk overwrites them
        grad_w = torch.empty_like(weight, dtype=torch.float32) if needs[1] else None
        grad_b = torch.empty_like(bias, dtype=torch.float32) if bias is not None and needs[2] else None
        loss = torch.zeros((), dtype=torch.float32, device=h.device)
        rows = chunk_rows(weight.shape[0])
        for start in range(0, h.shape[0], rows):
            x, y, w = hc[start : start + rows], labels[start : start + rows], labelled[start : start + rows]
            logits = x @ wc.t() if bc is None else torch.addmm(bc, x, wc.t())  # (n, V)
            z = logits.float()  # the same tensor in fp32; a copy under bf16/fp16
            target = z.gather(1, y[:, None]).squeeze(1)
            peak = z.amax(dim=1, keepdim=True)
            z.sub_(peak).exp_()  # exp(z - max): in place, this chunk's logits are not needed again
            total = z.sum(dim=1, keepdim=True)
            lse = peak.squeeze(1) + total.squeeze(1).log()
            loss += ((lse - target) * w).sum()
            if not any(needs):
                continue
            # d loss / d logits = w * (softmax - onehot(y))
            z.mul_(w[:, None] / total)
            z.scatter_add_(1, y[:, None], -w[:, None])
            g = z.to(compute_dtype)
            if grad_h is not None:
                grad_h[start : start + rows] = g @ wc
            first = start == 0
            if grad_w is not None and compute_dtype == torch.float32:
                grad_w.addmm_(g.t(), x, beta=0.0 if first else 1.0)  # beta=0 ignores what was there, NaN included
            elif grad_w is not None and first:
                grad_w.copy_(g.t() @ x)  # a bf16/fp16 matmul, summed over chunks in fp32
            elif grad_w is not None:
                grad_w.add_(g.t() @ x)
            if grad_b is not None and first:
                grad_b.copy_(z.sum(dim=0))
            elif grad_b is not None:
                grad_b.add_(z.sum(dim=0))
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.spent = False  # type: ignore[attr-defined]
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)  # type: ignore[attr-defined]
        return loss

    @staticmethod
    @once_differentiable  # the gradients were computed in forward: there is no graph to differentiate again
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_loss: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        # the saved gradients are scaled in place (no second (V, C) tensor), so they serve one backward only
        if ctx.spent:  # type: ignore[attr-defined]
            raise RuntimeError("linear_cross_entropy supports one backward per forward (not retain_graph=True)")
        ctx.spent = True  # type: ignore[attr-defined]
        grad_h, grad_w, grad_b = ctx.saved_tensors  # type: ignore[attr-defined]
        w_dtype, b_dtype = ctx.dtypes  # type: ignore[attr-defined]
        scale = grad_loss.float()
        if grad_h is not None:
            grad_h.mul_(scale.to(grad_h.dtype))
        if grad_w is not None:
            grad_w = grad_w.mul_(scale).to(w_dtype)
        if grad_b is not None:
            grad_b = grad_b.mul_(scale).to(b_dtype)
        return grad_h, grad_w, grad_b, None, None, None, None


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    bias: Tensor | None = None,
    reduction: Literal["mean", "sum"] = "mean",
) -> Tensor:
    """`F.cross_entropy(F.linear(hidden, weight, bias), labels, ignore_index=-100)` without the (N, V) logits.

    The loss is accumulated in fp32. Under autocast the projection runs in the autocast dtype, as `F.linear`
    would, and the log-softmax in fp32 (bf16 keeps ~3 significant digits, too coarse for thousands of logits).

    Args:
        hidden: (..., C) hidden states; flattened to (N, C) with `labels` (...,).
        weight: (V, C) output projection (tied or not); bias: (V,) or None.
        labels: class indices, -100 for positions to ignore; any other negative index is an error, as in
            F.cross_entropy.
        reduction: "mean" over the labelled positions (0 when there are none) or "sum".
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    h = hidden.reshape(-1, hidden.shape[-1])
    y = labels.reshape(-1)
    if h.shape[0] != y.shape[0]:
        raise ValueError(f"{h.shape[0]} hidden rows but {y.shape[0]} labels")
    labelled = y != -100
    if h.shape[0] * weight.shape[0] <= SMALL_LOGITS:  # tiny vocabularies (characters), no rows: the plain ops
        total = F.cross_entropy(F.linear(h, weight, bias).float(), y, ignore_index=-100, reduction="sum")
    else:
        args = (h, weight, bias, y.masked_fill(~labelled, 0), labelled.float())
        device = h.device.type
        if not torch.is_autocast_enabled(device):
            total = _LinearCrossEntropy.apply(*args, h.dtype, torch.is_grad_enabled())
        else:
            dtype = torch.get_autocast_dtype(device)
            with torch.autocast(device, enabled=False):  # the chunks choose their dtypes themselves
                total = _LinearCrossEntropy.apply(*args, dtype, torch.is_grad_enabled())
    return total / labelled.sum().clamp(min=1) if reduction == "mean" else total
