import json

import pytest

# A 28-layer MXFP4 decoder-output scan shaped like the published Qwen2.5-1.5B one: relative
# error 28-43 % (mean 36.4 %), worst band layers 10-19; layers 0, 15 and 27 carry the values
# behind the published multipliers 0.83, 1.17 and 0.88.
REL = [0.30212, 0.335, 0.345, 0.35, 0.352, 0.355, 0.357, 0.36, 0.361, 0.363,
       0.40, 0.405, 0.41, 0.415, 0.42, 0.42588, 0.418, 0.41, 0.405, 0.40,
       0.33, 0.328, 0.325, 0.322, 0.32, 0.318, 0.316, 0.32032]
REL[1] += 28 * 0.364 - sum(REL)  # make the mean exactly 36.4 %
DEAD = [0.16 + (r - 0.28) * 0.8 for r in REL]
SQNR = [16.9 + (0.364 - r) * 20 for r in REL]


def published_doc() -> dict:
    return {"config": {"model_path": "Qwen/Qwen2.5-1.5B-Instruct", "quant_type": "mxfp4", "num_layers": 28,
                       "thresholds": {"sqnr_db": 20}},
            "report": {"summary": {}, "statistics": {},
                       "per_layer": [{"layer_id": i, "sqnr_db": SQNR[i], "deadzone_ratio": DEAD[i],
                                      "saturation_ratio": 0.01, "relative_error": REL[i], "mean_abs_error": 0.1,
                                      "max_abs_error": 1.0, "output_norm": 10.0, "is_problematic": REL[i] > 0.4,
                                      "issues": []} for i in range(28)]},
            "recommendations": [], "timestamp": "2025-10-01T00:00:00"}


def srdd_doc() -> dict:
    return {"schema": "srdd.scan/v1", "model": {"name": "qwen-1.5b", "num_layers": 28}, "format": {"name": "mxfp4"},
            "layers": [{"layer": i, "block_output": {"relative_error": REL[i], "deadzone_ratio": DEAD[i],
                                                     "sqnr_db": SQNR[i]}} for i in range(28)]}


@pytest.fixture
def published_scan(tmp_path):
    path = tmp_path / "published.json"
    path.write_text(json.dumps(published_doc()))
    return path


@pytest.fixture
def srdd_scan(tmp_path):
    path = tmp_path / "scan.json"
    path.write_text(json.dumps(srdd_doc()))
    return path
