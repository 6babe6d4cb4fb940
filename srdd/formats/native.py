"""The C kernels of `csrc/fakequant.c`: MX, NVFP4, INT4 and per-tensor FP8 on the CPU, built on first use.

Inductor fuses the round trip well but not the statistics pass (a per-block
amax feeding a tensor-wide reduction: 0.02-0.07 of a memory copy), so on the
CPU the quantized formats run through one hand-written kernel instead; it is
bit-identical to the eager path and tested against it. It has an AVX-512, an
AVX2 + FMA and a portable build (VARIANTS); callers get the best one the CPU
runs (chosen_variant). Each is compiled once per machine with the system C
compiler (`$CC`, default `cc`) into the srdd cache, keyed by source, flags,
compiler and CPU flags, and loaded with ctypes, which
releases the GIL during the call. Only a library srdd built itself is loaded: the
kernels directory is private (0700) and a `.so` must be ours, writable by nobody
else, and match the sha256 recorded when it was built (srdd.cache.trusted_file);
anything else there is rebuilt over. Without a compiler, for INT4 groups other
than 16 or 32, fp16 inputs, GPU tensors or a last dim that is not a whole
number of blocks, callers keep the PyTorch path.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import mmap
import os
import platform
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from srdd.cache import private_dir, record_hash, trusted_file
from srdd.jsonio import sha256_file
from srdd.formats.elements import E4M3
from srdd.formats.specs import IntFormat, MXFormat, NVFP4Format, PerTensorFormat, QuantFormatConfig, ScaleMode
from srdd.formats.stats import SUM_FIELDS

SOURCE = Path(__file__).with_name("csrc") / "fakequant.c"
CFLAGS = ("-O3", "-march=native", "-fopenmp", "-ffp-contract=off", "-fno-math-errno", "-std=gnu11",
          "-fPIC", "-shared", "-fvisibility=hidden")
_X86 = platform.machine().lower() in ("x86_64", "amd64")
VARIANTS: dict[str, tuple[str, ...]] = {
    "portable": ("-DSRDD_NO_SIMD",),
    **({"avx2": ("-mavx2", "-mfma", "-mno-avx512f"),
        "avx512": ("-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl")} if _X86 else {}),
}
"""Builds of the kernel, worst to best: `portable` is the scalar path alone (what other CPUs, arm64 among
them, run); `avx2` keeps AVX-512 out even on a CPU that has it, so that such a machine tests both."""
SIMD_LEVEL = {"portable": 0, "avx2": 1, "avx512": 2}
"""What each build's `srdd_simd()` returns."""
CPU_FLAGS_NEEDED = {"portable": (), "avx2": ("avx2", "fma"), "avx512": ("avx512f", "avx512bw", "avx512dq", "avx512vl")}
VARIANT_ENV = "SRDD_NATIVE_VARIANT"
"""Names the build to use instead of the best one this CPU runs (benchmarks, debugging)."""
PARALLEL_MIN_NUMEL = 1 << 16
"""Below this many elements one thread is faster than waking the OpenMP team."""
OWN_MAPPING_BYTES = 32 << 20
"""A new result at least this large gets its own mapping on huge pages (fakequant.c's STREAM_MIN_BYTES)."""

_DTYPES = {torch.float32: 0, torch.bfloat16: 1}


ELEMENT_CODES = {"e2m1": 0, "e2m3": 1, "e3m2": 2, "e4m3": 3, "e5m2": 4}
"""The kernel's element enum (keep in sync with fakequant.c)."""
NVFP4_CODE = 2 * len(ELEMENT_CODES)
INT4_CODES = {32: NVFP4_CODE + 2, 16: NVFP4_CODE + 3}
"""INT4 by group size."""
FP8_TENSOR_CODE = NVFP4_CODE + 4
PER_TENSOR_BLOCK = 32
"""Per-tensor FP8 has no blocks; the kernel walks the flat tensor in 32s."""


