"""Learning-rate schedule: linear warmup, then cosine or linear decay to a floor (a pure function of the step)."""

from __future__ import annotations

import math

from lmforge.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based) of `cfg.max_steps`.

    Warmup ramps linearly to `cfg.lr` over `warmup_steps` (as nanoGPT: lr * (step + 1) / (warmup + 1), so
    the first step is not taken at lr 0); then the rate decays to `cfg.lr * cfg.min_lr_ratio` at the last
    step, along half a cosine (GPT-3, section B) or a straight line (BERT).
    """
    peak, floor = cfg.lr, cfg.lr * cfg.min_lr_ratio
    if step < cfg.warmup_steps:
        return peak * (step + 1) / (cfg.warmup_steps + 1)
    if cfg.schedule == "constant":
        return peak
    decay_steps = max(1, cfg.max_steps - 1 - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / decay_steps)
    if cfg.schedule == "cosine":
        return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (peak - floor)
    return peak - progress * (peak - floor)  # linear
