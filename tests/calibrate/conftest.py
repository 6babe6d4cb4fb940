"""A 28-layer scan holding the published Qwen2.5-1.5B-Instruct MXFP4 decoder-output numbers.

Published (MXFP4 W4A4 RIN configuration guide / E13 plan): relative error of layers
0, 2, 3, 10-19, 26, 27; deadzone of layers 10-19; SQNR of 0, 2, 3, 10-19, 26, 27;
summary: relative error 28.6-42.7 % (mean 36.4 %), deadzone 15.7-28.7 % (mean 22.9 %);
and the multiplier table round(error_i / 36.4, 2) below. The other layers' errors are
constructed as m_i * 36.4 % (shifted by -0.04 points so the mean is exactly 36.4 %),
which is what the published table implies. Layer 3 (33.67 / 36.4 = 0.925 exactly)
is a rounding tie: the published 0.93 needs halves rounded up on the exact decimal.
The published SQNR summary (mean 17.0, max 18.1) cannot hold together with its own
per-layer values, so the unpublished SQNRs are merely plausible.
"""

import json

import pytest

PUBLISHED_MULTIPLIERS = {
    0: 0.83, 1: 0.89, 2: 0.93, 3: 0.93, 4: 0.93, 5: 0.98, 6: 0.99, 7: 1.01, 8: 1.00, 9: 1.02,
    10: 1.06, 11: 1.10, 12: 1.12, 13: 1.11, 14: 1.15, 15: 1.17, 16: 1.15, 17: 1.12, 18: 1.09, 19: 1.07,
    20: 1.02, 21: 0.99, 22: 0.96, 23: 0.94, 24: 0.91, 25: 0.90, 26: 0.79, 27: 0.88,
}

# relative error in percent, as exact decimal text
_REL_PCT = ["30.08", "32.35", "33.74", "33.67", "33.812", "35.632", "35.996", "36.724", "36.36", "37.088",
            "38.57", "39.94", "40.60", "40.36", "41.94", "42.65", "41.85", "40.77", "39.50", "38.96",
            "37.088", "35.996", "34.904", "34.176", "33.084", "32.72", "28.61", "32.03"]
_DEAD_PCT = ["17.20", "18.90", "19.80", "19.70", "20.10", "21.60", "22.00", "22.90", "23.10", "24.70",
             "24.71", "26.04", "26.53", "26.44", "27.98", "28.71", "27.98", "27.07", "25.78", "25.36",
             "24.20", "22.90", "22.10", "21.40", "20.60", "20.20", "15.70", "18.50"]
SQNR = [16.9, 17.0, 16.8, 16.5, 17.4, 17.6, 17.8, 17.9, 18.0, 18.1,
        17.1, 17.2, 17.2, 17.2, 17.2, 17.2, 17.2, 17.2, 17.2, 17.2,
        18.1, 17.9, 17.7, 17.5, 17.3, 17.1, 16.0, 16.1]


def _fraction(pct: str) -> float:
    """'30.08' -> 0.3008 (the decimal shifted, not a float division)."""
    from decimal import Decimal

    return float(Decimal(pct).scaleb(-2))


REL = [_fraction(p) for p in _REL_PCT]
DEAD = [_fraction(p) for p in _DEAD_PCT]
SAT = [0.0002 if i not in (15, 26) else 0.0012 for i in range(28)]
HIGH_ERROR_BAND = list(range(10, 20))


def _stats(values):
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
    return {"min": min(values), "max": max(values), "mean": mean, "std": std}


def published_doc() -> dict:
    """The layout written by the published verl-fork scanner (scripts/srdd_quant_scanner.py)."""
    per_layer = [{"layer_id": i, "sqnr_db": SQNR[i], "deadzone_ratio": DEAD[i], "saturation_ratio": SAT[i],
                  "relative_error": REL[i], "mean_abs_error": 0.05 + 0.001 * i, "max_abs_error": 2.5,
                  "output_norm": 120.0 + i, "is_problematic": True,
                  "issues": [f"low_sqnr={SQNR[i]:.1f}dB", f"high_deadzone={DEAD[i] * 100:.1f}%",
                             f"high_rel_error={REL[i] * 100:.1f}%"]} for i in range(28)]
    return {
        "config": {"model_path": "/data/hub/Qwen2.5-1.5B-Instruct", "quant_type": "mxfp4", "num_layers": 28,
                   "thresholds": {"sqnr_db": 20.0, "deadzone": 0.05, "saturation": 0.01, "relative_error": 0.1}},
        "report": {"summary": {"total_layers": 28, "problematic_layers": 28, "healthy_layers": 0,
                               "problematic_layer_ids": list(range(28))},
                   "statistics": {"sqnr_db": _stats(SQNR), "deadzone_ratio": _stats(DEAD),
                                  "saturation_ratio": _stats(SAT), "relative_error": _stats(REL)},
                   "per_layer": per_layer},
        "recommendations": {"strategy": "reconsider_quantization", "details": ["28 layers (100.0%) are problematic."],
                            "aqn_layers": [], "mixed_precision_layers": list(range(28))},
        "timestamp": "2026-01-15T10:12:00.000000",
    }


def srdd_doc() -> dict:
    """The same numbers as a srdd.scan/v1 document (DESIGN.md §4)."""
    def metrics(i):
        return {"relative_error": REL[i], "deadzone_ratio": DEAD[i], "sqnr_db": SQNR[i],
                "saturation_ratio": SAT[i], "mse": 0.01, "numel": 1536 * 1024}

    layers = [{"layer": i, "block_output": metrics(i), "primary": metrics(i)} for i in range(28)]
    return {"schema": "srdd.scan/v1", "tool_version": "0.1.0", "created": "2026-11-24T00:00:00+00:00",
            "model": {"name": "Qwen2.5-1.5B-Instruct", "path": "/data/hub/Qwen2.5-1.5B-Instruct", "num_layers": 28,
                      "architecture": "Qwen2ForCausalLM", "dtype": "bfloat16"},
            "format": {"name": "mxfp4", "scale_mode": "floor", "block_size": 32},
            "mode": "isolated", "calibration": {"source": "builtin", "samples": 8, "tokens": 1024, "seed": 0},
            "layers": layers,
            "summary": {"relative_error": _stats(REL), "deadzone_ratio": _stats(DEAD), "sqnr_db": _stats(SQNR)},
            "zones": [], "worst_layers": []}


@pytest.fixture
def published_scan(tmp_path):
    path = tmp_path / "published_scan.json"
    path.write_text(json.dumps(published_doc(), indent=2))
    return path


@pytest.fixture
def srdd_scan(tmp_path):
    path = tmp_path / "scan.json"
    path.write_text(json.dumps(srdd_doc(), indent=2))
    return path
