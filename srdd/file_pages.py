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
file pages, none swapped), and a tensor with any written page is left alone. Linux only;
elsewhere nothing happens.
"""

from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import mmap
import sys

import numpy as np
import torch

PAGE = mmap.PAGESIZE
_PRESENT, _SWAPPED, _FILE = 1 << 63, 1 << 62, 1 << 61
_MADV_DONTNEED = 4


def _madvise():
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return libc.madvise


_MADVISE = _madvise()


class _FileMappings:
    """The process's private file mappings (start, end), sorted; reread when an address is not in one, since
    libraries and files are mapped during a run but a loaded model's mapping stays put."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def _reload(self) -> None:
        spans = []
        with open("/proc/self/maps") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) >= 6 and fields[1][3] == "p" and fields[4] != "0":  # private, backed by an inode
                    lo, hi = (int(part, 16) for part in fields[0].split("-"))
                    spans.append((lo, hi))
        spans.sort()
        self.starts = [lo for lo, _ in spans]
        self.ends = [hi for _, hi in spans]

    def holds(self, lo: int, hi: int) -> bool:
        """Whether [lo, hi) lies inside one private file mapping."""
        for attempt in range(2):
            i = bisect.bisect_right(self.starts, lo) - 1
            if i >= 0 and hi <= self.ends[i]:
                return True
            if attempt == 0:
                self._reload()
        return False


_MAPPINGS = _FileMappings()


def _all_clean(lo: int, hi: int) -> bool:
    """Whether every page of [lo, hi) is either not resident (and not swapped) or an unwritten file page."""
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
    """Unmap the whole pages inside `tensor`'s bytes from this process when they are all clean pages of a
    private file mapping; returns the bytes released (0 when the tensor is not such memory, has a written
    page, or this is not Linux)."""
    if _MADVISE is None or tensor.device.type != "cpu" or not tensor.is_contiguous():
        return 0
    start = tensor.data_ptr()
    lo = (start + PAGE - 1) // PAGE * PAGE
    hi = (start + tensor.numel() * tensor.element_size()) // PAGE * PAGE
    if hi <= lo or not _MAPPINGS.holds(lo, hi):
        return 0
    try:
        if not _all_clean(lo, hi):
            return 0
    except OSError:  # no pagemap (a restricted /proc): never guess
        return 0
    if _MADVISE(lo, hi - lo, _MADV_DONTNEED) != 0:
        return 0
    return hi - lo
