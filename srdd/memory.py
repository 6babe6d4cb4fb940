"""Freed memory handed back to the operating system between the phases of a run.

glibc's malloc keeps what a phase frees (an update's activations, a validation's KV cache)
in its heaps for reuse, in fragments, so a process's resident memory only grows: a `demo`
run stood at 3 GB resident with 1.4 GB of live tensors. `malloc_trim(0)` returns every whole
free page (since glibc 2.8 also the holes inside a heap, by MADV_DONTNEED), so each phase
starts from the live size and a run's peak is its largest phase's live data, not that plus
every earlier phase's leftovers. The price is touching those pages again (page faults, a
fraction of a second per GB); where the C library has no malloc_trim (macOS, musl) nothing
happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def release_free_memory() -> bool:
    """Return the C heap's free pages to the OS; False where this C library cannot."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
