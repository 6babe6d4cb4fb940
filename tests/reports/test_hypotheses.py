"""Which hypotheses a report tests (the suite's own definitions), and a declared confirmatory family."""

import pytest

from calibrate.suite import ARM_VS_CONTROL, HYPOTHESES, SUITE_HYPOTHESES, Hypothesis
from reports.hypotheses import available, defined, from_options, parse_keys, pick_family, reported
from srdd.errors import SrddError

OWN = Hypothesis("H3", "my own H3", "E13j-variable", "E13i-high", ("noise.layer_multipliers",))


def test_a_suite_keeps_its_own_definitions_and_an_old_one_reads_as_the_built_in_hypotheses():
    assert defined(None, "x") == defined({"thresholds": {}}, "x") == HYPOTHESES
    assert defined({"hypotheses": [OWN.to_dict()]}, "x") == (OWN,)
    assert defined({"hypotheses": [h.to_dict() for h in SUITE_HYPOTHESES]}, "x") == SUITE_HYPOTHESES


@pytest.mark.parametrize("entries, says", [
    ("H1", "not a list"),
    ([{"key": "H1"}], "needs the strings"),
    ([{**OWN.to_dict(), "differs_in": []}], "needs differs_in"),
    ([OWN.to_dict(), OWN.to_dict()], "H3 is defined twice"),
])
def test_a_broken_suite_definition_is_refused_where_it_is(entries, says):
    with pytest.raises(SrddError, match=says) as info:
        defined({"hypotheses": entries}, "s/suite.json")
    assert str(info.value).startswith("s/suite.json")


def test_a_suite_may_declare_the_codes_hypotheses_it_does_not_define_but_its_own_win():
    known = available((OWN,))
    assert known["H3"] is OWN and [k for k in known][:1] == ["H3"]
    assert all(known[h.key] == h for h in ARM_VS_CONTROL)


def test_a_family_is_in_the_suites_order_and_unknown_keys_are_refused_by_name():
    assert [h.key for h in pick_family(["C3", "H2", "C1"], HYPOTHESES, "--hypotheses")] == ["H2", "C1", "C3"]
    with pytest.raises(SrddError, match=r"^--hypotheses: unknown C9, X \(the hypotheses here: H1, .*C3\)$"):
        pick_family(["C1", "C9", "X"], HYPOTHESES, "--hypotheses")
    for bad in ("C1", [], ["C1", "C1"], [1]):
        with pytest.raises(SrddError, match="a family is a list of distinct hypothesis keys"):
            pick_family(bad, HYPOTHESES, "study.json")


def test_the_report_tests_the_suites_hypotheses_and_a_declared_one_it_lacks():
    declared = pick_family(["C1", "H3"], (OWN,), "x")
    assert reported((OWN,), declared) == (OWN, ARM_VS_CONTROL[0])


def test_keys_from_the_command_line():
    assert parse_keys(" C1,C2 , C3") == ("C1", "C2", "C3")
    for bad in ("C1,,C2", "C1,C1", ""):
        with pytest.raises(SrddError, match="each once"):
            parse_keys(bad)


def test_a_reports_options_give_back_what_it_tested():
    assert from_options({}) == HYPOTHESES
    assert from_options({"hypotheses": [OWN.to_dict()]}) == (OWN,)
