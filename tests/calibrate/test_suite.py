import json
from pathlib import Path

import pytest
import yaml

from calibrate.suite import (ARM_VS_CONTROL, CONTROL, HYPOTHESES, SUITE_HYPOTHESES, Hypothesis, Sigmas, experiments,
                             hydra_value, verl_overrides)
from srdd.cli import main
from srdd.errors import SrddError

from .conftest import HIGH_ERROR_BAND, PUBLISHED_MULTIPLIERS, srdd_doc

NAMES = ["E13i-baseline", "E13i-targeted", "E13i-high", "E13i-low", "E13j-variable", "E13m-rmsnorm",
         "E13l-conservative", "E13k-constant"]


def _parser():
    mod = pytest.importorskip("hydra.core.override_parser.overrides_parser")
    return mod.OverridesParser.create()


def _parse(lines):
    return {o.key_or_group: (o.value(), o.type.name) for o in _parser().parse_overrides(lines)}


@pytest.fixture
def suite(srdd_scan, tmp_path):
    out, study = tmp_path / "m.yaml", tmp_path / "study"
    assert main(["calibrate", str(srdd_scan), "-o", str(out), "--suite", str(study), "--baseline-acc", "0.5641",
                 "--target-acc", "0.6088", "--sigma-high", "0.1,0.002"]) == 0
    return out, study


@pytest.mark.parametrize("value", [
    None, True, False, 0, 10, 0.05, 0.0005, 5e-05, 1e-07, -0.5, 1.0, "linear", "mxfp4", "/abs/dir/m.yaml",
    "has space", "it's", "back\\slash", "a\\'b", "end\\", "q'\\", "true", "null", "10",
    [], [10, 11, 12], ["linear", "rmsnorm"],
    {0: 0.83, 15: 1.17}, {}, [{"name": "high_error", "layers": [10, 11], "sigma_start": 0.08, "sigma_end": 0.001}],
])
def test_hydra_values_parse_back_to_the_same_python_value(value):
    parsed, _ = _parse([f"a.b={hydra_value(value)}"])["a.b"]
    assert parsed == value and type(parsed) is type(value)


def test_every_override_file_parses_to_the_experiment_settings(suite):
    out, study = suite
    exps = {e.name: e for e in experiments(Sigmas(high=(0.1, 0.002)), tuple(HIGH_ERROR_BAND), PUBLISHED_MULTIPLIERS,
                                           targets=["linear"], exclude=[])}
    for name in NAMES:
        lines = (study / f"{name}.overrides").read_text().splitlines()
        assert not any(line.startswith("++") for line in lines)
        parsed = _parse(lines)
        noise = exps[name].noise
        value = {k.rsplit(".", 1)[1]: v for k, (v, kind) in parsed.items() if kind != "DEL"}
        assert value["target_modules"] == noise["targets"]
        for key in ("enabled", "sigma_start", "sigma_end", "num_stages", "schedule", "warmup_stage", "sigma_mode",
                    "target_layers", "exclude_patterns", "layer_multipliers", "zone_overrides"):
            assert value[key] == noise[key], (name, key)
        assert value["use_variable_sigma"] is (name == "E13j-variable")
    lines = (study / "E13j-variable.overrides").read_text().splitlines()
    key = "trainer.noise_injection.layer_multipliers"
    variable = _parse(lines)
    assert variable[key] == (PUBLISHED_MULTIPLIERS, "ADD")
    assert lines[lines.index("~" + key) + 1].startswith("+" + key + "={0:0.83,1:0.89,")  # delete, then add
    high = _parse((study / "E13i-high.overrides").read_text().splitlines())
    assert high["trainer.noise_injection.zone_overrides"][0] == [
        {"name": "high_error", "layers": HIGH_ERROR_BAND, "sigma_start": 0.1, "sigma_end": 0.002}]


