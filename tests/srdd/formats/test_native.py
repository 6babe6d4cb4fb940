"""The C kernel (srdd.formats.native) must give the eager path's bits exactly.

The eager path is proven bit-exact against the independent reference in the
other modules; here every build of the C kernel this CPU can run -- portable
(scalar), AVX2 + FMA and AVX-512, so that an AVX-512 machine proves the AVX2
path too -- is compared with it on every edge row, in fp32 and bf16, for every
MX element type in both scale modes and both NVFP4 variants, with block counts
that exercise the 16-block groups and the tail. Builds the CPU cannot run are
skipped, with the reason.
"""

import gc
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from srdd.formats import backend, fake_quantize, fake_quantize_ste, native, quant_stats, set_backend
from srdd.formats.registry import get_format

from .conftest import assert_same_stats, bits, edge_matrix, extreme_rows, random_matrix

CASES = [("mxfp4", {}), ("mxfp4", {"scale_mode": "rceil"}), ("nvfp4", {}), ("nvfp4", {"per_tensor_scale": False}),
         *((name, options) for name in ("mxfp6_e2m3", "mxfp6_e3m2", "mxfp8_e4m3", "mxfp8_e5m2")
           for options in ({}, {"scale_mode": "rceil"})),
         ("int4", {}), ("int4", {"group_size": 16}), ("fp8_e4m3", {})]


def _route_to(name: str, monkeypatch) -> str:
    """Route the native backend to build `name` of the kernel (skipped where the CPU cannot run it)."""
    if not native.runnable(name):
        pytest.skip(f"this CPU cannot run the {name} build (needs {native.CPU_FLAGS_NEEDED[name]})")
    lib = native.library(name)
    assert lib is not None, "a C compiler is part of this project's test environment"
    assert lib.srdd_simd() == native.SIMD_LEVEL[name]
    monkeypatch.setattr(native, "library", lambda variant=None: lib)
    return name


@pytest.fixture(params=list(native.VARIANTS))
def variant(request, monkeypatch):
    """Every build of the kernel in turn."""
    return _route_to(request.param, monkeypatch)


@pytest.fixture(params=[name for name in native.VARIANTS if native.SIMD_LEVEL[name]])
def vector_variant(request, monkeypatch):
    """The builds with a vector path: the only ones with streamed stores and fault-ahead chunks."""
    return _route_to(request.param, monkeypatch)


