"""The systematic noise study as runnable files.

For every experiment: `<name>.yaml`, a partial rin_train run config (only
`name`, `quant` and `noise`; `srdd train` fills every other key with its default,
see rin_train.run_config, and refuses unknown keys) -- what both rin_train engines
read, `srdd train <name>.yaml --engine verl` included (upstream verl gets the noise
through rin_train's verl plugin settings, not its Hydra config) -- and
`<name>.overrides`, the same noise settings as command-line overrides for the
published verl fork's `trainer.noise_injection` config, one per line, in Hydra's
override grammar (dicts as {0:0.83,1:0.89}, lists as [10,11], null) -- so a
dict can never be mangled into a string or a silent default. No override adds
a key the verl config lacks (no `++`, and `+` only right after `~` deletes the
same key): a key the verl side does not know fails loudly instead of being
ignored.
Plus `plan.md` (priority order, hypotheses, expected ranges, success
thresholds) and `suite.json` (the same, machine-readable, for `srdd correlate`).

Every sigma is a default from the published plan that the user overrides from
the command line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal

from srdd.errors import SrddError

VERL_PREFIX = "trainer.noise_injection"
SUITE_SCHEMA = "srdd.suite/v1"
MAX_RELATIVE_SIGMA = 1.0  # rin_train refuses sigma above the weight RMS (DESIGN.md lesson 4)


@dataclass(frozen=True)
class Sigmas:
    baseline: tuple[float, float] = (0.05, 0.0005)
    stages: int = 10
    high: tuple[float, float] = (0.08, 0.001)
    low: tuple[float, float] = (0.03, 0.0003)
    constant: float = 0.03
    conservative: tuple[float, float] = (0.05, 0.005)
    conservative_stages: int = 5

    def __post_init__(self) -> None:
        for name, flag in (("baseline", "--sigma"), ("high", "--sigma-high"), ("low", "--sigma-low"),
                           ("conservative", "--sigma-conservative")):
            start, end = getattr(self, name)
            if not 0 < end <= start <= MAX_RELATIVE_SIGMA:
                raise SrddError(f"{flag}: need 0 < end <= start <= {MAX_RELATIVE_SIGMA} (sigma relative to the "
                                f"weight RMS), got {start},{end}")
        if not 0 < self.constant <= MAX_RELATIVE_SIGMA:
            raise SrddError(f"--sigma-constant: need 0 < sigma <= {MAX_RELATIVE_SIGMA}, got {self.constant}")
        if self.stages < 1 or self.conservative_stages < 1:
            raise SrddError("--stages and --conservative-stages must be >= 1")


@dataclass(frozen=True)
class Hypothesis:
    key: str
    question: str
    treatment: str
    control: str
    differs_in: tuple[str, ...]  # the only config keys the two runs may differ in

    def to_dict(self) -> dict:
        return {"key": self.key, "question": self.question, "treatment": self.treatment, "control": self.control,
                "differs_in": list(self.differs_in)}

    @classmethod
    def from_dict(cls, doc: object, where: str) -> Hypothesis:
        """One hypothesis as suite.json records it (`to_dict`); SrddError names what is wrong, and where."""
        fields = ("key", "question", "treatment", "control")
        if not isinstance(doc, dict) or not all(isinstance(doc.get(f), str) and doc[f] for f in fields):
            raise SrddError(f"{where}: a hypothesis needs the strings {', '.join(fields)}, got {str(doc)[:80]}")
        keys = doc.get("differs_in")
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) and k for k in keys):
            raise SrddError(f"{where}: hypothesis {doc['key'][:20]!r} needs differs_in, a list of config keys")
        return cls(doc["key"], doc["question"], doc["treatment"], doc["control"], tuple(keys))


HYPOTHESES = (
    Hypothesis("H1", "global noise beats noise targeted at the high-error zone", "E13i-baseline", "E13i-targeted",
               ("noise.target_layers",)),
    Hypothesis("H2", "higher sigma in the high-error zone beats lower sigma there", "E13i-high", "E13i-low",
               ("noise.zone_overrides",)),
    Hypothesis("H3", "scan-proportional per-layer sigma (variable) beats one sigma for all layers (constant)",
               "E13j-variable", "E13i-baseline", ("noise.layer_multipliers", "noise.multipliers_file")),
    Hypothesis("H4", "a decaying schedule beats constant sigma", "E13i-baseline", "E13k-constant",
               ("noise.schedule", "noise.sigma_start", "noise.sigma_end", "noise.num_stages")),
    Hypothesis("H4b", "the published fast decay beats a conservative decay", "E13i-baseline", "E13l-conservative",
               ("noise.sigma_start", "noise.sigma_end", "noise.num_stages")),
    Hypothesis("H5", "noise on RMSNorm weights (QeRL AQN) beats noise on linear weights", "E13m-rmsnorm",
               "E13i-baseline", ("noise.targets",)),
)
"""The hypotheses reports have always tested: every suite.json records them, and a report of a suite.json
written before suites recorded hypotheses tests these."""

CONTROL = "control"
"""The no-noise arm `srdd study run` adds to every suite: E13i-baseline with noise.enabled false
(rin_train.study.settings.control_config), so it differs from E13i-baseline in that key alone."""

ARM_VS_CONTROL = (
    Hypothesis("C1", "noise on the linear weights changes the merged final accuracy against no noise",
               "E13i-baseline", CONTROL, ("noise.enabled",)),
    Hypothesis("C2", "noise on the RMSNorm weights (QeRL AQN) changes the merged final accuracy against no noise",
               "E13m-rmsnorm", CONTROL, ("noise.enabled", "noise.targets")),
    Hypothesis("C3", "scan-guided per-layer sigma (variable) changes the merged final accuracy against one sigma "
               "for all layers (the comparison of H3)", "E13j-variable", "E13i-baseline",
               ("noise.layer_multipliers", "noise.multipliers_file")),
)
"""A confirmatory family: each noise against none, and the scan's guidance against none. A study declares
it (`srdd study run --hypotheses C1,C2,C3`) before its first run; a report then Holm-adjusts across these
three and labels every other hypothesis exploratory."""

SUITE_HYPOTHESES = HYPOTHESES + ARM_VS_CONTROL
"""What `srdd calibrate --suite` writes into plan.md and suite.json."""


@dataclass(frozen=True)
class Experiment:
    name: str
    priority: int
    tests: tuple[str, ...]
    change: str                      # what differs from E13i-baseline
    expected: str
    expected_gap: tuple[float, float]  # prior, as fractions of (target - baseline), from the published plan
    noise: dict = field(default_factory=dict)


def experiments(s: Sigmas, band: tuple[int, ...], multipliers: dict[int, float], *, targets: list[str],
                exclude: list[str]) -> list[Experiment]:
    if not band:
        raise SrddError("--suite needs a high-error band (E13i-targeted/high/low perturb it) and this scan has "
                        "none at the current --band-std; lower --band-std")
    layers = list(band)
    base = {"enabled": True, "targets": list(targets), "schedule": "exponential",
            "sigma_start": s.baseline[0], "sigma_end": s.baseline[1], "num_stages": s.stages,
            "warmup_stage": False, "sigma_mode": "relative", "target_layers": None,
            "exclude_patterns": list(exclude), "layer_multipliers": None, "zone_overrides": []}

    def zone(start: float, end: float) -> list[dict]:
        return [{"name": "high_error", "layers": layers, "sigma_start": start, "sigma_end": end}]

    span = f"{layers[0]}-{layers[-1]}"
    return [
        Experiment("E13i-baseline", 1, ("H1", "H3", "H4", "H4b", "H5", "C1", "C3"),
                   f"reference: sigma {s.baseline[0]}->{s.baseline[1]} over {s.stages} stages on every layer",
                   "improves on the no-noise run", (0.36, 0.80), dict(base)),
        Experiment("E13i-targeted", 2, ("H1",), f"noise only on the high-error band {span}",
                   "near E13i-baseline; below it if the other layers need noise too", (0.13, 0.58),
                   {**base, "target_layers": layers}),
        Experiment("E13i-high", 3, ("H2",), f"band {span}: sigma {s.high[0]}->{s.high[1]}, others baseline",
                   "above E13i-low if high-error layers need more noise (escape)", (0.36, 0.80),
                   {**base, "zone_overrides": zone(*s.high)}),
        Experiment("E13i-low", 4, ("H2",), f"band {span}: sigma {s.low[0]}->{s.low[1]}, others baseline",
                   "above E13i-high if quantization error is already enough noise there", (0.36, 0.80),
                   {**base, "zone_overrides": zone(*s.low)}),
        Experiment("E13j-variable", 5, ("H3", "C3"), "per-layer multipliers from the scan (layer_multipliers)",
                   "above E13i-baseline if the scan predicts where noise helps", (0.58, 1.03),
                   {**base, "layer_multipliers": dict(multipliers)}),
        Experiment("E13m-rmsnorm", 6, ("H5", "C2"), "noise on RMSNorm weights instead of linear weights",
                   "comparable to E13i-baseline; below it if W4A4 needs noise where it quantizes", (0.13, 0.58),
                   {**base, "targets": ["rmsnorm"]}),
        Experiment("E13l-conservative", 7, ("H4b",),
                   f"sigma {s.conservative[0]}->{s.conservative[1]} over {s.conservative_stages} stages",
                   "close to E13i-baseline; above it if W4A4 needs sustained noise", (0.13, 0.58),
                   {**base, "sigma_start": s.conservative[0], "sigma_end": s.conservative[1],
                    "num_stages": s.conservative_stages}),
        Experiment("E13k-constant", 8, ("H4",), f"constant sigma {s.constant} throughout",
                   "below E13i-baseline if decay matters", (-0.54, 0.13),
                   {**base, "schedule": "constant", "sigma_start": s.constant, "sigma_end": s.constant,
                    "num_stages": 1}),
    ]


# --- Hydra override grammar -----------------------------------------------------------------------

_UNQUOTED = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./\-]*$")
_RESERVED = {"true", "false", "null", "nan", "inf"}


def hydra_value(value) -> str:
    """A value in Hydra's override grammar (parsed back by OverridesParser to the same Python value)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (float, Decimal)):
        x = float(value)
        if x != x or x in (float("inf"), float("-inf")):
            raise SrddError(f"non-finite value {value!r} in a verl override")
        return repr(x)
    if isinstance(value, str):
        if _UNQUOTED.match(value) and value.lower() not in _RESERVED:
            return value
        # Hydra: a backslash is literal unless it precedes a quote (escaped or closing); double those only
        body = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
        body = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, body)
        return "'" + body + "'"
    if isinstance(value, dict):
        return "{" + ",".join(f"{hydra_key(k)}:{hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    raise SrddError(f"cannot write {value!r} as a verl override")


def hydra_key(key) -> str:
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise SrddError(f"dict key {key!r} cannot be written as a verl override")
    if isinstance(key, str) and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
        raise SrddError(f"dict key {key!r} cannot be written as a verl override")
    return str(key)


DICT_STYLES = ("replace", "assign")


def verl_overrides(exp: Experiment, multipliers_path: str | None, dict_style: str = "replace") -> list[str]:
    """The experiment's noise section as trainer.noise_injection.* overrides.

    `target_modules` carries rin_train's target kinds (linear | rmsnorm).
    `use_variable_sigma` is set for the published fork, whose injector ignores
    layer_multipliers unless it is true. With `multipliers_path`, layer_multipliers
    is the path of the srdd.noise/v1 YAML instead of an inline dict.

    Hydra merges a dict override into a dict already in the config: in struct
    mode `key={0:0.83}` over `layer_multipliers: {}` fails ("Key '0' is not in
    struct"), and `++key=` would keep stale entries. `dict_style="replace"`
    (for a verl config that declares `layer_multipliers: {}`, as the published
    fork does) deletes the node and adds the new value (`~key` then `+key=...`);
    `"assign"` (for a config that declares it `null`) writes `key=...`. Both
    fail loudly when the verl config lacks the key.
    """
    if dict_style not in DICT_STYLES:
        raise SrddError(f"verl dict style must be one of {DICT_STYLES}, got {dict_style!r}")
    n = exp.noise
    mults = n["layer_multipliers"]
    if mults is not None and multipliers_path is not None:
        mults = multipliers_path
    pairs = [("enabled", n["enabled"]), ("sigma_start", n["sigma_start"]), ("sigma_end", n["sigma_end"]),
             ("num_stages", n["num_stages"]), ("schedule", n["schedule"]), ("warmup_stage", n["warmup_stage"]),
             ("sigma_mode", n["sigma_mode"]), ("target_modules", n["targets"]),
             ("target_layers", n["target_layers"]), ("exclude_patterns", n["exclude_patterns"]),
             ("use_variable_sigma", n["layer_multipliers"] is not None), ("layer_multipliers", mults),
             ("zone_overrides", n["zone_overrides"])]
    lines = []
    for key, value in pairs:
        if key == "layer_multipliers" and value is not None and dict_style == "replace":
            lines += [f"~{VERL_PREFIX}.{key}", f"+{VERL_PREFIX}.{key}={hydra_value(value)}"]
        else:
            lines.append(f"{VERL_PREFIX}.{key}={hydra_value(value)}")
    return lines


def rin_train_config(exp: Experiment, fmt: str, multipliers_file: str | None) -> dict:
    """A partial rin_train run config; with `multipliers_file`, E13j points at the YAML instead of inlining."""
    noise = dict(exp.noise)
    if noise["layer_multipliers"] is not None and multipliers_file is not None:
        noise["layer_multipliers"] = None
        noise["multipliers_file"] = multipliers_file
    return {"name": exp.name, "quant": {"format": fmt, "mode": "w4a4"}, "noise": noise}


# --- accuracy thresholds ----------------------------------------------------------------------------

GAP_LEVELS = (("marginal", 0.25), ("success", 0.5), ("strong", 0.75), ("closes the gap", 1.0))


def check_accuracies(baseline: float | None, target: float | None) -> None:
    for flag, value in (("--baseline-acc", baseline), ("--target-acc", target)):
        if value is not None and not 0 <= value <= 1:
            raise SrddError(f"{flag}: accuracies are fractions 0..1, got {value} (write 0.5641, not 56.41)")
    if baseline is not None and target is not None and target <= baseline:
        raise SrddError(f"--target-acc {target} must be above --baseline-acc {baseline}")


VERDICT_RULE = ("each hypothesis is tested across seeds, the seeds being the replicates: supported or refuted "
                "(the sign says which) with >= 3 seeds per arm and a Holm-adjusted p < 0.05; equivalent within "
                "±m when two one-sided tests (TOST) reject a difference beyond the margin m; inconclusive otherwise")
"""How `srdd correlate` turns a hypothesis's runs into a verdict (reports.verdicts), said where a plan is read."""


def thresholds(baseline: float | None, target: float | None) -> dict:
    out: dict = {"baseline_acc": baseline, "target_acc": target, "gap": None, "levels": None,
                 "rule": VERDICT_RULE}
    if baseline is not None and target is not None:
        gap = target - baseline
        out["gap"] = round(gap, 6)
        out["levels"] = {name: round(baseline + f * gap, 6) for name, f in GAP_LEVELS}
    return out


def expected_accuracy(exp: Experiment, baseline: float | None, target: float | None) -> list[float] | None:
    if baseline is None or target is None:
        return None
    gap = target - baseline
    return [round(baseline + f * gap, 4) for f in exp.expected_gap]


# --- plan.md and suite.json ------------------------------------------------------------------------

def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def plan_markdown(exps: list[Experiment], *, band: tuple[int, ...], band_summary: str, source: str,
                  metric: str, mode: str, multipliers_file: str, baseline: float | None,
                  target: float | None, fmt: str, suite_dir: str, dict_style: str) -> str:
    dict_note = ("as a mapping (`layer_multipliers: {}`, as the published fork does): `~key` then `+key={...}` "
                 "replaces it whole; for a config that declares it `null`, rerun with --verl-dicts assign"
                 if dict_style == "replace" else
                 "`null` (`key={...}` assigns it); for a config that declares it `{}`, rerun with "
                 "--verl-dicts replace")
    th = thresholds(baseline, target)
    lines = ["# Noise-injection study plan", "",
             f"Scan: `{source}`. Multipliers: `{multipliers_file}` ({metric}, {mode}). Format: {fmt} W4A4.",
             f"High-error band: layers {band[0]}-{band[-1]} ({band_summary}).", "",
             "## Accuracy references", ""]
    if th["levels"]:
        lv = th["levels"]
        lines += [f"- baseline (quantized run without noise): {_pct(baseline)}; target: {_pct(target)}; "
                  f"gap {100 * th['gap']:.2f} points.",
                  f"- success thresholds (share of the gap closed): marginal >= {_pct(lv['marginal'])} (25 %), "
                  f"success >= {_pct(lv['success'])} (50 %), strong >= {_pct(lv['strong'])} (75 %), "
                  f"closes the gap >= {_pct(lv['closes the gap'])}."]
    elif baseline is not None:
        lines += [f"- baseline (quantized run without noise): {_pct(baseline)}. Success: beat it with a "
                  "supported verdict (below). (Give --target-acc for gap-based thresholds.)"]
    elif target is not None:
        lines += [f"- target: {_pct(target)}. Success: reach it with a supported "
                  "verdict (below). (Give --baseline-acc for gap-based thresholds.)"]
    else:
        lines += ["- none given (--baseline-acc / --target-acc); success = beating E13i-baseline with a "
                  "supported verdict (below)."]
    lines += ["- run every experiment with >= 3 seeds: with fewer, every verdict of `srdd correlate` is "
              "'inconclusive'.", "",
              "## Experiments, in priority order", "",
              "| # | experiment | tests | change vs E13i-baseline | expected | expected accuracy |",
              "|---|---|---|---|---|---|"]
    for e in sorted(exps, key=lambda e: e.priority):
        acc = expected_accuracy(e, baseline, target)
        lo, hi = e.expected_gap
        acc_s = f"{_pct(acc[0])} - {_pct(acc[1])}" if acc else f"{lo:+.2f} to {hi:+.2f} of the gap"
        lines.append(f"| {e.priority} | {e.name} | {', '.join(e.tests)} | {e.change} | {e.expected} | {acc_s} |")
    lines += ["", "Expected ranges are priors taken from the published plan (as shares of the baseline-target gap), "
              "not predictions of this tool.", "", "## Hypotheses", "",
              "| key | question | treatment | control | the runs may differ only in |", "|---|---|---|---|---|"]
    lines += [f"| {h.key} | {h.question} | {h.treatment} | {h.control} | {', '.join(h.differs_in)} |"
              for h in SUITE_HYPOTHESES]
    lines += ["", f"`{CONTROL}` is the no-noise arm `srdd study run` adds: E13i-baseline with `noise.enabled: false`. "
              "A confirmatory study declares its family before the first run (`srdd study run ... --hypotheses "
              "C1,C2,C3`): the report Holm-adjusts across it and labels every other hypothesis exploratory. "
              "Without a declaration, every hypothesis above is one family.",
              "", f"Verdicts (`srdd correlate`): {VERDICT_RULE}. The report gives each difference with its 95 % CI, "
              "p-value and the smallest difference the seeds could detect.", "", "## Running", "",
              "rin_train (one file per experiment; add `--set seed=N` per seed):", "", "```bash"]
    lines += [f"srdd train {suite_dir}/{e.name}.yaml --out runs/{e.name}-s0 --set seed=0"
              for e in sorted(exps, key=lambda e: e.priority)]
    lines += ["```", "", "upstream verl (0.9.1; rin_train's verl plugin applies the same yaml's quantization and "
              "noise inside verl's actor and vLLM rollout; `--launch` runs it, without it the command is written "
              "to `runs/<name>/verl_command.sh`):", "", "```bash"]
    lines += [f"srdd train {suite_dir}/{e.name}.yaml --engine verl --out runs/{e.name}-verl-s0 --set seed=0"
              for e in sorted(exps, key=lambda e: e.priority)]
    lines += ["```", "", "the published verl fork (its `trainer.noise_injection` config; upstream verl has no such key "
              "and refuses these overrides): one override per line in `<name>.overrides`; keep each line one "
              "argument:", "",
              "```bash", f"mapfile -t NOISE < {suite_dir}/E13j-variable.overrides",
              "python3 -m verl.trainer.main_ppo <your data/model/quantization overrides> \"${NOISE[@]}\"", "```", "",
              "Notes for the verl side:", "",
              "- `target_modules` holds rin_train's target kinds (linear | rmsnorm); `sigma_mode: relative` means "
              "sigma is a fraction of each weight's RMS. The verl side must read them that way.",
              "- `use_variable_sigma` is set for the published fork, which ignores `layer_multipliers` without it.",
              f"- `layer_multipliers` is written for a verl config that declares it {dict_note}.",
              "- No override adds a key the verl config lacks, so a missing key stops the run instead of being "
              "silently dropped (the published study lost runs that way).",
              "- The published fork's schedule gives sigma = 0 for num_stages = 1: run E13k-constant only where "
              "`schedule: constant` is implemented.", ""]
    return "\n".join(lines)


def suite_document(exps: list[Experiment], *, created: str, source: dict, multipliers: dict, band: tuple[int, ...],
                   baseline: float | None, target: float | None, fmt: str) -> dict:
    return {
        "schema": SUITE_SCHEMA,
        "created": created,
        "source": source,
        "multipliers": multipliers,
        "quant": {"format": fmt, "mode": "w4a4"},
        "high_error_zone": list(band),
        "thresholds": thresholds(baseline, target),
        "hypotheses": [h.to_dict() for h in SUITE_HYPOTHESES],
        "experiments": [{"name": e.name, "priority": e.priority, "tests": list(e.tests), "change": e.change,
                         "config": f"{e.name}.yaml", "verl_overrides": f"{e.name}.overrides",
                         "expected": e.expected, "expected_gap_fraction": list(e.expected_gap),
                         "expected_accuracy": expected_accuracy(e, baseline, target), "noise": e.noise}
                        for e in sorted(exps, key=lambda e: e.priority)],
    }
