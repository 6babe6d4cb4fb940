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
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def libc_function(name: str) -> Callable[..., int] | None:
    """The C library's function `name`, or None where this C library has none (macOS, musl)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


_TRIM = libc_function("malloc_trim")


def release_free_memory() -> bool:
    """Return the C heap's free pages to the OS; False where this C library cannot."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


_M_MMAP_THRESHOLD = -3
DYNAMIC_MMAP_THRESHOLD_MAX = 32 * 2**20
"""glibc's ceiling for the mmap threshold it raises by itself (DEFAULT_MMAP_THRESHOLD_MAX, 64-bit): where an
explicitly set threshold goes back to, the value a long-running process's threshold has grown to anyway."""
UPDATE_MMAP_THRESHOLD = 128 * 2**10
"""glibc's initial mmap threshold: every activation of an update pass (hundreds of KB and up) gets its own mapping."""


_MALLOPT = libc_function("mallopt")
_threshold = [DYNAMIC_MMAP_THRESHOLD_MAX]
_M_TRIM_THRESHOLD = -1
GLIBC_TRIM_THRESHOLD = 128 * 2**10
"""glibc's initial trim threshold, where `steady_heap` puts it back (a process that never set one)."""
RUN_TRIM_THRESHOLD = 64 * 2**20
"""Free memory glibc keeps at the top of a heap during a run (see `steady_heap`)."""


@contextmanager
def steady_heap() -> Iterator[None]:
    """Inside the block, glibc keeps up to RUN_TRIM_THRESHOLD free at the top of a heap instead of handing it back
    at once, and serves blocks below 32 MiB from its heaps; after it, glibc's initial trim threshold again (the
    mmap threshold stays at 32 MiB, where glibc's own raising of it ends in a long-running process anyway).

    Why: a phase's short-lived tensors (a noise write's effective-sigma temporaries, three 3.5 MB blocks per
    weight) are freed at the top of the heap, which glibc then trims (its threshold follows the mmap threshold's,
    a few MB), so the next weight faults them in again: 110 thousand page faults in one demo noise write, none
    with the top kept. Setting a trim threshold stops glibc's own raising of the mmap threshold, so that is set
    to the 32 MiB it would reach anyway. The explicit trims between phases (`release_free_memory`) still hand
    everything back, so what the top keeps stays within one phase. Placement only: the bits do not change."""
    if _MALLOPT is None:
        yield
        return
    _MALLOPT(_M_TRIM_THRESHOLD, RUN_TRIM_THRESHOLD)
    _MALLOPT(_M_MMAP_THRESHOLD, _threshold[0])
    try:
        yield
    finally:
        _MALLOPT(_M_TRIM_THRESHOLD, GLIBC_TRIM_THRESHOLD)


MAPPED_UPDATE = "SRDD_MAPPED_UPDATE"
PACKED_WEIGHTS = "SRDD_PACKED_WEIGHTS"


def _switch(name: str, meaning: str) -> bool:
    """Whether the environment variable `name` is 1 (unset or 0: no); anything else is refused, naming `meaning`."""
    from srdd.errors import SrddError

    value = os.environ.get(name, "").strip()
    if value not in ("", "0", "1"):
        raise SrddError(f"{name} must be 1 ({meaning}) or 0, got {value!r}")
    return value == "1"


def update_allocations_mapped() -> bool:
    """Whether a GRPO update's allocations are mapped (`mapped_allocations`): SRDD_MAPPED_UPDATE=1. Off by default,
    because it costs time (fresh mappings fault their pages in): measured on the demo (2 cores, passes side by
    side), peak RSS 2628 MiB against 3564, the run 1.03-1.04x as long. Like SRDD_PASS_WORKERS it changes no bit,
    so it is the machine's business, not a run setting."""
    return _switch(MAPPED_UPDATE, "map an update's allocations")


def frozen_weights_packed() -> bool:
    """Whether a frozen E2M1 weight's quantized values are held packed (srdd.formats.packed, srdd.qlinear):
    SRDD_PACKED_WEIGHTS=1. Off by default, because every GEMM then unpacks its weight first, and an update's
    backward once more: measured on a 6-step demo (3 rounds interleaved), peak RSS 2502 MiB against 2710 and the
    other phases' 210-430 MiB lower, the run 1.00x as long (min; 1.03x median), its update about 1.1x. With
    SRDD_MAPPED_UPDATE=1 as well, the whole demo peaked at 2048 MiB in 1.23x the time. It changes no bit."""
    return _switch(PACKED_WEIGHTS, "hold frozen E2M1 weights packed")


@contextmanager
def mapped_allocations(threshold: int = UPDATE_MMAP_THRESHOLD) -> Iterator[None]:
    """Inside the block, malloc serves every allocation of `threshold` bytes or more from a mapping of its own,
    unmapped when it is freed; after it, the threshold it had.

    Why: glibc raises its mmap threshold to the size of the largest mapped block freed (up to 32 MiB),
    so a long run's tensors come from the heap, where what an update frees between its allocations stays
    resident as holes: with two update passes side by side, 682 MiB of a demo run's 2031 MiB heap was free at
    its peak. Mapped, what the update frees leaves the resident set at once (free heap chunks are still used
    first). The price is a page fault per page a fresh mapping touches, so generation and validation, which
    allocate a growing KV cache token by token, keep the heap. Placement only: every tensor stays 64-byte aligned
    (c10's allocator), the bits do not change.
    """
    if _MALLOPT is None:
        yield
        return
    previous = _threshold[0]
    _MALLOPT(_M_MMAP_THRESHOLD, threshold)
    _threshold[0] = threshold
    try:
        yield
    finally:
        _MALLOPT(_M_MMAP_THRESHOLD, previous)
        _threshold[0] = previous
