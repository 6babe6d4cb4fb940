import json
import subprocess
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
CONFIG = FIXTURES / "verl_run.yaml"


def srdd(*args):
    return subprocess.run(["srdd", *map(str, args)], capture_output=True, text=True, timeout=120)


def _records(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_console_log_with_a_restart(tmp_path):
    out = tmp_path / "E13j-s0"
    r = srdd("ingest", "verl", FIXTURES / "verl_console.log", "-o", out, "--quant", "mxfp4/w4a4", "--config", CONFIG)
    assert r.returncode == 0, r.stderr
    recs = _records(out)
    assert [x["step"] for x in recs] == [0, 1, 2, 3]
    assert recs[2]["reward_mean"] == 0.46  # the record after the restart wins
    assert recs[0]["accuracy"] == 0.5641 and recs[-1]["accuracy"] == 0.6088
    assert recs[-1]["eval_quant"] == "mxfp4/w4a4" and recs[1]["eval_quant"] is None
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "complete" and info["config"]["quant"] == {"format": "mxfp4", "mode": "w4a4"}
    assert "per-problem outcomes: none" in r.stdout and not (out / "eval_outcomes.jsonl").exists()


def test_jsonl_without_final_validation_is_invalid(tmp_path):
    out = tmp_path / "run"
    r = srdd("ingest", "verl", FIXTURES / "verl_metrics.jsonl", "-o", out, "--quant", "nvfp4/w4a4", "--config", CONFIG)
    assert r.returncode == 1
    recs = _records(out)
    assert recs[0]["accuracy"] == 0.55 and recs[1]["sigma"] == 0.05
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "invalid" and "final step 2" in info["reason"]


def test_bad_inputs(tmp_path):
    r = srdd("ingest", "verl", FIXTURES / "verl_console.log", "-o", tmp_path / "r", "--config", CONFIG)
    assert r.returncode != 0 and "--quant" in r.stderr
    no_noise = tmp_path / "c.yaml"
    no_noise.write_text("lora: {r: 32}\n")
    r = srdd("ingest", "verl", FIXTURES / "verl_console.log", "-o", tmp_path / "r", "--quant", "mxfp4/w4a4",
             "--config", no_noise)
    assert r.returncode == 2 and "noise settings of the verl run are unknown" in r.stderr
    r = srdd("ingest", "verl", tmp_path / "missing.log", "-o", tmp_path / "r", "--quant", "mxfp4/w4a4", "--config", CONFIG)
    assert r.returncode == 2 and "does not exist" in r.stderr
    junk = tmp_path / "junk.log"
    junk.write_text("hello\n")
    r = srdd("ingest", "verl", junk, "-o", tmp_path / "r", "--quant", "mxfp4/w4a4", "--config", CONFIG)
    assert r.returncode == 2 and "no verl step lines" in r.stderr
    assert not (tmp_path / "r").exists()
    existing = tmp_path / "exists"
    existing.mkdir()
    r = srdd("ingest", "verl", FIXTURES / "verl_console.log", "-o", existing, "--quant", "mxfp4/w4a4", "--config", CONFIG)
    assert r.returncode == 2 and "never overwritten" in r.stderr