def format_code(spec: QuantFormatConfig) -> int | None:
    """The kernel's code for `spec` (2 * element + rceil for MX, then NVFP4, INT4, FP8), None if it has none."""
    if isinstance(spec, MXFormat) and spec.element.name in ELEMENT_CODES:
        return 2 * ELEMENT_CODES[spec.element.name] + (spec.scale_mode is ScaleMode.RCEIL)
    if isinstance(spec, NVFP4Format):
        return NVFP4_CODE if spec.per_tensor_scale else NVFP4_CODE + 1
    if isinstance(spec, IntFormat) and spec.bits == 4:
        return INT4_CODES.get(spec.group_size)
    if isinstance(spec, PerTensorFormat) and spec.element == E4M3:
        return FP8_TENSOR_CODE
    return None


def kernel_block(spec: QuantFormatConfig) -> int:
    """Elements per kernel block: the format's block, or PER_TENSOR_BLOCK for a per-tensor scale."""
    return PER_TENSOR_BLOCK if spec.block_size is None else spec.block_size


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux names them: /proc/cpuinfo, else what PyTorch detected."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    capability = torch.backends.cpu.get_cpu_capability()  # DEFAULT, AVX2, AVX512 (x86) or others
    return frozenset({"AVX2": CPU_FLAGS_NEEDED["avx2"],
                      "AVX512": CPU_FLAGS_NEEDED["avx2"] + CPU_FLAGS_NEEDED["avx512"]}.get(capability, ()))


def runnable(variant: str) -> bool:
    """Whether this CPU can run the `variant` build."""
    return variant in VARIANTS and set(CPU_FLAGS_NEEDED[variant]) <= cpu_flags()


def chosen_variant() -> str:
    """The build callers get: $SRDD_NATIVE_VARIANT if set, else the best one this CPU runs."""
    forced = os.environ.get(VARIANT_ENV)
    if forced:
        if not runnable(forced):
            raise ValueError(f"{VARIANT_ENV}={forced!r}: this CPU runs {[v for v in VARIANTS if runnable(v)]}")
        return forced
    return [v for v in VARIANTS if runnable(v)][-1]


def _compiler() -> str:
    return os.environ.get("CC", "cc")