def _inputs(fmt: str, options: dict) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    edges = torch.cat([edge_matrix(), extreme_rows()])
    if get_format(fmt, **options).uses_tensor_amax:
        edges = edges[torch.isfinite(edges).all(1)]  # one NaN/Inf poisons the whole tensor: tested below
    scaled = torch.randn(300, 256, generator=g) * torch.exp2(torch.randint(-8, 8, (300, 1), generator=g).float())
    grouped = torch.cat([edges.repeat(20, 1), torch.randn(37, 32, generator=g)])  # 16-block groups + a tail
    wide = grouped[: grouped.shape[0] // 3 * 3].reshape(-1, 96)  # blocks of a row straddle the groups
    return [edges, random_matrix()[:, :64], scaled, grouped, wide]


def _to(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    big = torch.finfo(dtype).max / 2  # keep bf16 tensor scales finite (FLT_MAX rounds to inf)
    return torch.where(x.abs() > big, x.sign() * big, x).to(dtype) if dtype is torch.bfloat16 else x


def _both(fn, *args, **kwargs):
    set_backend("eager")
    eager = fn(*args, **kwargs)
    set_backend("native")
    return eager, fn(*args, **kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fmt,options", CASES)
def test_round_trip_and_stats_match_eager(variant, fmt, options, dtype):
    for x in _inputs(fmt, options):
        x = _to(x, dtype)
        assert native.applies(x, get_format(fmt, **options))
        eager, got = _both(fake_quantize, x, fmt, **options)
        assert got.dtype == dtype and got.shape == x.shape
        assert (bits(eager) == bits(got)).all()
        out = torch.full_like(x, 7.0)
        assert fake_quantize(x, fmt, out=out, **options) is out
        assert (bits(out) == bits(eager)).all()
        assert_same_stats(*_both(quant_stats, x, fmt, **options))


@settings(max_examples=400, deadline=None)
@given(fmt_options=st.sampled_from(CASES), exponent=st.integers(-150, 118), spread=st.integers(0, 40),
       zeros=st.integers(0, 144), bf16=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_any_magnitude_matches_eager(fmt_options, exponent, spread, zeros, bf16, seed):
    """Rows at magnitudes anywhere in fp32's range (spread over up to 2^40 within a tensor), with a run of
    zeros, 16-block groups and a tail, against the eager path: round trip bits and statistics."""
    fmt, options = fmt_options
    g = torch.Generator().manual_seed(seed)
    scales = torch.exp2(exponent - torch.randint(0, spread + 1, (9, 1), generator=g).float())
    x = torch.randn(9, 128, generator=g) * scales
    x.view(-1)[:zeros] = 0.0
    x = _to(x, torch.bfloat16 if bf16 else torch.float32)
    eager, got = _both(fake_quantize, x, fmt, **options)
    assert (bits(eager) == bits(got)).all()
    assert_same_stats(*_both(quant_stats, x, fmt, **options))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("exponent", [-100, -116, -118, -126, -135, -148])
def test_two_level_nvfp4_of_tiny_tensors(variant, exponent, dtype):
    """Tensor amaxima so small that 1 / pts / s8 overflows for small blocks (from about 2^-110 down), the
    tensor scale amax / 2688 turns subnormal and 1 / pts itself overflows: the kernel must follow the
    reference there too (zero blocks give NaN, 0 * inf, and count as non-finite)."""
    x = (torch.randn(64, 512, generator=torch.Generator().manual_seed(11)) * 2.0**exponent).to(dtype)
    x[3, :40] = 0.0
    eager, got = _both(fake_quantize, x, "nvfp4")
    assert (bits(eager) == bits(got)).all()
    assert_same_stats(*_both(quant_stats, x, "nvfp4"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_non_finite_value_poisons_two_level_nvfp4(variant, dtype):
    x = torch.randn(64, 64).to(dtype)
    x[7, 9] = float("inf")
    eager, got = _both(fake_quantize, x, "nvfp4")
    assert torch.isnan(eager).all() and torch.isnan(got).all()
    s = quant_stats(x, "nvfp4")
    assert s.nonfinite == x.numel() and s.sum_x2 == 0.0


def test_non_contiguous_input_and_out():
    x = torch.randn(64, 128)[:, ::2]  # last dim 64, stride 2
    out = torch.empty(64, 128)[:, ::2]
    eager, got = _both(fake_quantize, x, "mxfp4")
    assert (bits(got) == bits(eager)).all()
    fake_quantize(x, "mxfp4", out=out)
    assert (bits(out) == bits(eager)).all()


def test_thread_count_does_not_change_the_bits():
    x = torch.randn(512, 1024)  # above the one-thread threshold
    set_backend("native")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, s1 = fake_quantize(x, "nvfp4"), quant_stats(x, "nvfp4")
        torch.set_num_threads(max(2, threads))
        many, s2 = fake_quantize(x, "nvfp4"), quant_stats(x, "nvfp4")
    finally:
        torch.set_num_threads(threads)
    assert (bits(one) == bits(many)).all()
    assert_same_stats(s1, s2)


def test_routing():
    set_backend("auto")
    mx = get_format("mxfp4")
    assert backend.native_kernel(torch.randn(4, 64), mx) is not None
    assert backend.native_kernel(torch.randn(4, 64, dtype=torch.float16), mx) is None  # fp16: PyTorch path
    assert backend.native_kernel(torch.randn(4, 48), mx) is None  # 48 is not a whole number of blocks
    assert backend.native_kernel(torch.randn(4, 64), get_format("int4")) is not None
    assert backend.native_kernel(torch.randn(4, 64), get_format("int4", group_size=64)) is None  # groups of 16/32
    fp8 = get_format("fp8_e4m3")  # per-tensor: any shape with a whole number of 32s
    assert backend.native_kernel(torch.randn(3, 32), fp8) is not None
    assert backend.native_kernel(torch.randn(3, 10), fp8) is None
    assert backend.native_kernel(torch.randn(4, 64), get_format("bf16")) is None
    for mode in ("eager", "compiled"):
        set_backend(mode)
        assert backend.native_kernel(torch.randn(4, 64), mx) is None


def test_ste_forward_uses_the_kernel_and_passes_gradients():
    set_backend("native")
    x = torch.randn(8, 64, requires_grad=True)
    y = fake_quantize_ste(x, "mxfp4")
    assert (bits(y) == bits(fake_quantize(x.detach(), "mxfp4"))).all()
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_without_a_compiler_the_pytorch_path_takes_over(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("SRDD_CACHE", str(tmp_path))
    native._load.cache_clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert native.library() is None
        assert any("could not be built" in str(w.message) for w in caught)
        set_backend("auto")
        x = torch.randn(4, 64)
        assert backend.native_kernel(x, get_format("mxfp4")) is None
        set_backend("eager")
        want = fake_quantize(x, "mxfp4")
        set_backend("auto")
        assert (bits(fake_quantize(x, "mxfp4")) == bits(want)).all()
    finally:
        native._load.cache_clear()


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="unknown native kernel variant"):
        native.library("avx9000")


def test_the_best_build_the_cpu_runs_is_chosen_unless_one_is_named(monkeypatch):
    x86 = "avx2" in native.VARIANTS
    monkeypatch.delenv(native.VARIANT_ENV, raising=False)
    monkeypatch.setattr(native, "cpu_flags", lambda: frozenset({"avx2", "fma", "sse4_2"}))
    assert native.chosen_variant() == ("avx2" if x86 else "portable")
    everything = frozenset(flag for flags in native.CPU_FLAGS_NEEDED.values() for flag in flags)
    monkeypatch.setattr(native, "cpu_flags", lambda: everything)
    assert native.chosen_variant() == ("avx512" if x86 else "portable")
    monkeypatch.setenv(native.VARIANT_ENV, "portable")
    assert native.chosen_variant() == "portable"
    monkeypatch.setattr(native, "cpu_flags", lambda: frozenset({"avx2"}))  # no FMA: no AVX2 build
    monkeypatch.setenv(native.VARIANT_ENV, "avx2")
    with pytest.raises(ValueError, match="this CPU runs"):
        native.chosen_variant()
    if x86:  # a build the CPU cannot run is never loaded
        with pytest.raises(ValueError, match="cannot run"):
            native.library("avx2")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_large_tensors_keep_the_bits(vector_variant, dtype):
    g = torch.Generator().manual_seed(8)
    x = (torch.randn(4096, 4096, generator=g) * 3).to(dtype)  # 32 MiB in bf16, 64 MiB in fp32: streamed stores
    for fmt in ("mxfp4", "nvfp4"):  # fresh results: pages faulted in chunk by chunk ahead of the stores
        eager, got = _both(fake_quantize, x, fmt)
        assert (bits(eager) == bits(got)).all()
    out = torch.empty_like(x)
    fake_quantize(x, "nvfp4", out=out)
    assert (bits(out) == bits(eager)).all()
    # NVFP4 statistics split across the tensor-amax pass and the block pass, on two threads
    assert_same_stats(*_both(quant_stats, x, "nvfp4"))


@pytest.mark.parametrize("fmt, cols", [("mxfp4", 2080), ("nvfp4", 2064), ("fp8_e4m3", 2080)])
def test_large_fresh_outputs_with_ragged_chunks(vector_variant, fmt, cols):
    """Over 32 MiB with a group count that splits into neither whole fault-ahead chunks per thread nor whole
    groups (one block left for the scalar tail)."""
    x = torch.randn(4097, cols, generator=torch.Generator().manual_seed(9)) * 2
    eager, got = _both(fake_quantize, x, fmt)
    assert (bits(eager) == bits(got)).all()


def _mapping(address: int) -> dict[str, str] | None:
    """The /proc/self/smaps entry of this process's mapping that holds `address` ("range" its bounds), or None."""
    entry = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and ":" not in head:
            lo, hi = (int(part, 16) for part in head.split("-"))
            if entry is not None:
                return entry
            entry = {"range": (lo, hi)} if lo <= address < hi else None
        elif entry is not None:
            entry[head.rstrip(":")] = line.split(None, 1)[1]
    return entry


def _thp_mode() -> str:
    text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    return text[text.index("[") + 1:text.index("]")]


@pytest.mark.skipif(not (Path("/proc/self/smaps").exists() and Path("/sys/kernel/mm/transparent_hugepage").exists()),
                    reason="needs Linux's /proc/self/smaps and a kernel with transparent huge pages")
def test_large_new_results_are_their_own_mapping_on_huge_pages(vector_variant):
    """A new result of 32 MiB or more is an anonymous mapping of its own, exactly its size, with MADV_HUGEPAGE
    ("hg") asked for and (where THP is not off) faulted in on huge pages; it is unmapped with the tensor, so
    no flagged memory outlives it. A smaller one comes from torch's allocator (inside a larger heap or
    malloc's own mapping, behind its header). The bits are the eager path's."""
    x = torch.randn(4096, 4096, generator=torch.Generator().manual_seed(12))
    eager = _both(fake_quantize, x, "nvfp4")[0]
    y = native.round_trip(native.library(), x, get_format("nvfp4"))
    assert (bits(y) == bits(eager)).all()
    address, size = y.data_ptr(), x.numel() * 4
    mapping = _mapping(address)
    assert mapping["range"] == (address, address + size)
    assert "hg" in mapping["VmFlags"].split()
    if _thp_mode() != "never":
        assert int(mapping["AnonHugePages"].split()[0]) > 0
    del y
    gc.collect()
    after = _mapping(address)  # unmapped, or another allocation's since
    assert after is None or after["range"] != (address, address + size)
    small = native.round_trip(native.library(), x[:2047], get_format("nvfp4"))  # just under 32 MiB
    assert _mapping(small.data_ptr())["range"][0] != small.data_ptr()


@pytest.mark.parametrize("fmt", ["mxfp4", "nvfp4"])
def test_new_results_in_recycled_or_half_faulted_memory(vector_variant, fmt):
    """An allocation for the result may hold recycled pages (streamed into), fresh ones (faulted ahead of
    the stores) or both; the kernel checks which, and the bits are the same every way."""
    x = torch.randn(4096, 2048, generator=torch.Generator().manual_seed(10)) * 3  # 32 MiB
    expected = _both(fake_quantize, x, fmt)[0]
    lib, spec = native.library(), get_format(fmt)
    for present_rows in (4096, 2048, 0):
        y = torch.empty_like(x)
        y[:present_rows] = 7.0  # the first rows' pages are faulted in (all of them, half, none)
        rc = lib.srdd_round_trip(x.data_ptr(), y.data_ptr(), x.numel() // spec.block_size, native.format_code(spec),
                                 0, torch.get_num_threads(), 0)
        assert rc == 0
        assert (bits(y) == bits(expected)).all(), present_rows


def _element_grid(fmt: str) -> torch.Tensor:
    """Every non-negative value of the format's element type (subnormals included), ascending."""
    el = get_format(fmt).element
    step = 2.0 ** (el.emin - el.mbits)
    values = [m * step for m in range(2 ** el.mbits)]  # zero and the subnormals
    values += [(1 + m / 2**el.mbits) * 2.0**e for e in range(el.emin, el.emax + 1) for m in range(2**el.mbits)]
    return torch.tensor([v for v in values if v <= el.max_value], dtype=torch.float64)


@pytest.mark.parametrize("fmt", ["mxfp4", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp8_e4m3", "mxfp8_e5m2"])
def test_element_rounding_around_every_grid_boundary(variant, fmt):
    """The vector element rounding (a magic-number addition) against rint on 64 ulps each side of every
    grid point and rounding boundary (midpoints, and the one above the largest element), both signs; lane
    0 of each 32-block is 2^emax, so the scale is 1."""
    el = get_format(fmt).element
    grid = _element_grid(fmt)
    top = el.max_value + (grid[-1] - grid[-2]) / 2
    points = torch.cat([grid[1:], (grid[1:] + grid[:-1]) / 2, torch.tensor([top], dtype=torch.float64)]).float()
    ulps = torch.arange(-64, 65, dtype=torch.int32)
    near = (points.view(torch.int32)[:, None] + ulps[None, :]).flatten().view(torch.float32)
    near = near[near < 2.0 ** (el.emax + 1)]  # keep the block scale at 1
    spread = torch.rand(4000, generator=torch.Generator().manual_seed(3)) * 2.0 ** (el.emax + 2) - 2.0 ** (el.emax + 1)
    values = torch.cat([near, -near, spread])
    values = torch.cat([values, torch.zeros(-values.numel() % 31)]).view(-1, 31)
    x = torch.cat([torch.full((values.shape[0], 1), 2.0**el.emax), values], dim=1)
    eager, got = _both(fake_quantize, x, fmt)
    assert (bits(eager) == bits(got)).all()
    assert_same_stats(*_both(quant_stats, x, fmt))


@pytest.mark.slow  # compiles a fresh kernel: ~30 s of CPU
def test_first_compile_says_so_once(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SRDD_CACHE", str(tmp_path))
    first = native._build(native.chosen_variant())
    notice = capsys.readouterr().err
    assert notice.count("\n") == 1 and "compiling the C fake-quant kernel" in notice and str(tmp_path) in notice
    assert native._build(native.chosen_variant()) == first and capsys.readouterr().err == ""
