"""Every committed study report is what `srdd correlate` makes of the committed runs today.

A report in the repository can then never drift from its data: change a run, the statistics or the
report's code, and this test fails until the report is regenerated (the command is in the study's
README). Figures are not compared (matplotlib versions draw differently); versions of srdd and
scipy are not compared either, every number is, as tests/json_compare.py says (floats to a relative
tolerance: their last digits depend on the ISA and BLAS build that summed them).
"""

import json
from pathlib import Path

import pytest

from reports.build import build_report
from reports.hypotheses import from_options
from reports.runs import load_runs
from reports.variance import load_plan
from reports.verdicts import VerdictSettings
from srdd.jsonio import dumps_json
from tests.json_compare import differences

ROOT = Path(__file__).resolve().parents[2] / "studies"
REPORTS = sorted(ROOT.glob("**/report/report.json"))  # a study and its side measurements
UNVERSIONED = ("tool_version",)


def _strip(report: dict) -> dict:
    out = {k: v for k, v in report.items() if k not in UNVERSIONED}
    out["statistics"] = {k: v for k, v in report["statistics"].items() if k != "software"}
    return out


def test_floats_differing_in_the_last_digits_are_equal():
    assert differences({"r": [0.3383411907843101, 0.0]}, {"r": [0.33834119078431, 1e-17]}) == []


@pytest.mark.parametrize("fresh, committed, where", [
    ({"r": 0.3383}, {"r": 0.3384}, "report.r"),                          # a real change of a statistic
    ({"n": 3}, {"n": 4}, "report.n"),                                   # a count
    ({"v": ["supported"]}, {"v": ["inconclusive"]}, "report.v[0]"),     # a verdict
    ({"n": 3}, {"n": 3.0}, "report.n"),                                 # an int never equals a float
    ({"a": [1, 2]}, {"a": [1]}, "report.a"),
    ({"a": 1}, {"b": 1}, "report"),
])
def test_anything_else_differs(fresh, committed, where):
    (found,) = differences(fresh, committed)
    assert found.startswith(where + ":")


@pytest.mark.skipif(not REPORTS, reason="no study report is committed yet")
@pytest.mark.parametrize("path", REPORTS, ids=[str(p.parent.parent.relative_to(ROOT)) for p in REPORTS])
def test_committed_report_equals_a_fresh_one(path):
    committed = json.loads(path.read_text())
    o = committed["options"]
    runs = load_runs(path.parent.parent / "runs", o["metric"], o["accuracy"])
    # a study sized by `srdd study plan` reports against its plan (--plan, a path from the repository's root)
    plan = None if "plan" not in o else (o["plan"], load_plan(ROOT.parent / o["plan"]))
    fresh = build_report(runs, metric=o["metric"], baseline=o["baseline"], target=o["target"],
                         settings=VerdictSettings.from_options(o), sources=o["sources"], hypotheses=from_options(o),
                         plan=plan)
    fresh = json.loads(dumps_json(fresh))
    assert differences(_strip(fresh), _strip(committed)) == []
