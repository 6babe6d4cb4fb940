"""A run's results are bit-identical to the reference code's: speed and memory work may not change them.

The golden files were made by main's code before the cost work (tests/rin_train/golden_runs.py
says how); each case trains a tiny policy for 6 GRPO steps with validations, noise and both
rescans, so a change anywhere in generation, log-probabilities, the loss, the update, noise,
validation or the scan shows up as a differing number.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.json_compare import differences
from tests.rin_train.golden_runs import CASES, golden_path, platform_key, run_case

AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "DNNL_MAX_CPU_ISA": "AVX2", "SRDD_NATIVE_VARIANT": "avx2", "OMP_NUM_THREADS": "1"}
"""What an AVX-512 CPU runs as an AVX2-only one would: torch's own kernels, MKL's, oneDNN's (the bf16 GEMMs) and
srdd's kernel build held to AVX2."""


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


def test_the_avx2_goldens_reproduce_with_every_kernel_held_to_avx2():
    """The AVX2 goldens were made on an AVX2-only machine. Here, in a child process with torch, MKL, oneDNN and
    srdd's kernel held to AVX2, every case (packed ones too) must reproduce them bit for bit: an AVX-512 machine
    thus checks what a run computes on the many CPUs without AVX-512, as it checks the kernel's AVX2 build.
    A golden that would skip in the child (another platform key) fails here instead."""
    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        pytest.skip("needs a CPU with AVX-512 to hold to AVX2 (an AVX2 machine runs these goldens natively)")
    if not all(golden_path(name, "AVX2").exists() for name in CASES):
        pytest.skip("no AVX2 golden files")
    packed = [name for name in CASES if "nvfp4-w4a16" in name]
    script = ("import os\n"
              "from tests.rin_train import test_golden_runs as t\n"
              "assert t.platform_key()['cpu_capability'] == 'AVX2', t.platform_key()\n"
              f"for name in {list(CASES)!r}: t._reproduces(name)\n"
              "os.environ['SRDD_PACKED_WEIGHTS'] = '1'\n"
              f"for name in {packed!r}: t._reproduces(name)\n"
              "print('reproduced')\n")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, **AVX2_ONLY, "SRDD_PACKED_WEIGHTS": "0"}
    done = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("reproduced"), done.stderr[-3000:]
