"""srdd.memory: freed heap pages go back to the OS (glibc), measured in a fresh process."""

import subprocess
import sys

import pytest

from srdd.memory import release_free_memory

PROGRAM = r"""
import ctypes, ctypes.util, resource
from srdd.memory import release_free_memory
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: every block from the heap, as a fragmented heap holds them
page = resource.getpagesize()
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * page / 2**20
blocks = [libc.malloc(1 << 20) for _ in range(300)]
for b in blocks:
    ctypes.memset(b, 1, 1 << 20)
keeper = blocks.pop()  # the heap's last block stays live: the 299 MB below it are a hole, never trimmed on free
for b in blocks:
    libc.free(b)
before = rss_mb()
release_free_memory()
print(before, rss_mb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or not release_free_memory(), reason="needs glibc")
def test_a_hole_of_freed_heap_memory_leaves_the_resident_set():
    out = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, check=True).stdout
    before, after = map(float, out.split())
    assert before - after > 250, (before, after)  # ~299 MB handed back


MAPPED = r"""
import ctypes, resource, sys
from contextlib import nullcontext
from srdd.memory import DYNAMIC_MMAP_THRESHOLD_MAX, mapped_allocations
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
page = resource.getpagesize()
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * page / 2**20
libc.mallopt(-3, DYNAMIC_MMAP_THRESHOLD_MAX)  # what a long run's grown threshold is
if sys.argv[1] == "after":
    with mapped_allocations():
        pass
with mapped_allocations() if sys.argv[1] == "inside" else nullcontext():
    size = 1 << 20
    blocks = [libc.malloc(size) for _ in range(200)]
    for b in blocks:
        ctypes.memset(b, 1, size)
    keeper = libc.malloc(size)  # a live block above the freed ones keeps the heap from trimming them
    ctypes.memset(keeper, 1, size)
    before = rss_mb()
    for b in blocks:
        libc.free(b)
    print(rss_mb() - before + 200 * size / 2**20)  # MB of the 200 freed that stay resident
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or not release_free_memory(), reason="needs glibc")
def test_mapped_allocations_hand_freed_blocks_back_at_once_and_only_inside_the_block():
    def resident_after_free(where: str) -> float:  # a fresh process each: a heap's free chunks are reused first
        out = subprocess.run([sys.executable, "-c", MAPPED, where], capture_output=True, text=True, check=True)
        return float(out.stdout)

    assert resident_after_free("heap") > 150  # 200 freed MB of heap stay resident behind a live block
    assert resident_after_free("inside") < 20  # mapped blocks leave with their free
    assert resident_after_free("after") > 150  # the threshold is back: the heap again


STEADY = r"""
import ctypes, ctypes.util, sys
from srdd.memory import steady_heap
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
SIZE = 24 << 20  # below the 32 MiB mmap threshold: from the heap's top
def faults():
    return int(open("/proc/self/stat").read().split(")")[1].split()[7])
def refaults():  # a block freed at the top of the heap, then allocated and written again: the faults of the second
    b = libc.malloc(SIZE); ctypes.memset(b, 1, SIZE); libc.free(b)
    before = faults()
    b = libc.malloc(SIZE); ctypes.memset(b, 1, SIZE); libc.free(b)
    return faults() - before
libc.mallopt(-3, 32 << 20)  # the mmap threshold a long-running process reaches
if sys.argv[1] == "inside":
    with steady_heap():
        print(refaults())
else:
    if sys.argv[1] == "after":
        with steady_heap():
            pass
    print(refaults())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or not release_free_memory(), reason="needs glibc")
def test_a_steady_heap_keeps_its_freed_top_within_the_block_and_only_there():
    def refaults(where: str) -> int:
        out = subprocess.run([sys.executable, "-c", STEADY, where], capture_output=True, text=True, check=True)
        return int(out.stdout)

    pages = (24 << 20) // 4096
    assert refaults("before") > pages // 2  # glibc trims the freed top: written again, every page faults
    assert refaults("inside") < pages // 20  # kept: written again without faulting
    assert refaults("after") > pages // 2  # the trim threshold is glibc's again