def _compose(lines, layer_multipliers_default):
    hydra = pytest.importorskip("hydra")
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    node = {"enabled": False, "sigma_start": 0.01, "sigma_end": 0.001, "num_stages": 3, "schedule": "exponential",
            "warmup_stage": True, "sigma_mode": "absolute", "target_modules": [], "target_layers": None,
            "exclude_patterns": [], "use_variable_sigma": False, "layer_multipliers": layer_multipliers_default,
            "zone_overrides": []}
    ConfigStore.instance().store(name="srdd_test_ppo", node={"trainer": {"noise_injection": node}})
    with hydra.initialize(version_base=None):
        cfg = hydra.compose("srdd_test_ppo", overrides=lines)
    return OmegaConf.to_container(cfg)["trainer"]["noise_injection"]


def test_overrides_apply_to_a_verl_style_config(suite):
    """Composed into a struct config shaped like the fork's (layer_multipliers: {}), values land exactly."""
    _, study = suite
    got = _compose((study / "E13j-variable.overrides").read_text().splitlines(), {5: 9.9})
    assert got["layer_multipliers"] == PUBLISHED_MULTIPLIERS  # replaced whole: the stale 5: 9.9 is gone
    assert got["use_variable_sigma"] is True and got["sigma_mode"] == "relative" and got["target_modules"] == ["linear"]
    got = _compose((study / "E13i-targeted.overrides").read_text().splitlines(), {})
    assert got["target_layers"] == HIGH_ERROR_BAND and got["layer_multipliers"] is None
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):  # a key the verl config lacks stops the run
        _compose(["trainer.noise_injection.not_a_key=1"], {})


def test_assign_style_for_configs_declaring_null(srdd_scan, tmp_path):
    study = tmp_path / "study"
    assert main(["calibrate", str(srdd_scan), "-o", str(tmp_path / "m.yaml"), "--suite", str(study),
                 "--verl-dicts", "assign", "--verl-multipliers", "path"]) == 0
    lines = (study / "E13j-variable.overrides").read_text().splitlines()
    assert f"trainer.noise_injection.layer_multipliers={tmp_path / 'm.yaml'}" in lines
    got = _compose(lines, None)
    assert got["layer_multipliers"] == str(tmp_path / "m.yaml")


def test_suite_configs_load_in_rin_train(suite, monkeypatch):
    run_config = pytest.importorskip("rin_train.run_config")
    out, study = suite
    assert yaml.safe_load((study / "E13j-variable.yaml").read_text())["noise"]["multipliers_file"] == "../m.yaml"
    monkeypatch.chdir(study.parent.parent)  # a config's files are found from the config, wherever srdd runs
    assert sorted(p.stem for p in study.glob("*.yaml")) == sorted(NAMES)
    cfgs = {name: run_config.load_run_config(study / f"{name}.yaml") for name in NAMES}
    base = cfgs["E13i-baseline"].noise
    assert (base.sigma_start, base.sigma_end, base.num_stages, base.targets) == (0.05, 0.0005, 10, ["linear"])
    assert cfgs["E13i-targeted"].noise.target_layers == HIGH_ERROR_BAND
    high = cfgs["E13i-high"].noise.zone_overrides[0]
    assert (high.layers, high.sigma_start, high.sigma_end) == (HIGH_ERROR_BAND, 0.1, 0.002)
    low = cfgs["E13i-low"].noise.zone_overrides[0]
    assert (low.sigma_start, low.sigma_end) == (0.03, 0.0003)
    variable = cfgs["E13j-variable"].noise
    assert variable.layer_multipliers == PUBLISHED_MULTIPLIERS
    assert Path(variable.multipliers_file).resolve() == out.resolve()
    constant = cfgs["E13k-constant"].noise
    assert (constant.schedule, constant.sigma_start, constant.sigma_end, constant.num_stages) == \
        ("constant", 0.03, 0.03, 1)
    conservative = cfgs["E13l-conservative"].noise
    assert (conservative.sigma_start, conservative.sigma_end, conservative.num_stages) == (0.05, 0.005, 5)
    assert cfgs["E13m-rmsnorm"].noise.targets == ["rmsnorm"]
    assert all(c.quant.format == "mxfp4" for c in cfgs.values())


