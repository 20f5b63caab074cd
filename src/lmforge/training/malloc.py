"""glibc malloc settings for CPU training: keep freed memory in the process instead of handing it back.

Every training step allocates its activations and gradients afresh and frees them again. glibc serves large
blocks with mmap and returns them with munmap, and shrinks the heap when its top is free, so the next step's
tensors land on new pages: every 4 KiB page is a page fault and a zero-fill, 16,000-235,000 per step for the
benchmark's models. With mmap off and a high trim threshold, freed blocks stay in the heap and the next step
reuses them: a few thousand faults at most. Measured with torch 2.13 on 2 cores (`benchmarks/bench_train.py
ablate`): gpt-mini steps 1.05-1.08x and GPT-2 124M steps 1.03-1.06x faster. The cost: the process holds its
freed memory while training, and with mmap off large blocks fragment the heap: peak RSS +1-2% with lmforge's fused
loss, +7-17% with a plain cross-entropy over (tokens x vocab) logits.

jemalloc or tcmalloc (LD_PRELOAD) behave this way on their own. Where either is preloaded, or malloc is tuned
through MALLOC_* variables or GLIBC_TUNABLES, the user has chosen, and nothing is changed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
from collections.abc import Iterator

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # <malloc.h>
# trim only when 2 GiB at the heap's top are free; mallopt takes a C int, and ctypes would wrap 2**31 to < 0
KEEP_TRIM_THRESHOLD = 2**31 - 1
# Afterwards mmap is allowed again (glibc's default count), with the thresholds glibc's dynamic adjustment converges
# to in a process that has freed large blocks (32 MiB, its ceiling on 64-bit, and twice that for trimming). Setting
# any of these thresholds or counts with mallopt switches that adjustment off for good, so glibc's start values
# (128 KiB) would leave the process worse off than it was.
AFTER_MMAP_MAX, AFTER_MMAP_THRESHOLD, AFTER_TRIM_THRESHOLD = 65536, 32 * 1024 * 1024, 64 * 1024 * 1024
_active = False  # malloc's settings are the process's: a nested keep_freed_memory leaves them to the outer one


def _glibc_malloc() -> ctypes.CDLL | None:
    """The C library when it is glibc and the user has not chosen an allocator or malloc settings."""
    try:
        glibc = platform.system() == "Linux" and bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):  # a libc that does not know the name: not glibc (musl has no mallopt)
        glibc = False
    if not glibc:
        return None
    chosen = any(k.startswith("MALLOC_") for k in os.environ) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")
    if chosen or "malloc" in os.environ.get("LD_PRELOAD", ""):  # MALLOC_ARENA_MAX=..., libjemalloc.so, ...
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


@contextlib.contextmanager
def keep_freed_memory(enabled: bool = True) -> Iterator[bool]:
    """Inside: glibc keeps freed memory for reuse (no mmap for large blocks, no trimming). Yields whether it does.

    On the way out the kept memory is released (malloc_trim) and mmap and trimming are set to AFTER_*.
    """
    global _active
    libc = _glibc_malloc() if enabled and not _active else None
    if libc is None:
        yield _active and enabled
        return
    if not libc.mallopt(M_MMAP_MAX, 0):
        yield False
        return
    libc.mallopt(M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD)  # should this fail, trimming stays: mmap off matters most
    _active = True
    try:
        yield True
    finally:
        _active = False
        libc.mallopt(M_MMAP_MAX, AFTER_MMAP_MAX)
        libc.mallopt(M_MMAP_THRESHOLD, AFTER_MMAP_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, AFTER_TRIM_THRESHOLD)
        libc.malloc_trim(0)
