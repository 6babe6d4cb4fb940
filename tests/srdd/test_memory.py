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
