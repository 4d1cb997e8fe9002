"""Freed memory kept for reuse: glibc malloc's two thresholds, set once per process.

Sampling many streams makes several large temporaries per character and frees them together:
scoring 64 poem candidates over the Tang model's 6,762 characters holds three float64 copies of
the (64, 6762) logits, 3.5 MB each. glibc serves a block above its mmap threshold with a fresh
mapping, and gives free memory at the top of its heap back to the system once that exceeds its
trim threshold. It raises both thresholds as it sees large blocks freed, but when several are
freed at once the top of the heap still passes the trim threshold, so it is returned after every
character and faulted back in 4 KiB page by page by the next: 1,659 page faults and 3.4 ms for
that scoring, 0.6 ms without them, on the Zen 5 of the README.

`keep_freed_memory()` sets both thresholds for the rest of the process: blocks up to 32 MiB
(glibc's largest mmap threshold on 64-bit) come from the heap, and up to 1 GiB of freed heap
is kept for reuse. It changes where memory comes from, never a value; the process keeps at most
its peak heap, which it needed anyway. The `charrnn` command and its training workers call it at
start; a program using the package directly may call it too. Where the C library is not glibc,
or the user has set the thresholds (GLIBC_TUNABLES or MALLOC_*_), it changes nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1  # mallopt's parameter numbers, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2**30
_USER_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
_USER_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold")


def keep_freed_memory(environ=os.environ) -> bool:
    """Set the two thresholds in this process. True if they were set; False if nothing changed
    (not Linux, a C library without mallopt, or the user's own setting in `environ` applies)."""
    if not sys.platform.startswith("linux") or user_set_thresholds(environ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success (musl's accepts nothing and returns 0).
    return mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1


def user_set_thresholds(environ) -> bool:
    """Whether the environment already sets either threshold (glibc applies it at start)."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    return any(name in environ for name in _USER_VARIABLES) or any(key in tunables for key in _USER_TUNABLES)
