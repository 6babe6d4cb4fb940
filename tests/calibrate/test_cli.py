import json
import subprocess

import pytest
import yaml

from .conftest import srdd_doc


def srdd(*args):
    return subprocess.run(["srdd", *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("scan_fixture", ["published_scan", "srdd_scan"])
def test_both_layouts_give_the_same_multipliers(scan_fixture, request, tmp_path):
    scan = request.getfixturevalue(scan_fixture)
    out = tmp_path / "m.yaml"
    r = srdd("calibrate", scan, "-o", out)
    assert r.returncode == 0, r.stderr
    doc = yaml.safe_load(out.read_text())
    assert doc["schema"] == "srdd.noise/v1" and doc["metric"] == "relative_error"
    assert sorted(doc["layer_multipliers"]) == list(range(28))
    assert (doc["layer_multipliers"][0], doc["layer_multipliers"][15], doc["layer_multipliers"][27]) == (0.83, 1.17, 0.88)
    assert len(doc["source"]["sha256"]) == 64
    band = next(z for z in doc["zones"] if z["name"] == "high_error")
    assert band["layers"] == list(range(10, 20))
    assert {z["name"] for z in doc["zones"]} >= {"first", "early_mid", "middle", "late_mid", "last"}
    if scan_fixture == "published_scan":
        assert "verl-fork" in r.stdout


def test_explain_and_clip(srdd_scan, tmp_path):
    r = srdd("calibrate", srdd_scan, "-o", tmp_path / "m.yaml", "--explain", "--clip", "0.9,1.1")
    assert r.returncode == 0, r.stderr
    assert "layer 15: relative_error = 0.42588; / mean 0.364 = 1.1700 -> proportional -> 1.1" in r.stdout
    values = yaml.safe_load((tmp_path / "m.yaml").read_text())["layer_multipliers"].values()
    assert min(values) == 0.9 and max(values) == 1.1


def _write(tmp_path, doc, raw=None):
    path = tmp_path / "bad.json"
    path.write_text(raw if raw is not None else json.dumps(doc))
    return path


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d["layers"].pop(5), "missing layers [5]"),
    (lambda d: d["layers"][3].update(layer=4), "duplicated layer ids [4]"),
    (lambda d: d.update(schema="other/v9"), "schema: 'other/v9' is not supported"),
    (lambda d: d["layers"][2]["block_output"].pop("relative_error"), "layers[2].block_output.relative_error: missing"),
    (lambda d: d["layers"][2]["block_output"].update(sqnr_db="x"), "layers[2].block_output.sqnr_db: expected a number"),
])
def test_malformed_scans_name_the_field(tmp_path, mutate, message):
    doc = srdd_doc()
    mutate(doc)
    r = srdd("calibrate", _write(tmp_path, doc), "-o", tmp_path / "m.yaml")
    assert r.returncode != 0 and message in r.stderr, r.stderr
    assert not (tmp_path / "m.yaml").exists()


def test_nan_is_refused(tmp_path):
    raw = json.dumps(srdd_doc()).replace("\"relative_error\": 0.345", "\"relative_error\": NaN", 1)
    r = srdd("calibrate", _write(tmp_path, None, raw), "-o", tmp_path / "m.yaml")
    assert r.returncode != 0 and "NaN" in r.stderr


def test_suite_files_and_hydra_overrides(srdd_scan, tmp_path):
    suite = tmp_path / "suite"
    r = srdd("calibrate", srdd_scan, "-o", tmp_path / "m.yaml", "--suite", suite, "--baseline-acc", "0.5641",
             "--target-acc", "0.6088", "--sigma-high", "0.1,0.002")
    assert r.returncode == 0, r.stderr
    names = {"E13i-baseline", "E13i-targeted", "E13i-high", "E13i-low", "E13j-variable", "E13k-constant",
             "E13l-conservative", "E13m-rmsnorm"}
    assert {p.stem for p in suite.glob("*.yaml")} == names
    high = yaml.safe_load((suite / "E13i-high.yaml").read_text())
    assert high["noise"]["zone_overrides"][0]["sigma_start"] == 0.1
    assert high["noise"]["zone_overrides"][0]["layers"] == list(range(10, 20))
    assert yaml.safe_load((suite / "E13j-variable.yaml").read_text())["noise"]["multipliers_file"].endswith("m.yaml")
    assert "0.586" in (suite / "plan.md").read_text()  # half the gap closed
    parser = pytest.importorskip("hydra.core.override_parser.overrides_parser").OverridesParser.create()
    parsed = {o.key_or_group: o.value() for o in
              parser.parse_overrides((suite / "E13j-variable.overrides").read_text().split())}
    assert parsed["trainer.noise_injection.layer_multipliers"][15] == 1.17
    assert parsed["trainer.noise_injection.target_modules"] == ["linear"]
    r = srdd("calibrate", srdd_scan, "-o", tmp_path / "m2.yaml", "--suite", suite)
    assert r.returncode != 0 and "not empty" in r.stderr
