"""The README's workflow block runs as written, top to bottom, in an empty directory, offline.

A newcomer copies that block first; a line that fails there (an output the set-up line already wrote,
two models in one report, a hub id offline) is the first thing they meet. The block is read from the
README itself, so the test and the README cannot drift apart. Minutes of CPU: slow.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def workflow_block(text: str) -> str:
    """The first ```bash block under the README's "## The workflow" heading."""
    section = text.split("\n## The workflow\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, "the workflow section has no bash block"
    return match.group(1)


def test_the_block_is_the_one_the_readme_shows():
    block = workflow_block(README.read_text(encoding="utf-8"))
    commands = [line.split(" #")[0].rstrip() for line in block.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert commands[0] == "export OMP_NUM_THREADS=1" and commands[-1].startswith("srdd study report")
    assert not any("Qwen" in line or "--launch" in line for line in commands)  # nothing that needs a hub or GPU


@pytest.mark.slow
@pytest.mark.timeout(3600)  # minutes of CPU; on a busy machine, much more wall time
def test_the_workflow_block_runs_top_to_bottom(tmp_path):
    script = "set -euo pipefail\ntrap 'echo \"FAILED: $BASH_COMMAND\" >&2' ERR\n"
    script += workflow_block(README.read_text(encoding="utf-8"))
    # HF_HUB_OFFLINE=1 (tests/conftest.py) is inherited: a line that needs a hub fails here
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=3600,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for path in ("smollm2.json", "profile.png", "layers.csv", "multipliers.yaml", "study/suite.json",
                 "runs/smoke/run.json", "runs/learn/run.json", "tiny-echo.json", "tiny-study/plan.md"):
        assert (tmp_path / path).exists(), path
    assert re.search(r"\n\d+ runs: 6 complete, \d+ pending;", r.stdout)  # study status: the two arms' runs ran
    report = json.loads((tmp_path / "tiny-report" / "report.json").read_text())
    assert len(report["runs"]) == 6 and not report["invalid_runs"]
    (h3,) = [v for v in report["verdicts"] if v["hypothesis"] == "H3"]
    assert (h3["n_treatment"], h3["n_control"]) == (3, 3) and h3["verdict"] != "not tested"
