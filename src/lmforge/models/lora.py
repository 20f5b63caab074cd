"""LoRA (Hu et al. 2021, arXiv:2106.09685): fine-tune a frozen backbone through low-rank updates W + (alpha/r) B A.

`apply_lora(model, rank=8, alpha=16)` wraps the blocks' qkv/out projections and freezes the rest of the backbone;
heads stay trainable. `merge_lora(model)` folds every update back into a plain nn.Linear, so the state dict has the
original keys again and saving / HF export work unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lmforge.errors import ConfigError


class LoRALinear(nn.Module):
    """`base(x) + dropout(x) @ A^T @ B^T * alpha / rank` over a frozen nn.Linear `base`."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.rank, self.scaling = rank, alpha / rank
        kw = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, **kw))  # (r, in)
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, **kw))  # (out, r): B = 0, so W is unchanged
        # A as nn.Linear initialises its weight (Kaiming-uniform, a=sqrt(5)), as in loralib and peft
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def weight(self) -> Tensor:
        """The frozen base weight (out, in), without the LoRA update; `merged()` has the sum."""
        return self.base.weight

    @property
    def bias(self) -> Tensor | None:
        return self.base.bias

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + (self.dropout(x) @ self.lora_a.T @ self.lora_b.T) * self.scaling

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A new nn.Linear holding W + scaling * B @ A (same dtype and device)."""
        w = self.base.weight
        linear = nn.Linear(self.base.in_features, self.base.out_features, self.bias is not None, w.device, w.dtype)
        # sum in fp32: a bf16 W keeps ~3 digits, and a small update added at that precision is partly rounded away
        delta = self.lora_b.float() @ self.lora_a.float()
        linear.weight.copy_((w.float() + self.scaling * delta).to(w.dtype))
        if self.bias is not None:
            linear.bias.copy_(self.bias)
        return linear


def apply_lora(
    model: nn.Module,
    rank: int,
    alpha: float,
    targets: Sequence[str] = ("qkv", "out"),
    dropout: float = 0.0,
    root: str = "backbone.blocks",
) -> list[str]:
    """Wrap every nn.Linear named in `targets` under `root` in a LoRALinear and freeze the rest of the backbone.

    Args:
        targets: attribute names of the layers to adapt ("qkv", "out", "up", "down", "gate").
        root: dotted path of the submodule to search; the default, the transformer blocks, leaves heads alone.

    Returns the dotted names of the wrapped layers. Heads (everything outside `model.backbone`) keep their
    requires_grad; a head tied to the token embedding shares it, so it stays frozen with the backbone.
    """
    problems = []
    if rank < 1:
        problems.append(f"lora.rank={rank} must be >= 1")
    if alpha <= 0:
        problems.append(f"lora.alpha={alpha} must be > 0 (scaling is alpha / rank)")
    if not 0 <= dropout < 1:
        problems.append(f"lora.dropout={dropout} must be in [0, 1)")
    try:
        scope = model.get_submodule(root)
    except AttributeError as e:
        raise ConfigError(f"lora.root={root!r} is not a submodule of {type(model).__name__} ({e})") from e
    if any(isinstance(m, LoRALinear) for m in scope.modules()):
        problems.append(f"lora.root={root!r} already holds LoRA layers; call merge_lora first")
    found = [
        (parent, name)
        for parent in scope.modules()
        if not isinstance(parent, LoRALinear)
        for name, child in parent.named_children()
        if type(child) is nn.Linear
    ]
    available = sorted({name for _, name in found})
    if unknown := [t for t in targets if t not in available]:
        problems.append(f"lora.targets={list(targets)}: {unknown} match no nn.Linear under {root!r}; has {available}")
    if problems:
        raise ConfigError("; ".join(problems))

    backbone = getattr(model, "backbone", model)
    backbone.requires_grad_(False)  # first, so the new LoRA matrices below stay trainable
    paths = {m: path for path, m in scope.named_modules()}
    wrapped = []
    for parent, name in found:
        if name in targets:
            setattr(parent, name, LoRALinear(getattr(parent, name), rank, alpha, dropout))
            wrapped.append(".".join(p for p in (root, paths[parent], name) if p))
    return wrapped


def merge_lora(model: nn.Module) -> int:
    """Replace every LoRALinear by its merged nn.Linear in place and unfreeze the backbone; returns how many."""
    merged = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, name, child.merged())
                merged += 1
    if merged:
        getattr(model, "backbone", model).requires_grad_(True)  # undo apply_lora's freeze: a plain model again
    return merged


def lora_state_keys(model: nn.Module) -> list[str]:
    """State-dict names of the LoRA matrices (the adapter's weights)."""
    return [
        f"{path}.{p}" for path, m in model.named_modules() if isinstance(m, LoRALinear) for p in ("lora_a", "lora_b")
    ]


def count_trainable(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; a tied weight counts once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
