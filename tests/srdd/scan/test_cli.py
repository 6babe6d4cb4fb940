"""`srdd scan` / `srdd show` through the real console script."""

import json
import os
import re
import subprocess

import pytest
import torch
import yaml

from srdd.zones import span
from tests.conftest import build_tiny_llama


def srdd(*args, cwd=None):
    return subprocess.run(["srdd", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


def _strip_time(doc: dict) -> dict:
    """Everything but the creation time and the provenance (command line with the output path, wall time)."""
    doc = dict(doc)
    doc.pop("created")
    doc.pop("provenance")
    return doc


def test_scan_writes_schema_and_is_deterministic(tiny_model_dir, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    base = ["scan", "--fmt", "mxfp4", "--model", tiny_model_dir, "--samples", "4", "--max-tokens", "16",
            "--no-progress"]
    r = srdd(*base, "--out", a)
    assert r.returncode == 0, r.stderr
    assert "Worst layers" in r.stdout and "Zones" in r.stdout and "%" in r.stdout
    assert srdd(*base, "--out", b).returncode == 0
    da, db = json.loads(a.read_text()), json.loads(b.read_text())
    assert _strip_time(da) == _strip_time(db)
    assert da["schema"] == "srdd.scan/v1" and da["model"]["num_layers"] == 3
    assert da["model"]["spec"] == str(tiny_model_dir) and da["model"]["repo_id"] is None
    assert set(da["model"]["files"]["model.safetensors"]) == {"size", "header_sha256"}
    prov = da["provenance"]
    assert prov["command"][-2:] == ["--out", str(a)] and prov["wall_time_s"] > 0
    assert prov["versions"]["torch"] == torch.__version__ and prov["machine"]["device"] == "cpu"
    assert prov["offload"]["enabled"] is False and prov["machine"]["cpu"]
    assert {"relative_error", "deadzone_ratio", "sqnr_db", "saturation_ratio", "mse", "numel"} <= set(
        da["layers"][0]["block_output"])
    assert 0 <= da["layers"][0]["block_output"]["deadzone_ratio"] <= 1
    assert "self_attn.q_proj" in da["layers"][0]["linear_inputs"]
    assert "middle" in {z["name"] for z in da["zones"]}  # 3 layers: early_mid, middle, late_mid
    r = srdd(*base, "--out", a)
    assert r.returncode != 0 and "--force" in r.stderr


def test_several_formats_in_one_pass_named_in_any_case(tiny_model_dir, tmp_path):
    r = srdd("scan", "--fmt", "MXFP4,NVfp4", "--model", tiny_model_dir, "--samples", "2", "--max-tokens", "8",
             "--out", tmp_path / "scan.json", "--no-progress", "--scale-mode", "rceil")
    assert r.returncode == 0, r.stderr
    mx = json.loads((tmp_path / "scan.mxfp4.json").read_text())
    nv = json.loads((tmp_path / "scan.nvfp4.json").read_text())
    assert mx["format"] == {"name": "mxfp4", "scale_mode": "rceil", "block_size": 32}
    assert nv["format"]["name"] == "nvfp4" and nv["format"]["block_size"] == 16


@pytest.mark.parametrize("args,message", [
    (["--model", "/nonexistent"], "not found"),
    (["--fmt", "mxfp3"], "unknown format"),
    (["--samples", "0"], "--samples must be in 1..65536"),
    (["--data", "/nonexistent.jsonl"], "does not exist"),
    (["--out", "/nonexistent-dir/scan.json"], "does not exist"),
])
def test_bad_input_fails_cleanly(tiny_model_dir, tmp_path, args, message):
    base = {"--fmt": "mxfp4", "--model": str(tiny_model_dir), "--out": str(tmp_path / "s.json")}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    flat = [x for kv in base.items() for x in kv] + [a for a in args if a not in base and a not in base.values()]
    r = srdd("scan", *flat, "--no-progress")
    assert r.returncode != 0
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "s.json").exists()


def test_bad_data_files(tiny_model_dir, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "ok"}\n{not json\n')
    for data, message in ((empty, "holds no samples"), (broken, "broken.jsonl:2: invalid JSON")):
        r = srdd("scan", "--fmt", "mxfp4", "--model", tiny_model_dir, "--data", data,
                 "--out", tmp_path / "s.json", "--no-progress")
        assert r.returncode != 0 and message in r.stderr, r.stderr
    assert not (tmp_path / "s.json").exists()


def test_model_without_decoder_layers(tmp_path):
    from transformers import GPT2Config

    path = tmp_path / "nolayers"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    r = srdd("scan", "--fmt", "mxfp4", "--model", path, "--out", tmp_path / "s.json")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    del GPT2Config


def test_data_formats(tiny_model_dir, tmp_path):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"question": "Ava has 3 apples ?"}\n{"text": "Ben has 4 books"}\n'
                     '{"prompt": [{"role": "user", "content": "Tom has 5 stamps"}]}\n')
    txt = tmp_path / "d.txt"
    txt.write_text("Ava has 3 apples\n\nBen has 4 books\n")
    for data, n in ((jsonl, 3), (txt, 2)):
        out = tmp_path / f"{data.suffix[1:]}.json"
        r = srdd("scan", "--fmt", "int4", "--model", tiny_model_dir, "--data", data, "--out", out, "--no-progress")
        assert r.returncode == 0, r.stderr
        assert json.loads(out.read_text())["calibration"]["samples"] == n


def test_show_csv_and_plot(tiny_model_dir, tmp_path):
    scan = tmp_path / "scan.json"
    assert srdd("scan", "--fmt", "mxfp4", "--model", tiny_model_dir, "--samples", "2", "--out", scan,
                "--no-progress").returncode == 0
    r = srdd("show", scan, "--csv", tmp_path / "l.csv", "--plot", tmp_path / "p.png")
    assert r.returncode == 0, r.stderr
    assert "Worst layers" in r.stdout
    assert (tmp_path / "l.csv").read_text().startswith("layer,sqnr_db")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "other"}')
    r = srdd("show", bad)
    assert r.returncode != 0 and "not a srdd.scan/v1 file" in r.stderr


