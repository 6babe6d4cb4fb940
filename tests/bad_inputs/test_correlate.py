"""`srdd correlate` never deletes what it did not write, and refuses bad runs and options in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from srdd.cli import main

LAYERS = 4


def _scan(shift: float = 0.0) -> dict:
    return {"schema": "srdd.scan/v1", "model": {"name": "tiny", "num_layers": LAYERS}, "format": {"name": "mxfp4"},
            "layers": [{"layer": i, "block_output": {"relative_error": 0.3 + 0.01 * i + shift, "deadzone_ratio": 0.2,
                                                     "sqnr_db": 17.0}} for i in range(LAYERS)]}


def write_run(root: Path, name: str, seed: int = 0, acc: float = 0.5) -> Path:
    path = root / name
    path.mkdir(parents=True)
    config = {"model": "tiny", "seed": seed, "quant": {"format": "mxfp4", "mode": "w4a4"}, "noise": {"enabled": False}}
    (path / "run.json").write_text(json.dumps({"schema": "srdd.run/v1", "name": name, "status": "complete",
                                               "reason": None, "config": config}))
    lines = [{"step": 0, "accuracy": 0.4, "eval_quant": "mxfp4/w4a4", "eval_lora": "separate", "sigma_layers": None},
             {"step": 10, "accuracy": acc, "eval_quant": "mxfp4/w4a4", "eval_lora": "separate",
              "sigma_layers": {"0": 0.01}, "sigma_layers_effective": {"0": 0.03},
              "eval_merged": {"accuracy": acc, "eval_quant": "mxfp4/w4a4", "eval_lora": "merged"}}]
    (path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (path / "scan_before.json").write_text(json.dumps(_scan()))
    (path / "scan_after.json").write_text(json.dumps(_scan(-0.01)))
    return path


@pytest.fixture
def study(tmp_path) -> Path:
    root = tmp_path / "runs"
    for s in range(2):
        write_run(root, f"base-s{s}", seed=s, acc=0.5 + 0.01 * s)
    (root / "notes.txt").write_text("my notes")
    (tmp_path / "paper.tex").write_text("\\documentclass{article}")
    return root


OUT_CASES = [
    ("runs", ["--force"], "holds or is inside the runs directory"),
    (".", ["--force"], "holds or is inside the runs directory"),
    ("runs/report", ["--force"], "holds or is inside the runs directory"),
    ("paper.tex", ["--force"], "exists and is not a directory"),
    ("dangling", [], "is a symlink"),
    ("old", ["--force"], "is not a report srdd wrote"),
    ("old", [], "already exists; pass --force"),
    ("nodir/report", [], "does not exist"),
]


@pytest.mark.parametrize("out,extra,expect", OUT_CASES, ids=[f"{c[0]}{c[1]}" for c in OUT_CASES])
def test_correlate_out_is_never_a_place_it_could_destroy(tmp_path, refused, study, out, extra, expect):
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "draft.md").write_text("not a report")
    refused(["correlate", study, "-o", tmp_path / out, *extra], tmp_path, expect)


@pytest.mark.parametrize("extra,expect", [
    (["--target", "5.0"], "an accuracy is a fraction 0..1"),
    (["--target", "nan"], "an accuracy is a fraction 0..1"),
    (["--target=-inf"], "an accuracy is a fraction 0..1"),
    (["--target", "garbage"], "--target 'garbage' names no valid run or group"),
    (["--baseline", "nosuch"], "--baseline 'nosuch' names no valid run or group"),
], ids=["5.0", "nan", "-inf", "garbage", "baseline"])
def test_correlate_refuses_bad_targets(tmp_path, refused, study, extra, expect):
    refused(["correlate", study, "-o", tmp_path / "report", *extra], tmp_path, expect)


METRICS_LINES = {
    "nan_accuracy": '{"step": 10, "accuracy": NaN, "eval_quant": "mxfp4/w4a4"}',
    "string_accuracy": '{"step": 10, "accuracy": "56%", "eval_quant": "mxfp4/w4a4"}',
    "percent_accuracy": '{"step": 10, "accuracy": 56.41, "eval_quant": "mxfp4/w4a4"}',
    "line_is_list": "[1, 2]",
    "missing_step": '{"accuracy": 0.5, "eval_quant": "mxfp4/w4a4"}',
    "bool_step": '{"step": true, "accuracy": 0.5, "eval_quant": "mxfp4/w4a4"}',
    "sigma_key": '{"step": 10, "accuracy": 0.5, "eval_quant": "mxfp4/w4a4", "sigma_layers": {"x": 1}}',
    "effective_key": '{"step": 10, "accuracy": 0.5, "eval_quant": "mxfp4/w4a4", "sigma_layers_effective": {"x": 1}}',
    "merged_percent": '{"step": 10, "accuracy": 0.5, "eval_quant": "mxfp4/w4a4", "eval_merged": {"accuracy": 56.4}}',
    "merged_list": '{"step": 10, "accuracy": 0.5, "eval_quant": "mxfp4/w4a4", "eval_merged": [0.5]}',
    "huge_step": '{"step": 1180591620717411303424, "accuracy": 0.5, "eval_quant": "mxfp4/w4a4"}',
    "arabic_digit_key": '{"step": 10, "accuracy": 0.5, "eval_quant": "mxfp4/w4a4", "sigma_layers": {"\u0663": 1}}',
}
RUN_JSON_FIELDS = {"numeric_name": {"name": 42}, "config_string": {"config": "seed=0"},
                   "schema_v99": {"schema": "srdd.run/v99"}, "schema_none": {"schema": None},
                   "newline_name": {"name": "base-s1\n```\n<img src=x onerror=alert(1)>"},
                   "status_number": {"status": 3}, "noise_list": {"config": {"noise": [1, 2]}},
                   "multipliers_list": {"config": {"noise": {"layer_multipliers": [1.0]}}}}
SCAN_FILES = {
    "scan_layers_string": ("scan_after.json", json.dumps({**_scan(), "layers": "abc"})),
    "scan_nan": ("scan_before.json", json.dumps(_scan()).replace("17.0", "NaN")),
    "scan_metric_string": ("scan_before.json", json.dumps(_scan()).replace('"relative_error": 0.3,',
                                                                           '"relative_error": "x",')),
    "run_json_list": ("run.json", "[1, 2]"),
}


def _break(path: Path, how: str) -> None:
    if how == "metrics_binary":
        (path / "metrics.jsonl").write_bytes(bytes(range(256)))
    elif how == "metrics_dev_zero":
        (path / "metrics.jsonl").unlink()
        (path / "metrics.jsonl").symlink_to("/dev/zero")
    elif how in METRICS_LINES:
        (path / "metrics.jsonl").write_text(METRICS_LINES[how] + "\n")
    elif how in RUN_JSON_FIELDS:
        info = json.loads((path / "run.json").read_text())
        (path / "run.json").write_text(json.dumps({**info, **RUN_JSON_FIELDS[how]}))
    else:
        name, text = SCAN_FILES[how]
        (path / name).write_text(text)


RUN_CASES = [
    ("nan_accuracy", "accuracy is nan"), ("string_accuracy", "accuracy is '56%'"),
    ("percent_accuracy", "accuracies are fractions 0..1"), ("line_is_list", "is a list, not an object"),
    ("missing_step", "step is None"), ("bool_step", "step is True"), ("sigma_key", "sigma_layers key 'x'"),
    ("effective_key", "sigma_layers_effective key 'x'"), ("merged_percent", "eval_merged.accuracy is 56.4"),
    ("merged_list", "eval_merged is a list"),
    ("run_json_list", "run.json is a list"), ("numeric_name", "name must be a string"),
    ("config_string", "config an object"), ("huge_step", "not an integer in 0..1000000000"),
    ("arabic_digit_key", "sigma_layers key '\u0663'"), ("schema_v99", "schema 'srdd.run/v99', expected srdd.run/v1"),
    ("schema_none", "schema 'None'"), ("newline_name", "the name holds control characters"),
    ("status_number", "status must be a string"), ("noise_list", "config.noise must be an object"),
    ("multipliers_list", "config.noise must be an object"), ("metrics_binary", "not UTF-8 text"),
    ("metrics_dev_zero", "metrics.jsonl is a symlink"),
    ("scan_layers_string", "scan_after.json: layers: Input should be a valid list"),
    ("scan_nan", "sqnr_db: Input should be a finite number"), ("scan_metric_string", "relative_error"),
]


@pytest.mark.parametrize("how,expect", RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_correlate_names_a_malformed_run(tmp_path, refused, study, how, expect):
    _break(study / "base-s1", how)  # one valid run left: too few to compare, and the reason is named
    line = refused(["correlate", study, "-o", tmp_path / "report"], tmp_path, expect)
    assert "1 valid run(s) of 2" in line


def test_correlate_refuses_two_runs_of_one_name(tmp_path, refused, study):
    info = json.loads((study / "base-s1" / "run.json").read_text())
    (study / "base-s1" / "run.json").write_text(json.dumps({**info, "name": "base-s0"}))
    refused(["correlate", study, "-o", tmp_path / "report"], tmp_path, "two runs are named 'base-s0'")


def test_correlate_refusal_through_the_executable(tmp_path, refused, study):
    refused(["correlate", "runs", "-o", "runs", "--force"], tmp_path, "holds or is inside the runs directory",
            subprocess_run=True)


def test_force_replaces_only_its_own_report_and_mathtext_names_render(tmp_path, study, capsys):
    write_run(study, "$\\frac{a", seed=2)  # matplotlib would parse this name as broken mathtext
    out = tmp_path / "report"
    assert main(["correlate", str(study), "-o", str(out)]) == 0
    assert (out / ".srdd-report").is_file() and (out / "report.json").is_file()
    (out / "extra.txt").write_text("left by the user inside the report")
    assert main(["correlate", str(study), "-o", str(out), "--force"]) == 0  # a report srdd wrote: replaced
    assert not (out / "extra.txt").exists()
    assert (study / "notes.txt").read_text() == "my notes" and (tmp_path / "paper.tex").exists()
