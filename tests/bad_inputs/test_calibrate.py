"""`srdd calibrate` refuses bad scans and options in one line, before any file is written."""

from __future__ import annotations

import json

import pytest


def _scan(n: int = 6, **model) -> dict:
    return {"schema": "srdd.scan/v1", "model": {"name": "tiny", "num_layers": n, **model}, "format": {"name": "mxfp4"},
            "layers": [{"layer": i, "block_output": {"relative_error": 0.3 + 0.01 * i, "deadzone_ratio": 0.2,
                                                     "sqnr_db": 17.0}} for i in range(n)]}


@pytest.fixture
def scan_file(tmp_path):
    path = tmp_path / "scan.json"
    path.write_text(json.dumps(_scan()))
    return path


OPTION_CASES = [
    (["--band-std", "inf"], "--band-std must be a finite number >= 0"),
    (["--band-std", "nan"], "--band-std must be a finite number >= 0"),
    (["--band-std", "-1"], "--band-std must be a finite number >= 0"),
    (["--exclude", "(["], "--exclude: bad regex '(['"),
    (["--baseline-acc", "0.5"], "--baseline-acc only shape the experiment suite"),
    (["--target-acc", "0.6"], "--target-acc only shape the experiment suite"),
    (["--format", "nvfp4"], "--format only shape the experiment suite"),
    (["--inline-multipliers"], "--inline-multipliers only shape the experiment suite"),
    (["--sigma", "inf,0.01"], "--sigma: START and END must be finite"),
    (["--sigma-constant", "nan"], "--sigma-constant must be a finite number >= 0"),
    (["--targets", "everything"], "--targets: choose from"),
    (["--suite", "SUITE", "--baseline-acc", "56.41"], "baseline"),
    (["--suite", "SUITE", "--format", "mxfp3"], "--format 'mxfp3' is not a srdd format"),
]


@pytest.mark.parametrize("extra,expect", OPTION_CASES, ids=[" ".join(c[0])[:30] for c in OPTION_CASES])
def test_calibrate_refuses_options(tmp_path, refused, scan_file, extra, expect):
    extra = [str(tmp_path / "suite") if a == "SUITE" else a for a in extra]
    refused(["calibrate", scan_file, "-o", tmp_path / "m.yaml", *extra], tmp_path, expect)


def _mutate(doc, how):
    if how == "huge_num_layers":
        doc["model"]["num_layers"] = 10**12
    elif how == "nan":
        doc["layers"][2]["block_output"]["relative_error"] = float("nan")
    elif how == "percent_deadzone":
        doc["layers"][1]["block_output"]["deadzone_ratio"] = 22.9
    elif how == "duplicate_layer":
        doc["layers"][3]["layer"] = 2
    elif how == "string_metric":
        doc["layers"][0]["block_output"]["sqnr_db"] = "17 dB"
    elif how == "layers_string":
        doc["layers"] = "abc"
    elif how == "too_many_layers":
        doc["layers"] = [{"layer": i, "block_output": doc["layers"][0]["block_output"]} for i in range(5000)]
        doc["model"]["num_layers"] = 5000
    elif how == "multipliers_file":
        doc = {"schema": "srdd.noise/v1", "layer_multipliers": {}}
    elif how == "bool_layer_count":
        doc["model"]["num_layers"] = True
    elif how in ("negative_sensitivity", "sensitivity_missing"):
        for layer in doc["layers"]:
            layer["sensitivity"] = {"tokens": 100, "kl_mean": 0.01}
        if how == "negative_sensitivity":
            doc["layers"][2]["sensitivity"]["kl_mean"] = -0.5
        else:
            del doc["layers"][4]["sensitivity"]
    return doc


SCAN_CASES = [
    ("huge_num_layers", "model.num_layers: 1000000000000 layers is beyond any model"),
    ("nan", "layers[2].block_output.relative_error: value is nan"),
    ("percent_deadzone", "above 1"),
    ("duplicate_layer", "duplicated layer id 2"),
    ("string_metric", "expected a number"),
    ("layers_string", "layers: missing or empty"),
    ("too_many_layers", "layers: 5000 layers is beyond any model"),
    ("multipliers_file", "that is a multipliers file"),
    ("bool_layer_count", "model.num_layers: expected a positive integer"),
    ("negative_sensitivity", "layers[2].sensitivity.kl_mean: -0.5 is negative"),
    ("sensitivity_missing", "layers[4].sensitivity: missing"),
]


@pytest.mark.parametrize("how,expect", SCAN_CASES, ids=[c[0] for c in SCAN_CASES])
def test_calibrate_refuses_scans(tmp_path, refused, how, expect):
    path = tmp_path / "scan.json"
    path.write_text(json.dumps(_mutate(_scan(), how)))
    refused(["calibrate", path, "-o", tmp_path / "m.yaml"], tmp_path, expect)


def test_calibrate_refuses_an_existing_output_through_the_executable(tmp_path, refused, scan_file):
    (tmp_path / "m.yaml").write_text("mine")
    refused(["calibrate", "scan.json", "-o", "m.yaml"], tmp_path, "already exists", subprocess_run=True)


def test_calibrate_refuses_sensitivity_from_a_scan_without_it(tmp_path, refused, scan_file):
    refused(["calibrate", scan_file, "-o", tmp_path / "m.yaml", "--metric", "sensitivity", "--suite",
             tmp_path / "suite"], tmp_path, "has no per-layer sensitivity; make the scan with srdd scan --sensitivity")


def test_calibrate_refuses_a_missing_scan(tmp_path, refused):
    refused(["calibrate", tmp_path / "none.json", "-o", tmp_path / "m.yaml"], tmp_path, "does not exist")
