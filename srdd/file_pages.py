"""Clean pages of a memory-mapped weights file handed back while nothing reads them.

A model loaded from safetensors keeps its weights in a private mapping of the file, and a
weight is resident once read. A frozen quantized linear reads its weight only to recompute
its quantized buffer (a step's noise write, a merged-LoRA validation, a rescan); between
those, the GEMMs read the buffer. On the demo, those pages were 425 MB of a run's peak
resident set while nothing touched them. `release` unmaps a tensor's pages from this
process (MADV_DONTNEED); they stay in the page cache, so the next read maps them again
(minor faults, no disk read unless the system evicted them, which it could have done to
the mapped pages anyway: they are clean).

It only releases pages that are still the file's: on a private mapping, a page that was
written holds the only copy of the write, and MADV_DONTNEED would silently bring back the
file's bytes. So every page is checked in /proc/self/pagemap first (present pages must be
file pages, none swapped), and a tensor with any written page is left alone. The check and
the madvise are two calls, so a caller releases only memory that no other thread writes
meanwhile (srdd.qlinear releases a frozen weight right after reading it; what writes such a
weight in place, PEFT's merge, does so between forwards, in the thread that releases). Linux
only; elsewhere nothing happens.
"""

from __future__ import annotations

import ctypes
import mmap
import sys

import numpy as np
import torch

from srdd.memory import libc_function

PAGE = mmap.PAGESIZE
_PRESENT, _SWAPPED, _FILE = 1 << 63, 1 << 62, 1 << 61
_MADV_DONTNEED = 4


def _madvise():
    """libc's madvise with a pointer-sized address (ctypes would pass a 64-bit address as an int), on Linux only:
    /proc/self/pagemap, which decides what may go, is Linux's."""
    madvise = libc_function("madvise") if sys.platform.startswith("linux") else None
    if madvise is not None:
        madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return madvise


_MADVISE = _madvise()


def _all_clean(lo: int, hi: int) -> bool:
    """Whether every page of [lo, hi) is either not resident (and not swapped) or an unwritten file page (or shared
    memory). Releasing such a range loses nothing, whatever the mapping: a file or shared page is read back as it
    was, and a page that is not resident has nothing to drop."""
    count = (hi - lo) // PAGE
    with open("/proc/self/pagemap", "rb") as fh:
        fh.seek(lo // PAGE * 8)
        entries = np.frombuffer(fh.read(count * 8), dtype=np.uint64)
    if entries.size != count:
        return False
    present = (entries & np.uint64(_PRESENT)) != 0
    swapped = (entries & np.uint64(_SWAPPED)) != 0
    file_page = (entries & np.uint64(_FILE)) != 0
    return not swapped.any() and bool((file_page | ~present).all())


def release(tensor: torch.Tensor) -> int:
    """Unmap the whole pages inside `tensor`'s bytes from this process when each is a clean file page or not
    resident; returns the bytes released (0 when a page is the process's own memory, written or anonymous, or
    this is not Linux). Reads 8 bytes of /proc/self/pagemap per page: about 20 us for a 1 MiB weight."""
    if _MADVISE is None or tensor.device.type != "cpu" or not tensor.is_contiguous():
        return 0
    start = tensor.data_ptr()
    lo = (start + PAGE - 1) // PAGE * PAGE
    hi = (start + tensor.numel() * tensor.element_size()) // PAGE * PAGE
    if hi <= lo:
        return 0
    try:
        if not _all_clean(lo, hi):
            return 0
    except OSError:  # no pagemap (a restricted /proc): never guess
        return 0
    if _MADVISE(lo, hi - lo, _MADV_DONTNEED) != 0:
        return 0
    return hi - lo
