"""Presets are versioned: a new default is a new version, and the committed study keeps running its own."""

import json
from pathlib import Path

import pytest

from rin_train.presets import PRESET_VERSIONS, pinned, preset, preset_names
from rin_train.run_config import config_for_resume, load_run_config
from rin_train.study.settings import build_settings, load_settings
from srdd.errors import SrddError

STUDY = Path(__file__).resolve().parents[2] / "studies" / "smollm2"


def test_a_name_is_the_latest_version_and_name_at_n_is_version_n():
    assert preset("demo") == preset(f"demo@{len(PRESET_VERSIONS['demo'])}")
    assert preset("demo")["grpo"]["micro_batch_size"] == 4
    assert "micro_batch_size" not in preset("demo@1")["grpo"]
    assert preset("demo")["grpo"]["shared_prompt"] is True
    assert "shared_prompt" not in preset("demo@2")["grpo"]
    assert {"demo", "demo@1", "demo@2", "demo@3", "learn@1"} <= set(preset_names())
    for bad in ("demo@0", "demo@4", "demo@x", "nope"):
        with pytest.raises(SrddError, match="unknown preset"):
            preset(bad)


def test_pinning_keeps_a_recorded_version_and_reads_an_unversioned_record_as_version_1():
    assert pinned("demo") == "demo@3"
    assert pinned("demo", recorded="demo") == "demo@1"  # recorded before presets had versions
    assert pinned("demo", recorded="demo@1") == "demo@1"
    assert pinned("demo", recorded="learn@1") == "demo@3"
    assert pinned("demo@2", recorded="demo@1") == "demo@2"  # an explicit version is what was asked for
    assert pinned(None) is None


def test_the_committed_study_command_still_runs_what_its_runs_recorded(tmp_path):
    """`srdd study run ... --preset demo` on the committed runs directory pins demo@1, and every arm's config
    resolved from it equals the config its seed-0 run recorded in run.json, key for key (and is not what
    the latest demo preset would run)."""
    runs = STUDY / "runs"
    recorded = load_settings(runs)
    assert recorded.preset == "demo@1"
    settings, _ = build_settings(STUDY / "suite", runs, recorded.seeds, recorded.sets, "demo")
    assert settings.identity() == recorded.identity()
    latest, _ = build_settings(STUDY / "suite", tmp_path / "new", recorded.seeds, recorded.sets, "demo")
    assert latest.preset == "demo@3"
    for arm in settings.arms:
        config = (runs / "_study" / "control.yaml") if arm.name == "control" else STUDY / "suite" / f"{arm.name}.yaml"
        run_json = json.loads((runs / f"{arm.name}-s0" / "run.json").read_text())
        cfg = load_run_config(config, [*settings.sets, "seed=0", "engine=trl"], preset=preset(settings.preset),
                              name=f"{arm.name}-s0")
        # read through config_for_resume: runs recorded before a key existed lack it (and ran its default)
        assert cfg.to_dict() == config_for_resume(run_json["config"]).to_dict(), arm.name