def test_each_hypothesis_pair_differs_only_in_its_keys(suite):
    _, study = suite
    flat = {}
    for name in NAMES:
        noise = yaml.safe_load((study / f"{name}.yaml").read_text())["noise"]
        flat[name] = {f"noise.{k}": v for k, v in noise.items()}
    for h in HYPOTHESES:
        a, b = flat[h.treatment], flat[h.control]
        differ = {k for k in set(a) | set(b) if a.get(k) != b.get(k)}
        assert differ and differ <= set(h.differs_in), (h.key, differ)


def test_each_arm_vs_control_hypothesis_differs_from_the_studys_control_arm_in_exactly_its_keys(suite):
    """C1 and C2 compare against the no-noise arm `srdd study run` makes from E13i-baseline; C3 as H3."""
    from rin_train.study.settings import control_config

    _, study = suite
    noise = {name: yaml.safe_load((study / f"{name}.yaml").read_text())["noise"] for name in NAMES}
    noise[CONTROL] = control_config(study / "E13i-baseline.yaml")["noise"]
    for h in ARM_VS_CONTROL:
        a, b = noise[h.treatment], noise[h.control]
        differ = {f"noise.{k}" for k in set(a) | set(b) if a.get(k) != b.get(k)}
        assert differ and differ <= set(h.differs_in), (h.key, differ)
        assert ("noise.enabled" in differ) is (h.control == CONTROL)  # against no noise: noise is what differs


def test_plan_and_suite_json(suite, srdd_scan):
    out, study = suite
    plan = (study / "plan.md").read_text()
    assert "58.65%" in plan  # half the 56.41 -> 60.88 gap closed
    for name in NAMES:
        assert name in plan
    for key in ("H1", "H2", "H3", "H4", "H5"):
        assert f"| {key} |" in plan
    doc = json.loads((study / "suite.json").read_text())
    assert doc["schema"] == "srdd.suite/v1" and doc["high_error_zone"] == HIGH_ERROR_BAND
    assert [e["name"] for e in doc["experiments"]] == NAMES  # priority order
    assert doc["thresholds"]["levels"]["success"] == pytest.approx(0.58645)
    assert tuple(Hypothesis.from_dict(h, "suite.json") for h in doc["hypotheses"]) == SUITE_HYPOTHESES
    assert [h["key"] for h in doc["hypotheses"]] == ["H1", "H2", "H3", "H4", "H4b", "H5", "C1", "C2", "C3"]
    for key in ("C1", "C2", "C3"):
        assert f"| {key} |" in plan
    assert "--hypotheses C1,C2,C3" in plan and f"`{CONTROL}` is the no-noise arm" in plan
    tests = {e["name"]: e["tests"] for e in doc["experiments"]}
    for h in SUITE_HYPOTHESES:  # every experiment names the hypotheses it is an arm of
        assert all(h.key in tests[arm] for arm in (h.treatment, h.control) if arm != CONTROL), h.key
    variable = next(e for e in doc["experiments"] if e["name"] == "E13j-variable")
    assert variable["expected_accuracy"][0] == pytest.approx(0.5641 + 0.58 * 0.0447, abs=1e-4)
    assert doc["multipliers"]["path"] == "../m.yaml"  # relative to the suite, as every path a suite file holds
    assert (study / doc["source"]["path"]).resolve() == srdd_scan.resolve()
    assert "Holm-adjusted p < 0.05" in plan and ">= 3 seeds" in plan and "TOST" in plan
    assert "seed spread" not in plan and "2 seeds" not in plan


