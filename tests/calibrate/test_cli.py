import json
import subprocess
import sys

import pytest
import yaml

from .conftest import HIGH_ERROR_BAND, PUBLISHED_MULTIPLIERS, srdd_doc


def srdd(*args):
    return subprocess.run([sys.executable, "-m", "srdd", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("scan_fixture,layout", [("published_scan", "verl-fork"), ("srdd_scan", "srdd.scan/v1")])
def test_both_layouts_give_the_published_multipliers(scan_fixture, layout, request, tmp_path):
    scan = request.getfixturevalue(scan_fixture)
    out = tmp_path / "m.yaml"
    r = srdd("calibrate", scan, "-o", out)
    assert r.returncode == 0, r.stderr
    assert f"{layout} layout, 28 layers" in r.stdout
    doc = yaml.safe_load(out.read_text())
    assert doc["schema"] == "srdd.noise/v1" and doc["metric"] == "relative_error" and doc["mode"] == "proportional"
    assert doc["layer_multipliers"] == PUBLISHED_MULTIPLIERS
    assert doc["source"]["layout"] == layout and (out.parent / doc["source"]["path"]).resolve() == scan.resolve()
    import hashlib

    assert doc["source"]["sha256"] == hashlib.sha256(scan.read_bytes()).hexdigest()
    zones = {z["name"]: z for z in doc["zones"]}
    assert list(zones) == ["first", "early_mid", "middle", "late_mid", "last", "high_error"]
    assert zones["high_error"]["kind"] == "data" and zones["high_error"]["layers"] == HIGH_ERROR_BAND
    assert zones["first"]["relative_error"] == pytest.approx(0.3246)  # published: 32.5 %
    assert zones["last"]["deadzone_ratio"] == pytest.approx(0.171)  # published: 17.1 %
    assert {"relative_error", "deadzone_ratio", "sqnr_db", "multiplier_mean"} <= set(zones["middle"])
    assert doc["target_modules"] == ["linear"] and doc["exclude_patterns"] == [] and "sigma" not in doc
    # the screen: per-layer table with zone and metric, and the zone table
    assert "\n   15          42.65%          28.71%  17.20 dB        1.17  middle * high_error\n" in r.stdout
    assert "\nhigh_error  data    10-19          40.51%          26.66%  17.19 dB        1.11\n" in r.stdout


def test_multipliers_file_loads_in_rin_train(srdd_scan, tmp_path):
    noise = pytest.importorskip("rin_train.noise")
    out = tmp_path / "m.yaml"
    assert srdd("calibrate", srdd_scan, "-o", out, "--mode", "ceiling").returncode == 0
    assert noise.load_multipliers(out) == {i: float(v) for i, v in
                                           yaml.safe_load(out.read_text())["layer_multipliers"].items()}


def test_explain_prints_the_formula_with_the_numbers(srdd_scan, tmp_path):
    r = srdd("calibrate", srdd_scan, "-o", tmp_path / "m.yaml", "--explain")
    assert r.returncode == 0, r.stderr
    assert "layer   3: relative_error 33.67%; round(0.3367 / 0.364, 2) = round(0.925, 2) = 0.93" in r.stdout
    assert "layer  15: relative_error 42.65%; round(0.4265 / 0.364, 2) = round(1.1717033, 2) = 1.17" in r.stdout
    r = srdd("calibrate", srdd_scan, "-o", tmp_path / "c.yaml", "--explain", "--mode", "ceiling", "--clip", "0.7,1")
    assert "layer  15: relative_error 42.65%; p = round(0.4265 / 0.364, 2) = round(1.1717033, 2) = 1.17; " \
           "round((2 - 1.17) / 1.21, 2) = round(0.68595041, 2) = 0.69  [1.21 = max_j(2 - p_j)]; " \
           "clipped to [0.7, 1] -> 0.7" in r.stdout
    r = srdd("calibrate", srdd_scan, "-o", tmp_path / "s.yaml", "--explain", "--metric", "sqnr_db")
    assert "v_i = 10^(-sqnr_db_i/20)" in r.stdout and "v_i" in r.stdout.splitlines()[3]


def test_modes_and_metrics_from_the_command_line(srdd_scan, tmp_path):
    for mode in ("inverse", "tiers", "targeted"):
        out = tmp_path / f"{mode}.yaml"
        r = srdd("calibrate", srdd_scan, "-o", out, "--mode", mode, "--metric", "deadzone_ratio")
        assert r.returncode == 0, r.stderr
        doc = yaml.safe_load(out.read_text())
        assert doc["mode"] == mode and doc["metric"] == "deadzone_ratio" and len(doc["layer_multipliers"]) == 28
    out = tmp_path / "targeted_rel.yaml"
    assert srdd("calibrate", srdd_scan, "-o", out, "--mode", "targeted").returncode == 0
    targeted = yaml.safe_load(out.read_text())["layer_multipliers"]
    assert [i for i, m in targeted.items() if m == 1.0] == HIGH_ERROR_BAND
    tiers = yaml.safe_load((tmp_path / "tiers.yaml").read_text())
    assert tiers["tiers"] == {"cuts_z": [0.5, -0.5], "values": [1.5, 1.2, 1.0]}


def test_bad_input_exits_2_and_writes_nothing(tmp_path):
    doc = srdd_doc()
    doc["layers"][7]["block_output"]["deadzone_ratio"] = float("nan")
    scan = tmp_path / "bad.json"
    scan.write_text(json.dumps(doc))
    out, study = tmp_path / "m.yaml", tmp_path / "study"
    r = srdd("calibrate", scan, "-o", out, "--suite", study)
    assert r.returncode == 2
    assert "srdd calibrate: error: layers[7].block_output.deadzone_ratio: value is nan" in r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists() and not study.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]  # no temp files either


def test_existing_output_needs_force(srdd_scan, tmp_path):
    out = tmp_path / "m.yaml"
    out.write_text("keep me")
    r = srdd("calibrate", srdd_scan, "-o", out)
    assert r.returncode == 2 and "already exists; pass --force" in r.stderr
    assert out.read_text() == "keep me"
    assert srdd("calibrate", srdd_scan, "-o", out, "--force").returncode == 0
    assert yaml.safe_load(out.read_text())["schema"] == "srdd.noise/v1"


def test_help_documents_the_choices():
    r = srdd("calibrate", "--help")
    assert r.returncode == 0
    for text in ("10^(-SQNR_i/20)", "halves away", "--tiers", "--band-std", "verl-fork", "E13k-constant",
                 "--verl-dicts"):
        assert text in r.stdout


def test_sensitivity_gives_multipliers_zones_and_a_suite(tmp_path):
    """--metric sensitivity reads layers[i].sensitivity.kl_mean the way relative_error is read from block_output."""
    doc = srdd_doc()
    sens = [0.05 if i in (3, 4, 5, 6) else 0.01 for i in range(28)]
    for layer, value in zip(doc["layers"], sens):
        layer["sensitivity"] = {"tokens": 600, "kl_mean": value, "top1_agreement": 0.9}
    scan, out, suite = tmp_path / "scan.json", tmp_path / "m.yaml", tmp_path / "suite"
    scan.write_text(json.dumps(doc))
    r = srdd("calibrate", scan, "-o", out, "--metric", "sensitivity", "--suite", suite)
    assert r.returncode == 0, r.stderr
    noise = yaml.safe_load(out.read_text())
    assert noise["metric"] == "sensitivity" and noise["basis"] == "v_i = sensitivity_i"
    assert noise["layer_multipliers"] == {i: (3.18 if i in (3, 4, 5, 6) else 0.64) for i in range(28)}
    band = next(z for z in noise["zones"] if z["name"] == "high_error")
    assert band["layers"] == [3, 4, 5, 6] and band["sensitivity"] == pytest.approx(0.05)
    assert json.loads((suite / "suite.json").read_text())["high_error_zone"] == [3, 4, 5, 6]
    assert "sensitivity" in r.stdout.splitlines()[2]  # the per-layer table shows the column it used
