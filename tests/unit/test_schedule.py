"""Warmup then cosine/linear decay to a floor."""

from __future__ import annotations

import math

import pytest

from lmforge.config import TrainConfig
from lmforge.training.schedule import lr_at


def cfg(**kw: object) -> TrainConfig:
    return TrainConfig(**{"max_steps": 101, "lr": 1e-3, "warmup_steps": 10, "min_lr_ratio": 0.1, **kw})


def test_warmup_is_linear_and_never_zero() -> None:
    c = cfg()
    assert lr_at(0, c) == pytest.approx(1e-3 / 11)
    assert lr_at(9, c) == pytest.approx(1e-3 * 10 / 11)
    assert lr_at(10, c) == pytest.approx(1e-3)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_decays_to_floor_at_last_step(schedule: str) -> None:
    c = cfg(schedule=schedule)
    lrs = [lr_at(s, c) for s in range(10, 101)]
    assert lrs[-1] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    mid = lr_at(55, c)
    assert mid == pytest.approx(1e-4 + 0.5 * 9e-4)  # half-way: both shapes cross the mean


def test_cosine_shape_and_constant() -> None:
    c = cfg()
    assert lr_at(10 + 30, c) == pytest.approx(1e-4 + 9e-4 * (1 + math.cos(math.pi / 3)) / 2)  # a third of the way
    assert lr_at(1000, c) == pytest.approx(1e-4)  # past the end it stays at the floor
    assert lr_at(50, cfg(schedule="constant")) == 1e-3


def test_no_warmup() -> None:
    assert lr_at(0, cfg(warmup_steps=0)) == pytest.approx(1e-3)
