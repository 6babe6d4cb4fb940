"""A run's results are bit-identical to the reference code's: speed and memory work may not change them.

The golden files were made by main's code before the cost work (tests/rin_train/golden_runs.py
says how); each case trains a tiny policy for 6 GRPO steps with validations, noise and both
rescans, so a change anywhere in generation, log-probabilities, the loss, the update, noise,
validation or the scan shows up as a differing number.
"""

import json

import pytest

from tests.json_compare import differences
from tests.rin_train.golden_runs import CASES, golden_path, platform_key, run_case


@pytest.mark.parametrize("name", list(CASES))
def test_a_fixed_run_reproduces_its_golden_results_exactly(name):
    _reproduces(name)


@pytest.mark.parametrize("name", [name for name in CASES if "nvfp4-w4a16" in name])
def test_packed_frozen_weights_reproduce_the_golden_results_exactly(name, monkeypatch):
    """NVFP4 W4A16 with fp32 GEMMs: the policy path whose frozen weights SRDD_PACKED_WEIGHTS=1 packs."""
    monkeypatch.setenv("SRDD_PACKED_WEIGHTS", "1")
    _reproduces(name)


def _reproduces(name: str) -> None:
    path = golden_path(name)
    if not path.exists():
        pytest.skip(f"no golden file for this CPU ({platform_key()['cpu_capability']}); make one from the reference "
                    "code as tests/rin_train/golden_runs.py says")
    golden = json.loads(path.read_text())
    if golden["platform"] != platform_key():
        pytest.skip(f"golden made on {golden['platform']}, this is {platform_key()}: float kernels differ")
    got = run_case(name)
    assert got["status"] == "complete"
    for want, have in zip(golden["metrics"], got["metrics"], strict=True):
        assert have == want, f"step {want['step']} differs"
    assert differences(got["scan_after_layers"], golden["scan_after_layers"], "scan_after.layers") == []
