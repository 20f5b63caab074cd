"""AdamW with weight decay on matrices only: never on biases, norms or embeddings."""

from __future__ import annotations

import torch
from torch import nn

from lmforge.config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed (weight matrices of linear layers) and not decayed (everything else).

    Embeddings are found by module (nn.Embedding), not by name, so a decoder tied to the token embedding
    counts as an embedding and is not decayed (as in GPT-2 / nanoGPT: decay only the 2-D matmul weights).
    """
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for p in model.parameters():  # parameters() yields a tied tensor once
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and id(p) not in embedding_ids else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over `model`'s trainable parameters with the decay split of `param_groups`."""
    # fused: one kernel over all parameters (CPU and CUDA); its result does not depend on thread timing,
    # so runs stay bit-reproducible
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8, fused=True
    )