def test_suite_refuses_to_overwrite_and_accepts_force(srdd_scan, tmp_path, capsys):
    study = tmp_path / "study"
    study.mkdir()
    (study / "notes.txt").write_text("mine")
    args = ["calibrate", str(srdd_scan), "-o", str(tmp_path / "m.yaml"), "--suite", str(study)]
    assert main(args) == 0  # an unrelated file is fine
    before = (study / "plan.md").read_text()
    assert main(["calibrate", str(srdd_scan), "-o", str(tmp_path / "m2.yaml"), "--suite", str(study)]) == 2
    assert "already holds" in capsys.readouterr().err and not (tmp_path / "m2.yaml").exists()
    assert (study / "plan.md").read_text() == before
    assert main([*args, "--force", "--sigma", "0.04,0.0004"]) == 0
    assert yaml.safe_load((study / "E13i-baseline.yaml").read_text())["noise"]["sigma_start"] == 0.04
    assert yaml.safe_load((tmp_path / "m.yaml").read_text())["sigma"]["sigma_start"] == 0.04
    assert (study / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("flags,message", [
    (["--sigma", "0.05"], "--sigma: expected START,END"),
    (["--sigma-high", "0.001,0.08"], "--sigma-high: need 0 < end <= start"),
    (["--sigma", "5,0.1"], "--sigma: need 0 < end <= start <= 1.0"),
    (["--sigma-constant", "0"], "--sigma-constant"),
    (["--stages", "0"], "--stages"),
    (["--baseline-acc", "56.41"], "accuracies are fractions"),
    (["--baseline-acc", "0.6", "--target-acc", "0.5"], "must be above --baseline-acc"),
    (["--targets", "attention"], "--targets: choose from linear, rmsnorm"),
    (["--band-std", "3"], "needs a high-error band"),
])
def test_bad_suite_settings_write_nothing(srdd_scan, tmp_path, capsys, flags, message):
    out, study = tmp_path / "m.yaml", tmp_path / "study"
    assert main(["calibrate", str(srdd_scan), "-o", str(out), "--suite", str(study), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not study.exists()


def test_without_a_band_the_error_says_what_can_give_one(tmp_path, capsys):
    """Three layers, the middle one worst by relative error: no --band-std finds two neighbours above the mean."""
    doc = srdd_doc()
    doc["layers"] = doc["layers"][:3]
    doc["model"]["num_layers"] = 3
    for layer, (rel, sqnr) in zip(doc["layers"], [(0.18, 19.4), (0.24, 18.9), (0.17, 18.9)]):
        layer["block_output"].update(relative_error=rel, sqnr_db=sqnr)
        layer["primary"] = layer["block_output"]
    scan = tmp_path / "scan.json"
    scan.write_text(json.dumps(doc))
    args = ["calibrate", str(scan), "-o", str(tmp_path / "m.yaml"), "--suite", str(tmp_path / "study")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "no --band-std gives one" in err and "--metric sqnr_db" in err and len(err.splitlines()) == 1
    assert main([*args, "--metric", "sqnr_db"]) == 0  # by SQNR, layers 1-2 are the band
    assert json.loads((tmp_path / "study" / "suite.json").read_text())["high_error_zone"] == [1, 2]


def test_a_too_high_band_std_says_what_lower_one_finds(srdd_scan, tmp_path, capsys):
    assert main(["calibrate", str(srdd_scan), "-o", str(tmp_path / "m.yaml"), "--suite", str(tmp_path / "s"),
                 "--band-std", "3"]) == 2
    assert "lower --band-std (at 0 the band is layers" in capsys.readouterr().err


def test_experiments_need_a_band():
    with pytest.raises(SrddError, match="needs a high-error band"):
        experiments(Sigmas(), (), {}, targets=["linear"], exclude=[])


def test_verl_override_prefixes():
    exp = experiments(Sigmas(), (1, 2), {0: 1.0, 1: 1.0, 2: 1.0}, targets=["linear"], exclude=["lora_"])[4]
    lines = verl_overrides(exp, None, "replace")
    assert "~trainer.noise_injection.layer_multipliers" in lines
    assert "+trainer.noise_injection.layer_multipliers={0:1.0,1:1.0,2:1.0}" in lines
    assert "trainer.noise_injection.exclude_patterns=[lora_]" in lines
    assert "trainer.noise_injection.layer_multipliers={0:1.0,1:1.0,2:1.0}" in verl_overrides(exp, None, "assign")
