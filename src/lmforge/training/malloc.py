"""glibc malloc settings for CPU training: keep freed memory in the process instead of handing it back.

Every training step allocates its activations and gradients afresh and frees them again. glibc serves large
blocks with mmap and returns them with munmap, and shrinks the heap when its top is free, so the next step's
tensors land on new pages: every 4 KiB page is a page fault and a zero-fill. For GPT-2 124M that is several
hundred MB per step. With mmap off and a high trim threshold, freed blocks stay in the heap and the next step
reuses them: measured with torch 2.13 on 2 cores, steps 6% (gpt-mini) and 12% (GPT-2 124M) faster
(benchmarks/RESULTS.md). The cost is that the process keeps its peak memory until training ends.

This is what jemalloc or tcmalloc (LD_PRELOAD) give as well; where either is preloaded, or MALLOC_* variables
are set, the user has chosen, and nothing is changed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
from collections.abc import Iterator

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # <malloc.h>
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536  # glibc's defaults, restored afterwards
KEEP_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: trim only when 2 GiB at the heap's top are free


def _glibc_malloc() -> ctypes.CDLL | None:
    """The C library when it is glibc and the user has not chosen an allocator or malloc settings."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    if any(k.startswith("MALLOC_") for k in os.environ) or "malloc" in os.environ.get("LD_PRELOAD", ""):
        return None  # MALLOC_ARENA_MAX, MALLOC_MMAP_MAX_, ... or libjemalloc / libtcmalloc
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


@contextlib.contextmanager
def keep_freed_memory(enabled: bool = True) -> Iterator[bool]:
    """Inside: glibc keeps freed memory for reuse (no mmap for large blocks, no trimming). Yields whether it did.

    Afterwards glibc's defaults are restored and the kept memory is released (malloc_trim).
    """
    libc = _glibc_malloc() if enabled else None
    if libc is None or not (libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD)):
        yield False
        return
    try:
        yield True
    finally:
        libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
        libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)
