"""Weight-initialisation policies, one per family, applied once at the end of a model's __init__."""

from __future__ import annotations

import math

from torch import nn

from lmforge.models.layers import RMSNorm


def init_normal(model: nn.Module, std: float = 0.02) -> None:
    """BERT / GPT-1: every Linear and Embedding ~ N(0, std), biases 0, norms 1 (std 0.02: BERT, GPT-1 papers)."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, (nn.LayerNorm, RMSNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)


def init_gpt2(model: nn.Module) -> None:
    """GPT-2: N(0, 0.02) everywhere, residual projections N(0, 0.02 / sqrt(2 * n_layer)).

    GPT-2 paper, section 2.3: "scale the weights of residual layers at initialization by 1/sqrt(N)"
    where N counts residual layers (two per block). Found by module (block.attn.out, block.mlp.down),
    not by name suffix.
    """
    cfg = model.cfg
    init_normal(model, std=cfg.init_std)
    residual_std = cfg.init_std / math.sqrt(2 * cfg.n_layer)
    for block in model.blocks:
        nn.init.normal_(block.attn.out.weight, mean=0.0, std=residual_std)
        nn.init.normal_(block.mlp.down.weight, mean=0.0, std=residual_std)
