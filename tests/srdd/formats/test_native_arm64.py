"""The kernel as an arm64 CPU builds it gives this machine's bits.

On arm64 `fakequant.c` has no vector path: `srdd_simd()` is 0 and the scalar code is the whole kernel,
compiled by another compiler back end for another instruction set (no x87, its own FMA and NaN rules).
Here it is cross-compiled with the flags srdd.formats.native uses (less `-march=native`), run under
qemu's user-mode emulator on every edge case of test_native.py, with two OpenMP threads, and compared
with this machine's portable build: round trips bit for bit (NaN payloads aside: arm64's default NaN has
another sign) and statistics exactly, since the scalar path sums in the same order on every CPU.

Needs `aarch64-linux-gnu-gcc` and `qemu-aarch64` (Debian/Ubuntu: `apt install gcc-aarch64-linux-gnu
qemu-user`); skipped without them.
"""

import ctypes
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from srdd.formats import native
from srdd.formats.registry import get_format
from srdd.formats.stats import SUM_FIELDS

from .conftest import bits
from .test_native import CASES, _inputs, _to

CROSS_CC, EMULATOR = "aarch64-linux-gnu-gcc", "qemu-aarch64"
HOST_ONLY_FLAGS = {"-march=native", "-shared", "-fPIC"}
"""native.CFLAGS that describe this machine or a shared library, not an arm64 executable."""
THREADS = 2


@pytest.fixture(scope="module")
def arm64_driver(tmp_path_factory) -> str:
    missing = [tool for tool in (CROSS_CC, EMULATOR) if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (apt install gcc-aarch64-linux-gnu qemu-user)")
    exe = tmp_path_factory.mktemp("arm64") / "native_driver"
    flags = [flag for flag in native.CFLAGS if flag not in HOST_ONLY_FLAGS]
    driver = Path(__file__).with_name("native_driver.c")
    done = subprocess.run([CROSS_CC, *flags, "-static", str(driver), str(native.SOURCE), "-o", str(exe), "-lm"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return str(exe)


def _jobs() -> list[tuple[int, torch.Tensor, int]]:
    """(format code, input, kernel blocks) for every case, input and dtype of test_native.py."""
    jobs = []
    for fmt, options in CASES:
        spec = get_format(fmt, **options)
        for dtype in (torch.float32, torch.bfloat16):
            for x in _inputs(fmt, options):
                x = _to(x, dtype).contiguous()
                jobs.append((native.format_code(spec), x, x.numel() // native.kernel_block(spec)))
    return jobs


def _run_on_arm64(exe: str, jobs) -> tuple[int, list[tuple[tuple[int, int], bytes, list[float]]]]:
    request = b"".join(struct.pack("<iiiqq", code, native._DTYPES[x.dtype], THREADS, nblocks,
                                   x.numel() * x.element_size()) + x.view(torch.uint8).numpy().tobytes()
                       for code, x, nblocks in jobs)
    done = subprocess.run([EMULATOR, exe], input=request, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()
    out, at = done.stdout, 4
    answers = []
    for _, x, _ in jobs:
        size = x.numel() * x.element_size()
        codes = struct.unpack_from("<ii", out, at)
        at += 8
        y = out[at:at + size]
        at += size
        sums = list(struct.unpack_from(f"<{len(SUM_FIELDS)}d", out, at))
        at += 8 * len(SUM_FIELDS)
        answers.append((codes, y, sums))
    assert at == len(out), "the driver answered more than was asked"
    return struct.unpack_from("<i", out)[0], answers


def test_arm64_build_gives_the_bits_of_this_machine(arm64_driver):
    jobs = _jobs()
    simd, answers = _run_on_arm64(arm64_driver, jobs)
    assert simd == 0, "arm64 has no vector path: the scalar code is the whole kernel"
    host = native.library("portable")
    assert host is not None, "a C compiler is part of this project's test environment"
    for (code, x, nblocks), (codes, y, sums) in zip(jobs, answers, strict=True):
        assert codes == (0, 0), f"format code {code} refused on arm64"
        want = torch.empty_like(x)
        assert host.srdd_round_trip(x.data_ptr(), want.data_ptr(), nblocks, code, native._DTYPES[x.dtype],
                                    THREADS, 0) == 0
        got = torch.frombuffer(bytearray(y), dtype=x.dtype).view_as(x)
        assert (bits(got) == bits(want)).all(), f"format code {code}, {x.dtype}, shape {tuple(x.shape)}"
        want_sums = (ctypes.c_double * len(SUM_FIELDS))()
        assert host.srdd_stats(x.data_ptr(), nblocks, code, native._DTYPES[x.dtype], THREADS, want_sums) == 0
        np.testing.assert_array_equal(np.array(sums), np.array(list(want_sums)),
                                      err_msg=f"statistics of format code {code}, {x.dtype}")
