"""keep_freed_memory: inside, a repeated step reuses freed memory instead of page-faulting it in again."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from lmforge.training.malloc import keep_freed_memory

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc settings: Linux + glibc"
)


STEPS = """
import json, resource, sys, torch
from lmforge.training.malloc import keep_freed_memory

def step():  # a training step's pattern: a few large tensors allocated, used and freed, the same every step
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    tensors = [torch.ones(mb * 1024 * 1024 // 4) for mb in (64, 8, 48, 1, 96)]
    del tensors
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

outside = [step() for _ in range(3)]
with keep_freed_memory() as kept:
    inside = [step() for _ in range(5)]
print(json.dumps({"kept": kept, "outside": outside, "inside": inside}))
"""


def test_a_repeated_step_stops_page_faulting_inside() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
    run = subprocess.run([sys.executable, "-c", STEPS], env=env, capture_output=True, text=True, check=True)
    faults = json.loads(run.stdout)
    assert faults["kept"] is True
    # 217 MB per step = 55,552 pages of 4 KiB (fewer if the kernel hands out huge pages): glibc maps the large
    # tensors afresh on every step; inside, after a step or two, the step reuses the heap's pages
    assert min(faults["outside"]) > 1000, faults
    assert max(faults["inside"][-2:]) <= 64, faults


def test_user_choices_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    with keep_freed_memory() as kept:
        assert kept is False
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    with keep_freed_memory() as kept:
        assert kept is False
    with keep_freed_memory(enabled=False) as kept:
        assert kept is False
