"""Every committed study report is exactly what `srdd correlate` makes of the committed runs today.

A report in the repository can then never drift from its data: change a run, the statistics or the
report's code, and this test fails until the report is regenerated (the command is in the study's
README). Figures are not compared (matplotlib versions draw differently); versions of srdd and
scipy are not compared either, every number is.
"""

import json
from pathlib import Path

import pytest

from reports.build import build_report
from reports.runs import load_runs
from reports.verdicts import VerdictSettings
from srdd.jsonio import dumps_json

ROOT = Path(__file__).resolve().parents[2] / "studies"
REPORTS = sorted(ROOT.glob("**/report/report.json"))  # a study and its side measurements
UNVERSIONED = ("tool_version",)


def _strip(report: dict) -> dict:
    out = {k: v for k, v in report.items() if k not in UNVERSIONED}
    out["statistics"] = {k: v for k, v in report["statistics"].items() if k != "software"}
    return out


@pytest.mark.skipif(not REPORTS, reason="no study report is committed yet")
@pytest.mark.parametrize("path", REPORTS, ids=[str(p.parent.parent.relative_to(ROOT)) for p in REPORTS])
def test_committed_report_equals_a_fresh_one(path):
    committed = json.loads(path.read_text())
    o = committed["options"]
    runs = load_runs(path.parent.parent / "runs", o["metric"], o["accuracy"])
    fresh = build_report(runs, metric=o["metric"], baseline=o["baseline"], target=o["target"],
                         settings=VerdictSettings.from_options(o), sources=o["sources"])
    fresh = json.loads(dumps_json(fresh))
    assert _strip(fresh) == _strip(committed)
