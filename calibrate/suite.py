"""The systematic study as runnable files: rin_train configs, verl overrides, plan.md, suite.json.

Every sigma below is a default the user overrides from the command line. The
verl overrides use Hydra's grammar (dicts as {0:0.83,1:0.9}, lists as [a,b]),
so a dict value can never be mangled by shell quoting into a silent default.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from srdd.errors import SrddError


@dataclass(frozen=True)
class Sigmas:
    baseline: tuple[float, float] = (0.05, 0.0005)
    high: tuple[float, float] = (0.08, 0.001)
    low: tuple[float, float] = (0.03, 0.0003)
    constant: float = 0.03
    conservative: tuple[float, float] = (0.05, 0.005)
    stages: int = 10
    conservative_stages: int = 5

    def __post_init__(self) -> None:
        for name in ("baseline", "high", "low", "conservative"):
            start, end = getattr(self, name)
            if not 0 < end <= start:
                raise SrddError(f"sigma {name}: need 0 < end <= start, got {start} -> {end}")
        if self.constant <= 0 or self.stages < 1 or self.conservative_stages < 1:
            raise SrddError("sigma constant must be > 0 and stage counts >= 1")


@dataclass(frozen=True)
class Experiment:
    name: str
    priority: int
    hypothesis: str
    expected: str
    noise: dict = field(default_factory=dict)


def experiments(s: Sigmas, band: list[int], multipliers: dict[int, float]) -> list[Experiment]:
    base = {"enabled": True, "schedule": "exponential", "sigma_start": s.baseline[0], "sigma_end": s.baseline[1],
            "num_stages": s.stages, "targets": ["linear"], "target_layers": None, "layer_multipliers": None,
            "zone_overrides": []}

    def zone(start: float, end: float) -> list[dict]:
        return [{"name": "high_error", "layers": band, "sigma_start": start, "sigma_end": end}]

    return [
        Experiment("E13i-baseline", 1, "reference: global decaying noise on every layer",
                   "the published baseline accuracy", dict(base)),
        Experiment("E13j-variable", 2, "H3: scan-proportional per-layer sigma beats uniform sigma",
                   "above baseline if the scan predicts sensitivity", {**base, "layer_multipliers": multipliers}),
        Experiment("E13i-targeted", 3, "H1: noise only in the high-error zone beats global noise",
                   "near baseline; below it if other layers need noise", {**base, "target_layers": band}),
        Experiment("E13i-high", 4, "H2: more noise in the high-error zone helps",
                   "above E13i-low if H2 holds", {**base, "zone_overrides": zone(*s.high)}),
        Experiment("E13i-low", 5, "H2 (control): less noise in the high-error zone",
                   "below E13i-high if H2 holds", {**base, "zone_overrides": zone(*s.low)}),
        Experiment("E13k-constant", 6, "H4: a decaying schedule beats constant sigma",
                   "below baseline if decay matters", {**base, "schedule": "constant", "sigma_start": s.constant,
                                                       "sigma_end": s.constant, "num_stages": 1}),
        Experiment("E13l-conservative", 7, "H4: a gentler decay (fewer, larger late sigmas)",
                   "close to baseline", {**base, "sigma_start": s.conservative[0], "sigma_end": s.conservative[1],
                                         "num_stages": s.conservative_stages}),
        Experiment("E13m-rmsnorm", 8, "H5: noise on RMSNorm weights (QeRL AQN) vs on linear weights",
                   "comparable to baseline", {**base, "targets": ["rmsnorm"]}),
    ]


def hydra_value(value) -> str:
    """A value in Hydra's override grammar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    return str(value)


def verl_overrides(exp: Experiment, fmt: str, multipliers_path: str) -> list[str]:
    noise = exp.noise
    prefix = "trainer.noise_injection"
    lines = [f"{prefix}.enabled={hydra_value(noise['enabled'])}",
             f"{prefix}.sigma_start={noise['sigma_start']}",
             f"{prefix}.sigma_end={noise['sigma_end']}",
             f"{prefix}.num_stages={noise['num_stages']}",
             f"{prefix}.schedule={noise['schedule']}",
             f"{prefix}.target_modules={hydra_value(noise['targets'])}",
             f"{prefix}.target_layers={hydra_value(noise['target_layers'])}",
             f"{prefix}.exclude_patterns=[]",
             f"{prefix}.layer_multipliers={hydra_value(noise['layer_multipliers'])}",
             f"{prefix}.zone_overrides={hydra_value(noise['zone_overrides'])}",
             f"{prefix}.multipliers_file={multipliers_path}",
             f"+trainer.quantization.format={fmt}"]
    return lines


def with_multipliers_file(exp: Experiment, path: str) -> Experiment:
    """The rin_train config of E13j can point at the YAML instead of inlining the multipliers."""
    noise = {**exp.noise, "layer_multipliers": None, "multipliers_file": path}
    return replace(exp, noise=noise)


def plan_markdown(exps: list[Experiment], band: list[int], baseline_acc: float | None,
                  target_acc: float | None) -> str:
    lines = ["# Noise-injection study plan", "",
             f"High-error zone (from the scan): layers {band[0]}-{band[-1]}." if band else "No high-error zone found.",
             "", "Run each experiment with at least 3 seeds: single-seed differences are not findings.", ""]
    if baseline_acc is not None and target_acc is not None:
        gap = target_acc - baseline_acc
        lines += [f"Baseline accuracy {baseline_acc:.4f}, target {target_acc:.4f} (gap {gap:.4f}). "
                  f"Success: closes >= 50 % of the gap (accuracy >= {baseline_acc + gap / 2:.4f}) "
                  "with the difference outside the seed spread.", ""]
    elif baseline_acc is not None:
        lines += [f"Baseline accuracy {baseline_acc:.4f}. Success: beats it by more than the seed spread.", ""]
    lines += ["| priority | experiment | hypothesis | expected |", "|---|---|---|---|"]
    lines += [f"| {e.priority} | {e.name} | {e.hypothesis} | {e.expected} |" for e in sorted(exps, key=lambda e: e.priority)]
    return "\n".join(lines) + "\n"