def test_offload_gives_the_same_scan(tiny_model_dir, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    base = ["scan", "--fmt", "mxfp4", "--model", tiny_model_dir, "--samples", "3", "--no-progress",
            "--sites", "block_output,linear_input,weight"]
    assert srdd(*base, "--out", a).returncode == 0
    r = srdd(*base, "--out", b, "--offload")
    assert r.returncode == 0, r.stderr
    la, lb = json.loads(a.read_text())["layers"], json.loads(b.read_text())["layers"]
    assert la == lb


# VmHWM, not ru_maxrss: the latter keeps the high-water mark of the forking parent across exec.
PEAK_SCRIPT = """
import re, sys
from srdd.scan.offload import load_offloaded
from srdd.scan.runner import ScanConfig, scan_model
model, tok = load_offloaded(sys.argv[1])
scan_model(model, tok, ScanConfig(samples=2, max_tokens=8), model_info={}, progress=False)
print(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
"""


def test_offload_peak_memory_is_flat_in_depth(tmp_path):
    peaks = {}
    for layers in (2, 8):
        path = build_tiny_llama(tmp_path / f"m{layers}", layers=layers, hidden=512, intermediate=2048)
        # Eager kernels: Inductor's compile workers would add their own, unrelated, memory peaks.
        env = {**os.environ, "SRDD_FAKEQUANT_BACKEND": "eager"}
        r = subprocess.run(["python", "-c", PEAK_SCRIPT, str(path)], capture_output=True, text=True,
                           timeout=300, env=env)
        assert r.returncode == 0, r.stderr
        peaks[layers] = int(r.stdout.split()[-1]) / 1024  # MiB
    layer_mib = (4 * 512 * 512 + 3 * 512 * 2048) * 4 / 2**20  # ~16 MiB per layer in fp32
    assert peaks[8] - peaks[2] < 2 * layer_mib, peaks  # six extra layers would add ~100 MiB


@pytest.mark.slow
def test_readme_main_job_on_smollm2(tmp_path):
    r = srdd("scan", "--fmt", "mxfp4", "--model", "smollm2", "--out", tmp_path / "scan.json", "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads((tmp_path / "scan.json").read_text())
    assert doc["model"]["name"] == "SmolLM2-135M-Instruct" and doc["model"]["num_layers"] == 30
    mean_rel = doc["summary"]["relative_error"]["mean"]
    assert 0.2 < mean_rel < 0.5  # the published MXFP4 scans sit at 28-43 %
    assert "Worst layers" in r.stdout


def _printed_zones(stdout: str) -> dict[str, str]:
    """zone name -> layers label, from the zone table srdd show / srdd calibrate print."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lower().startswith("zones")) + 3
    out = {}
    for line in lines[start:]:
        cells = line.split()
        if len(cells) < 3 or cells[1] not in ("depth", "data"):
            break
        out[cells[0]] = cells[2]
    return out


def test_scan_show_and_calibrate_report_the_same_zones(tmp_path):
    model = build_tiny_llama(tmp_path / "deep", layers=12, seed=3)
    scan, csv = tmp_path / "scan.json", tmp_path / "layers.csv"
    r = srdd("scan", "--fmt", "mxfp4", "--model", model, "--samples", "4", "--max-tokens", "16", "--no-progress",
             "--out", scan)
    assert r.returncode == 0, r.stderr
    doc = json.loads(scan.read_text())
    stored = {z["name"]: span(z["layers"]) for z in doc["zones"]}
    assert any(z["kind"] == "data" for z in doc["zones"]), "the test needs a scan with a high-error band"
    assert doc["zone_rule"] == {"metric": "relative_error", "band_std": 0.5, "min_layers": 2}
    shown = srdd("show", scan, "--csv", csv)
    assert shown.returncode == 0, shown.stderr
    calibrated = srdd("calibrate", scan, "-o", tmp_path / "m.yaml")
    assert calibrated.returncode == 0, calibrated.stderr
    assert _printed_zones(r.stdout) == _printed_zones(shown.stdout) == _printed_zones(calibrated.stdout) == stored
    noise = yaml.safe_load((tmp_path / "m.yaml").read_text())["zones"]
    assert {z["name"]: span(z["layers"]) for z in noise} == stored
    # every layer of a data zone is starred in calibrate's table, with the zone's name
    band = next(z for z in doc["zones"] if z["name"] == "high_error")
    for layer in band["layers"]:
        assert re.search(rf"^\s+{layer}\s.*\* high_error$", calibrated.stdout, re.M)
    # another metric: show and calibrate still agree with each other
    shown = srdd("show", scan, "--zone-metric", "sqnr_db", "--band-std", "0")
    calibrated = srdd("calibrate", scan, "-o", tmp_path / "s.yaml", "--metric", "sqnr_db", "--band-std", "0")
    assert _printed_zones(shown.stdout) == _printed_zones(calibrated.stdout)
    # q/k/v_proj and gate/up_proj read one input each: one CSV column per input activation
    header = csv.read_text().splitlines()[0].split(",")
    assert "input_sqnr_db:self_attn.q_proj/k_proj/v_proj" in header
    assert "input_sqnr_db:mlp.gate_proj/up_proj" in header
    assert not any("k_proj.sqnr_db" in h for h in header)


def test_sensitivity_scan_shows_and_calibrates(tiny_model_dir, tmp_path, capsys):
    """--sensitivity end to end: the file, the show report with its rank correlations, and calibrate from it."""
    from srdd.cli import main

    scan = tmp_path / "scan.json"
    assert main(["scan", "--fmt", "mxfp4", "--model", str(tiny_model_dir), "--samples", "3", "--max-tokens", "16",
                 "--sensitivity", "--out", str(scan), "--no-progress"]) == 0
    doc = json.loads(scan.read_text())
    sens = [layer["sensitivity"]["kl_mean"] for layer in doc["layers"]]
    assert all(s > 0 for s in sens) and doc["fidelity"]["kl_mean"] > 0
    assert set(doc["sensitivity"]["rank_correlation"]) == {"relative_error", "deadzone_ratio", "sqnr_db"}
    capsys.readouterr()
    assert main(["show", str(scan), "--csv", str(tmp_path / "layers.csv"), "--zone-metric", "sensitivity",
                 "--band-std", "0"]) == 0
    out = capsys.readouterr().out
    assert "Model fidelity: fp vs mxfp4/w4a4" in out and "Does local error predict damage?" in out
    assert "not independent replicates" in out and "v = sensitivity > mean + 0 std" in out
    rows = (tmp_path / "layers.csv").read_text().splitlines()
    column = rows[0].split(",").index("sensitivity")
    assert [float(r.split(",")[column]) for r in rows[1:]] == pytest.approx(sens, rel=1e-12)
    assert main(["calibrate", str(scan), "-o", str(tmp_path / "m.yaml"), "--metric", "sensitivity"]) == 0
    noise = yaml.safe_load((tmp_path / "m.yaml").read_text())
    mean = sum(sens) / len(sens)
    assert noise["metric"] == "sensitivity"
    assert noise["layer_multipliers"] == {i: round(s / mean, 2) for i, s in enumerate(sens)}
