"""An independent reference for DESIGN.md §2, written from the formulas, not from srdd's code.

Elements are rounded by searching the explicit grid (nearest value, ties to the
value with an even mantissa); scale exponents come from numpy's frexp in
float64 and exact Fractions; all NVFP4 arithmetic is replayed in float32 in the
recipe's order. Slow, obvious, and small inputs only.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

f32 = np.float32


def element_grid(mbits: int, emin: int, max_value: float) -> list[tuple[float, int]]:
    """Non-negative grid values with their mantissa parity (for tie-breaking)."""
    values: dict[float, int] = {}
    for m in range(2**mbits):  # subnormals
        values[m * 2.0 ** (emin - mbits)] = m
    e = emin
    while True:
        for m in range(2**mbits):
            v = (1 + m / 2**mbits) * 2.0**e
            if v > max_value:
                return sorted(values.items())
            values[v] = m
        e += 1


GRIDS = {
    "e2m1": element_grid(1, 0, 6.0),
    "e2m3": element_grid(3, 0, 7.5),
    "e3m2": element_grid(2, -2, 28.0),
    "e4m3": element_grid(3, -6, 448.0),
    "e5m2": element_grid(2, -14, 57344.0),
}
# DESIGN.md §2, by hand: the E2M1 ties and where ties-to-even sends them.
E2M1_TIES = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0]
E2M1_TIES_TO = [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0]
EMAX = {"e2m1": 2, "e2m3": 2, "e3m2": 4, "e4m3": 8, "e5m2": 15}
MAXV = {k: g[-1][0] for k, g in GRIDS.items()}


def round_element(v: float, elem: str) -> float:
    """Nearest grid value, ties to even mantissa, saturating, sign kept (including -0)."""
    if np.isnan(v):
        return float("nan")
    grid = GRIDS[elem]
    a = abs(v)
    if a >= grid[-1][0]:
        q = grid[-1][0]
    else:
        hi = next(i for i, (g, _) in enumerate(grid) if g >= a)
        lo = max(hi - 1, 0)
        (gl, ml), (gh, mh) = grid[lo], grid[hi]
        dl, dh = Fraction(a) - Fraction(gl), Fraction(gh) - Fraction(a)
        if dl < dh:
            q = gl
        elif dh < dl:
            q = gh
        else:
            q = gl if ml % 2 == 0 else gh
    return float(np.copysign(q, v))


def floor_log2(a: float) -> int:
    """floor(log2 a) of a float32 value as its exponent field says (subnormals read as -127)."""
    bits = np.array([a], dtype=f32).view(np.int32)[0]
    return int((bits >> 23) & 0xFF) - 127


def mx_scale_exponent(amax: float, elem: str, mode: str) -> int:
    if mode == "floor":
        e = floor_log2(amax) - EMAX[elem]
    else:
        e = -127
        if amax > 0:
            target = Fraction(amax) / Fraction(MAXV[elem])
            e = int(np.floor(np.log2(float(target)))) - 2
            while Fraction(2) ** e < target:
                e += 1
    return int(min(max(e, -127), 127))


def _blocks(x: np.ndarray, block: int):
    rows = x.reshape(-1, x.shape[-1]).astype(np.float64)
    k = rows.shape[1]
    for r in range(rows.shape[0]):
        for start in range(0, k, block):
            yield r, start, rows[r, start:start + block]


def mx(x: np.ndarray, elem: str = "e2m1", mode: str = "floor") -> np.ndarray:
    out = np.zeros(x.reshape(-1, x.shape[-1]).shape, dtype=np.float64)
    for r, s, blk in _blocks(x, 32):
        if not np.all(np.isfinite(blk)):
            out[r, s:s + len(blk)] = np.nan
            continue
        e = mx_scale_exponent(float(np.max(np.abs(blk))), elem, mode)
        scale = Fraction(2) ** e
        for i, v in enumerate(blk):
            q = round_element(float(Fraction(v) / scale) if v != 0 else v, elem)
            out[r, s + i] = float(Fraction(q) * scale) if q != 0 else q
    with np.errstate(over="ignore"):  # rceil can round a block max near FLT_MAX up to 2^128 = inf
        return out.reshape(x.shape).astype(f32)


def _e4m3(v: np.float32) -> np.float32:
    return f32(round_element(float(v), "e4m3"))


def nvfp4(x: np.ndarray, per_tensor_scale: bool = True) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):  # tiny tensors: 1/pts overflows, as on hardware
        return _nvfp4(x, per_tensor_scale)


def _nvfp4(x: np.ndarray, per_tensor_scale: bool) -> np.ndarray:
    xf = x.astype(f32)
    out = np.zeros(xf.reshape(-1, xf.shape[-1]).shape, dtype=f32)
    if per_tensor_scale:
        pts = f32(np.max(np.abs(xf))) / f32(2688.0)
    else:
        pts = f32(1.0)
    for r, s, blk in _blocks(xf, 16):
        blk = blk.astype(f32)
        if not np.all(np.isfinite(blk)) or not np.isfinite(pts):
            out[r, s:s + len(blk)] = np.nan
            continue
        if pts == 0:
            out[r, s:s + len(blk)] = blk * f32(0.0)
            continue
        amax_b = f32(np.max(np.abs(blk)))
        s8 = _e4m3(np.clip((amax_b / f32(6.0)) / pts, f32(2.0**-6), f32(448.0)).astype(f32))
        rr = (f32(1.0) / pts) / s8
        total = pts * s8
        for i, v in enumerate(blk):
            q = f32(round_element(float(np.clip(v * rr, f32(-6), f32(6))), "e2m1"))
            out[r, s + i] = q * total
    return out.reshape(x.shape)


def int4(x: np.ndarray, group: int = 32) -> np.ndarray:
    xf = x.astype(f32)
    out = np.zeros(xf.reshape(-1, xf.shape[-1]).shape, dtype=f32)
    for r, s, blk in _blocks(xf, group):
        blk = blk.astype(f32)
        if not np.all(np.isfinite(blk)):
            out[r, s:s + len(blk)] = np.nan
            continue
        scale = f32(np.max(np.abs(blk))) / f32(7.5)
        for i, v in enumerate(blk):
            if scale == 0:
                out[r, s + i] = v * f32(0.0)
            else:
                out[r, s + i] = f32(np.clip(np.round(v / scale), -8, 7)) * scale
    return out.reshape(x.shape)


def fp8_per_tensor(x: np.ndarray) -> np.ndarray:
    xf = x.astype(f32)
    amax = f32(np.max(np.abs(xf)))
    if not np.isfinite(amax):
        return np.full_like(xf, np.nan)
    s = amax / f32(448.0)
    if s == 0:
        return xf * f32(0.0)
    return np.array([f32(round_element(float(v / s), "e4m3")) * s for v in xf.ravel()],
                    dtype=f32).reshape(xf.shape)


def saturation(x: np.ndarray, fmt: str, **options) -> np.ndarray:
    """Elements whose scaled magnitude exceeds the largest element (INT4: whose rounded
    level is clipped to [-8, 7]), each scale derived from the recipe, not from srdd."""
    xf = x.astype(f32)
    out = np.zeros(xf.reshape(-1, xf.shape[-1]).shape, dtype=bool)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if fmt in MX_ELEMENT:
            elem = MX_ELEMENT[fmt]
            for r, s, blk in _blocks(xf, 32):
                if not np.all(np.isfinite(blk)):
                    continue
                e = mx_scale_exponent(float(np.max(np.abs(blk))), elem, options.get("scale_mode", "floor"))
                for i, v in enumerate(blk):
                    out[r, s + i] = abs(Fraction(v)) / Fraction(2) ** e > Fraction(MAXV[elem])
        elif fmt == "nvfp4":
            pts = f32(np.max(np.abs(xf))) / f32(2688.0) if options.get("per_tensor_scale", True) else f32(1.0)
            for r, s, blk in _blocks(xf, 16):
                blk = blk.astype(f32)
                if pts == 0 or not np.isfinite(pts) or not np.all(np.isfinite(blk)):
                    continue
                amax_b = f32(np.max(np.abs(blk)))
                s8 = _e4m3(np.clip((amax_b / f32(6.0)) / pts, f32(2.0**-6), f32(448.0)).astype(f32))
                rr = (f32(1.0) / pts) / s8
                out[r, s:s + len(blk)] = np.abs(blk * rr) > f32(6.0)
        elif fmt == "int4":
            for r, s, blk in _blocks(xf, options.get("group_size", 32)):
                blk = blk.astype(f32)
                scale = f32(np.max(np.abs(blk))) / f32(7.5)
                if scale == 0 or not np.isfinite(scale):
                    continue
                lv = np.round(blk / scale)
                out[r, s:s + len(blk)] = (lv > 7) | (lv < -8)
        elif fmt == "fp8_e4m3":
            s = f32(np.max(np.abs(xf))) / f32(448.0)
            if s != 0 and np.isfinite(s):
                out = np.abs(xf.reshape(out.shape) / s) > f32(448.0)
        elif fmt not in ("bf16", "none"):
            raise KeyError(fmt)
    return out.reshape(x.shape)


MX_ELEMENT = {"mxfp4": "e2m1", "mxfp6_e2m3": "e2m3", "mxfp6_e3m2": "e3m2",
              "mxfp8_e4m3": "e4m3", "mxfp8_e5m2": "e5m2"}


def fake_quantize(x: np.ndarray, fmt: str, **options) -> np.ndarray:
    """Dispatch by format name and options, as srdd.formats.fake_quantize (fp32 in, fp32 out)."""
    if fmt in MX_ELEMENT:
        return mx(x, MX_ELEMENT[fmt], options.get("scale_mode", "floor"))
    if fmt == "nvfp4":
        return nvfp4(x, options.get("per_tensor_scale", True))
    if fmt == "int4":
        return int4(x, options.get("group_size", 32))
    if fmt == "fp8_e4m3":
        return fp8_per_tensor(x)
    if fmt == "bf16":
        return round_to_bf16(x)
    if fmt == "none":
        return x.astype(f32)
    raise KeyError(fmt)


def round_to_bf16(x: np.ndarray) -> np.ndarray:
    """fp32 -> bfloat16 -> fp32 with round-to-nearest-even on the bit pattern (NaN stays NaN)."""
    b = x.astype(f32).view(np.uint32).astype(np.uint64)
    r = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16
    y = r.astype(np.uint32).view(f32)
    return np.where(np.isnan(x), f32(np.nan), y).astype(f32)


def metrics(x: np.ndarray, q: np.ndarray, saturated: np.ndarray) -> dict:
    """DESIGN.md §3 in float64 over finite elements."""
    x = x.astype(np.float64).ravel()
    q = q.astype(np.float64).ravel()
    ok = np.isfinite(x) & np.isfinite(q)
    x, q, sat = x[ok], q[ok], saturated.ravel()[ok]
    nz = x != 0
    err = q - x
    n = len(x)
    e2 = float(np.sum(err**2))
    return {
        "relative_error": float(np.mean(np.abs(err[nz]) / np.abs(x[nz]))) if nz.any() else 0.0,
        "deadzone_ratio": float(np.mean(q[nz] == 0)) if nz.any() else 0.0,
        # inf stands for "no error at all": srdd reports its finite cap and flags it
        "sqnr_db": float(10 * np.log10(np.sum(x**2) / e2)) if e2 > 0 else float("inf"),
        "saturation_ratio": float(np.mean(sat)) if n else 0.0,
        "mse": e2 / n if n else 0.0,
    }
