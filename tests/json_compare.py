"""JSON results compared the way a result that was summed in another order deserves.

Counts, verdicts, names and every other string, integer, boolean and null are compared exactly.
Floats are compared to a relative tolerance of FLOAT_RTOL (absolute FLOAT_ATOL near zero): the last
digits of a float64 sum depend on the order of its additions, which the ISA (the native kernel's
AVX2, AVX-512 or portable build), the BLAS build and the thread count choose (a correlation read
0.3383411907843101 on one machine and 0.33834119078431 on another), while a change in what is
computed moves far more digits.
"""

import math

FLOAT_RTOL = 1e-9
FLOAT_ATOL = 1e-12


def differences(fresh, committed, where: str = "report") -> list[str]:
    """Where two JSON values differ: exactly, except floats (see the module docstring)."""
    if isinstance(fresh, float) and isinstance(committed, float):
        if math.isclose(fresh, committed, rel_tol=FLOAT_RTOL, abs_tol=FLOAT_ATOL):
            return []
        return [f"{where}: {fresh!r} != {committed!r}"]
    if type(fresh) is not type(committed):
        return [f"{where}: {fresh!r} ({type(fresh).__name__}) != {committed!r} ({type(committed).__name__})"]
    if isinstance(fresh, dict):
        if fresh.keys() != committed.keys():
            return [f"{where}: keys {sorted(fresh.keys() ^ committed.keys())} in only one of the two"]
        return [d for k in fresh for d in differences(fresh[k], committed[k], f"{where}.{k}")]
    if isinstance(fresh, list):
        if len(fresh) != len(committed):
            return [f"{where}: {len(fresh)} items != {len(committed)}"]
        return [d for i, (a, b) in enumerate(zip(fresh, committed)) for d in differences(a, b, f"{where}[{i}]")]
    return [] if fresh == committed else [f"{where}: {fresh!r} != {committed!r}"]
