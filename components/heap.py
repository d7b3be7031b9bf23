"""Give freed heap memory back to the OS during long streaming passes (glibc's ``malloc_trim``).

A streaming pass allocates and frees the same large arrays over and over (a row group's columns,
~10 MB each; the torch tensors built from them). glibc raises its mmap threshold each time a large
mmapped block is freed, so from the second row group on these arrays come from the heap arenas,
which glibc does not shrink while small live objects sit above the freed space: the process's
resident memory then grows with the rows streamed. Measured on the Kaggle-size run (2026-12-06):
the teacher's logits over 3.3M streamed rows peaked at 1,448 MB, 835 MB with :func:`trim` every
8–64 batches (the model and tables alone: 726 MB); the whole distill stage at 45.8M rows reached
10.3 GB before this.

Fixing the threshold instead (``mallopt(M_MMAP_THRESHOLD, 128 KiB)``) also bounds the memory but
costs 3–5× in scoring speed (every 1,024-row inference block then maps and faults fresh pages), so
the loaders trim instead. On a C library without ``malloc_trim`` (musl, macOS) :func:`trim` does
nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache


@cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def trim() -> bool:
    """Return the heap's free memory to the OS (glibc ``malloc_trim(0)``); False where unavailable."""
    fn = _malloc_trim()
    if fn is None:
        return False
    fn(0)
    return True
