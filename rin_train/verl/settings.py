"""The settings file that carries a run's quantization and noise into every verl process.

`srdd train --engine verl` writes it into the run directory; `rin_train.verl.plugin`,
imported by verl inside its driver, trainer, FSDP actor and vLLM worker processes,
reads it from the path in `$SRDD_VERL_SETTINGS`. A file (not Hydra overrides) because
upstream verl's config has no place for our settings and refuses unknown keys, and
because vLLM's worker subprocesses never see the Hydra config at all.

The noise section is stored resolved: multipliers inline, never a path to a
multipliers file that a remote worker might not see.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rin_train.noise import NoiseConfig
from rin_train.run_config import RunConfig, section_to_dict
from srdd.errors import SrddError
from srdd.jsonio import write_json_atomic
from srdd.qlinear import LinearQuantConfig

SCHEMA = "srdd.verl_plugin/v1"
SETTINGS_ENV = "SRDD_VERL_SETTINGS"


@dataclass(frozen=True)
class PluginSettings:
    run: str
    seed: int
    total_steps: int
    """grpo.steps: the horizon of the noise schedule (verl's trainer.total_training_steps)."""
    quant: dict
    """format, mode, options, exclude (srdd.qlinear.LinearQuantConfig)."""
    noise: dict
    """rin_train.noise.NoiseConfig as plain data, multipliers inline."""
    noise_log_dir: str
    """Absolute directory where each rollout worker appends the noise it applied (one file per process)."""
    schema: str = field(default=SCHEMA)

    def __post_init__(self) -> None:
        if self.schema != SCHEMA:
            raise SrddError(f"verl plugin settings: schema {self.schema!r}, expected {SCHEMA}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise SrddError(f"verl plugin settings: seed must be an integer >= 0, got {self.seed!r}")
        if isinstance(self.total_steps, bool) or not isinstance(self.total_steps, int) or self.total_steps < 1:
            raise SrddError(f"verl plugin settings: total_steps must be an integer >= 1, got {self.total_steps!r}")
        if set(self.quant) != {"format", "mode", "options", "exclude"}:
            raise SrddError(f"verl plugin settings: quant needs exactly format, mode, options, exclude; "
                            f"got {sorted(self.quant)}")
        if self.noise.get("multipliers_file") is not None:
            raise SrddError("verl plugin settings: noise.multipliers_file must be resolved into layer_multipliers")
        if not Path(self.noise_log_dir).is_absolute():
            raise SrddError(f"verl plugin settings: noise_log_dir must be absolute (workers run elsewhere), "
                            f"got {self.noise_log_dir!r}")
        self.linear_quant()  # validates format, mode, options and exclude patterns
        self.noise_config()  # validates schedule, sigmas, targets and multipliers

    def linear_quant(self) -> LinearQuantConfig:
        q = self.quant
        return LinearQuantConfig(q["format"], q["mode"], dict(q["options"]), tuple(q["exclude"]))

    def noise_config(self) -> NoiseConfig:
        try:
            return NoiseConfig(**self.noise)
        except TypeError as exc:
            raise SrddError(f"verl plugin settings: noise: {exc}") from None

    @classmethod
    def from_run_config(cls, cfg: RunConfig, noise_log_dir: Path) -> PluginSettings:
        # Through JSON once, so the settings equal what a worker reads back (layer keys as strings).
        quant = json.loads(json.dumps(section_to_dict(cfg.quant)))
        noise = json.loads(json.dumps(section_to_dict(cfg.noise)))
        noise["multipliers_file"] = None  # already loaded into layer_multipliers by NoiseConfig
        return cls(run=cfg.name, seed=cfg.seed, total_steps=cfg.grpo.steps,
                   quant={k: quant[k] for k in ("format", "mode", "options", "exclude")},
                   noise=noise, noise_log_dir=str(Path(noise_log_dir).resolve()))

    def write(self, path: Path) -> None:
        write_json_atomic(Path(path), asdict(self))

    @classmethod
    def read(cls, path: str | Path) -> PluginSettings:
        path = Path(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SrddError(f"verl plugin settings {path} does not exist") from None
        except json.JSONDecodeError as exc:
            raise SrddError(f"verl plugin settings {path} is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise SrddError(f"verl plugin settings {path}: expected a JSON object")
        try:
            return cls(**doc)
        except TypeError as exc:
            raise SrddError(f"verl plugin settings {path}: {exc}") from None