def _build(variant: str) -> Path:
    flags = CFLAGS + VARIANTS[variant]
    version = subprocess.run([_compiler(), "--version"], capture_output=True, text=True, check=True).stdout
    # -march=native: a cache shared by machines of different CPUs must not hand one's build to another
    machine = " ".join(sorted(cpu_flags()))
    key = hashlib.sha256(SOURCE.read_bytes() + repr(flags).encode() + version.encode() + machine.encode()).hexdigest()[:16]
    target = private_dir("kernels") / f"fakequant-{variant}-{key}.so"
    if trusted_file(target):
        return target
    print(f"srdd: compiling the C fake-quant kernel ({variant}) once for this machine into {target.parent}",
          file=sys.stderr, flush=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([_compiler(), *flags, str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip()[-2000:])
        os.chmod(tmp, 0o700)
        digest = sha256_file(Path(tmp))
        os.replace(tmp, target)  # atomic: a concurrent build of the same key writes the same bytes
        record_hash(target, digest)  # last: the library counts only once its hash is recorded
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if not trusted_file(target):
        raise OSError(f"{target} changed while it was being built; not loading it")
    return target


def library(variant: str | None = None) -> ctypes.CDLL | None:
    """The loaded kernel library (`variant`, else chosen_variant()), or None (with one warning) when it cannot
    be built here."""
    variant = variant or chosen_variant()
    if variant not in VARIANTS:
        raise ValueError(f"unknown native kernel variant {variant!r}; choose one of {list(VARIANTS)}")
    if not runnable(variant):  # its first vector instruction would kill the process
        raise ValueError(f"this CPU cannot run the {variant!r} kernel (it lacks {CPU_FLAGS_NEEDED[variant]})")
    return _load(variant)


@functools.cache
def _load(variant: str) -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL(str(_build(variant)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        warnings.warn(f"srdd's C fake-quant kernel could not be built ({exc}); the quantized formats on the CPU use the "
                      "PyTorch path instead (same results, slower). Set CC to a working C compiler to fix this.",
                      RuntimeWarning, stacklevel=2)
        return None
    i64, cint, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    lib.srdd_round_trip.argtypes = (ptr, ptr, i64, cint, cint, cint, cint)
    lib.srdd_stats.argtypes = (ptr, i64, cint, cint, cint, ctypes.POINTER(ctypes.c_double))
    lib.srdd_pack_e2m1.argtypes = (ptr, ptr, ptr, i64, cint, cint)
    lib.srdd_unpack_e2m1.argtypes = (ptr, ptr, ptr, i64, cint, cint)
    for function in (lib.srdd_round_trip, lib.srdd_stats, lib.srdd_simd, lib.srdd_pack_e2m1, lib.srdd_unpack_e2m1):
        function.restype = cint
    return lib


def applies(x: torch.Tensor, spec: QuantFormatConfig) -> bool:
    """Whether the kernel computes `spec` for `x` (the library itself is checked by `library()`)."""
    if x.device.type != "cpu" or x.dtype not in _DTYPES or format_code(spec) is None:
        return False
    if spec.block_size is None:  # per-tensor: the flat tensor in whole kernel blocks
        return x.numel() % PER_TENSOR_BLOCK == 0
    return x.shape[-1] % spec.block_size == 0


def _threads(x: torch.Tensor) -> int:
    return torch.get_num_threads() if x.numel() >= PARALLEL_MIN_NUMEL else 1


def new_result(x: torch.Tensor) -> torch.Tensor:
    """Uninitialised memory for a result shaped like the contiguous `x`.

    A new large result's pages fault in one at a time, and a 64 MiB one's 16 384 faults cost as much as
    the rest of the round trip. So it gets an anonymous mapping of its own with transparent huge pages
    asked for (32 faults instead), which the tensor keeps alive and which is unmapped with it: unlike
    flagging memory that malloc handed out, nothing outside the result, and nothing after it is freed, is
    left on huge pages. Where THP is unsupported it is an ordinary private mapping."""
    nbytes = x.numel() * x.element_size()
    if nbytes < OWN_MAPPING_BYTES or not hasattr(mmap, "MADV_HUGEPAGE"):
        return torch.empty_like(x)
    pages = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        pages.madvise(mmap.MADV_HUGEPAGE)
    except OSError:  # a kernel built without THP
        pass
    return torch.frombuffer(pages, dtype=x.dtype).view(x.shape)


def round_trip(lib: ctypes.CDLL, x: torch.Tensor, spec: QuantFormatConfig,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """fake_quantize(x) into `out` (or a new tensor); `applies(x, spec)` must hold."""
    x = x.contiguous()
    target = out if out is not None and out.is_contiguous() else new_result(x)
    rc = lib.srdd_round_trip(x.data_ptr(), target.data_ptr(), x.numel() // kernel_block(spec), format_code(spec),
                             _DTYPES[x.dtype], _threads(x), target is out)
    if rc != 0:
        raise RuntimeError(f"srdd_round_trip rejected its arguments (code {rc})")
    if out is not None and target is not out:
        out.copy_(target)
        return out
    return target


def stats(lib: ctypes.CDLL, x: torch.Tensor, spec: QuantFormatConfig) -> list[float]:
    """The stats_vector() sums of `x` in SUM_FIELDS order; `applies(x, spec)` must hold."""
    x = x.contiguous()
    result = (ctypes.c_double * len(SUM_FIELDS))()
    rc = lib.srdd_stats(x.data_ptr(), x.numel() // kernel_block(spec), format_code(spec), _DTYPES[x.dtype],
                        _threads(x), result)
    if rc != 0:
        raise RuntimeError(f"srdd_stats rejected its arguments (code {rc})")
    return list(result)
