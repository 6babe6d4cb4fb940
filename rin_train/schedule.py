"""Noise schedules: sigma as a function of the training step.

`num_stages` equal intervals cover the run; each interval holds one sigma.
exponential decays geometrically sigma_start -> sigma_end over the stages,
linear decays arithmetically, constant holds sigma_start. `warmup_stage`
reproduces QeRL's variant: the first interval is sigma = 0 and the remaining
K-1 intervals decay (K = 1 is then a single zero stage, refused; K = 2 is one
zero stage and one at sigma_start — both broke in the original code).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from srdd.errors import SrddError


class Schedule(str, enum.Enum):
    EXPONENTIAL = "exponential"
    LINEAR = "linear"
    CONSTANT = "constant"


@dataclass(frozen=True)
class SigmaSchedule:
    kind: Schedule = Schedule.EXPONENTIAL
    sigma_start: float = 0.05
    sigma_end: float = 0.0005
    num_stages: int = 10
    warmup_stage: bool = False

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", Schedule(self.kind))
        except ValueError:
            raise SrddError(f"noise.schedule must be one of {[s.value for s in Schedule]}, got {self.kind!r}") from None
        for name in ("sigma_start", "sigma_end"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise SrddError(f"noise.{name} must be a finite number >= 0, got {v!r}")
        if isinstance(self.num_stages, bool) or not isinstance(self.num_stages, int) or self.num_stages < 1:
            raise SrddError(f"noise.num_stages must be an integer >= 1, got {self.num_stages!r}")
        if self.kind is not Schedule.CONSTANT and self.sigma_end > self.sigma_start:
            raise SrddError(f"noise: sigma_end {self.sigma_end} > sigma_start {self.sigma_start} with a "
                            f"{self.kind.value} schedule; a decay must decrease")
        if self.kind is Schedule.EXPONENTIAL and self.sigma_end == 0 and self.decay_stages > 1:
            raise SrddError("noise: an exponential decay cannot reach sigma_end = 0; use linear or sigma_end > 0")
        if self.warmup_stage and self.num_stages < 2:
            raise SrddError("noise.warmup_stage needs num_stages >= 2 (one zero stage plus at least one noisy stage)")

    @property
    def decay_stages(self) -> int:
        return self.num_stages - 1 if self.warmup_stage else self.num_stages

    def stage_sigmas(self) -> list[float]:
        k = self.decay_stages
        if self.kind is Schedule.CONSTANT or k == 1:
            values = [self.sigma_start] * k
        elif self.kind is Schedule.EXPONENTIAL:
            ratio = (self.sigma_end / self.sigma_start) ** (1 / (k - 1))
            values = [self.sigma_start * ratio**i for i in range(k)]
        else:
            values = [self.sigma_start + (self.sigma_end - self.sigma_start) * i / (k - 1) for i in range(k)]
        return ([0.0] if self.warmup_stage else []) + values

    def sigma_at(self, step: int, total_steps: int) -> float:
        if total_steps < 1:
            raise SrddError(f"total_steps must be >= 1, got {total_steps}")
        stage = min(int(step * self.num_stages / total_steps), self.num_stages - 1)
        return self.stage_sigmas()[max(stage, 0)]
