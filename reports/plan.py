"""`srdd study plan`: from a pilot's runs, the seeds and test-set sizes a study needs, and what they cost.

A study is sized before it runs (DESIGN.md lesson 13). The pilot gives the variance components
of a final accuracy, arm by arm:

- seed block: what a seed does to every arm alike (it cancels in the arm + seed analysis);
- run: what is left of one run once the seed is accounted for, split into the part more test
  problems cannot remove (training noise) and the problem part, which shrinks as 1/m with the
  test-set size m. The problem part is measured from per-problem outcomes (the run x problem
  interaction of correctness, reports.outcomes) when every run has them; otherwise it is only
  bounded, by p(1-p)/m, and the plan shows both ends: the bound (larger test sets help most)
  and none (only seeds help).

For an effect (pp), the family's hypotheses (Holm: the strictest level alpha/K) and the analysis,
the power of each design is simulated through the analysis' own code (reports.power), and for
each test-set size the plan gives the fewest seeds per arm that reach 80 % power on every
hypothesis, with the wall time the pilot's own timings say it costs. The family is the one a
report of the study would adjust across (reports.settings.declared_family): the given keys, else
the pilot study's declared family, else every hypothesis of its suite.

In statsmodels.stats.power's terms: it solves for nobs1 (seeds per arm; ratio 1, every arm runs
the same seeds) given effect_size (here unstandardized, in pp: the pilot gives the spread), alpha
(0.05, family-wise under Holm) and power (0.8), two-sided.
"""

from __future__ import annotations

import functools
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from calibrate.suite import Hypothesis
from reports.outcomes import ProblemOutcomes, final_outcomes
from reports.blocked import arm_variances, pooled_variance
from reports.compare import ALPHA, MIN_SEEDS, POWER, Method
from reports.power import simulate_null
from reports.runs import Group, RunRecord, group_runs, load_run, load_runs, run_dirs
from reports.settings import declared_family
from reports.verdicts import choose_method, find_group, seeds_of
from srdd.errors import SrddError

SIZES = (64, 128, 256, 512, 1024)
PLAN_DRAWS = 10_000
"""Simulated studies per design: Monte-Carlo sd of a power near 0.8 about 0.004."""
ANALYSES = (Method.BLOCKED.value, Method.POOLED.value, Method.WELCH.value)


@dataclass(frozen=True)
class Components:
    """Variance components of final accuracy (fractions squared), at the pilot's test-set size."""

    arms: list[str]
    seeds: list[int]
    test_size: int
    seed_variance: float
    residual: dict[str, float]
    """Each arm's residual variance once the seed block is removed (reports.blocked.arm_variances)."""
    problem: dict[str, float]
    """Each arm's problem part of it: measured, or its upper bound min(p(1-p)/m, residual)."""
    problem_measured: bool
    note: str

    def __post_init__(self) -> None:
        if self.test_size < 1 or self.seed_variance < 0:
            raise ValueError("a test set has >= 1 problem and a variance is >= 0")
        if set(self.residual) != set(self.arms) or set(self.problem) != set(self.arms):
            raise ValueError("every arm needs a residual variance and a problem part")

    def variances(self, test_size: int, with_problem_part: bool) -> np.ndarray:
        """Residual variance of each arm at another test-set size (the problem part scales as m0/m)."""
        out = []
        for arm in self.arms:
            part = self.problem[arm] if with_problem_part else 0.0
            out.append(self.residual[arm] - part + part * self.test_size / test_size)
        return np.array(out)


@dataclass(frozen=True)
class Timing:
    """Seconds a run costs, read from the pilot's metrics.jsonl (step_s) and run.json (wall_time_s)."""

    step_s: float
    problem_s: float
    overhead_s: float
    steps: int
    endpoint_evaluations: int
    """The final step's evaluations on the endpoint's test set: the ones a larger test set makes dearer."""
    other_problems: int
    """Problems of every other evaluation (the intermediate validations, and the final separate-LoRA one
    under eval.endpoint_only): they keep the pilot's size whatever the endpoint's (eval.final_samples)."""
    source: str

    def run_seconds(self, test_size: int) -> float:
        problems = self.endpoint_evaluations * test_size + self.other_problems
        return self.steps * self.step_s + problems * self.problem_s + self.overhead_s


@dataclass(frozen=True)
class Design:
    scenario: str
    test_size: int
    seeds: int | None
    """Fewest seeds per arm with >= 80 % power on every hypothesis; None: not within --max-seeds."""
    power: float | None
    powers: dict[str, float] = field(default_factory=dict)
    hours: float | None = None


def _outcomes(run: RunRecord) -> ProblemOutcomes | None:
    """The run's final per-problem outcomes, or None (runs from before eval_outcomes.jsonl, verl runs without
    validation dumps)."""
    return final_outcomes(run.path, run.accuracy_kind)


def _problem_parts(groups: list[Group], test_size: int, residual: dict[str, float]) -> tuple[dict, bool, str]:
    """Measured problem part per arm (run x problem interaction / m), or the p(1-p)/m bound, and what was done."""
    outcomes = {g.name: [_outcomes(r) for r in g.runs] for g in groups}
    if all(o is not None for runs in outcomes.values() for o in runs):
        parts = {}
        for arm, runs in outcomes.items():
            x = np.stack([np.asarray(o.strict, float) for o in runs])
            inter = x - x.mean(1, keepdims=True) - x.mean(0) + x.mean()
            ms = (inter**2).sum() / ((x.shape[0] - 1) * (x.shape[1] - 1))
            parts[arm] = min(ms / x.shape[1], residual[arm])
        return parts, True, "measured: the run x problem interaction of per-problem outcomes (eval_outcomes.jsonl)"
    parts = {g.name: min(g.mean * (1 - g.mean) / test_size, residual[g.name]) for g in groups}
    return parts, False, ("bounded, not measured: the runs keep no per-problem outcomes, so the problem part is "
                          f"only known to be at most p(1-p)/{test_size}; the plan shows that bound and none")


def estimate(runs: list[RunRecord], hypotheses: Sequence[Hypothesis]
             ) -> tuple[Components, list[tuple[int, int]], list[RunRecord]]:
    """The family's arms, their variance components, the hypotheses as (treatment, control) arm indices, and the
    family's runs."""
    groups = group_runs([r for r in runs if r.valid])
    pairs_named = []
    for h in hypotheses:
        t, c = find_group(groups, h.treatment), find_group(groups, h.control)
        if t is None or c is None:
            raise SrddError(f"{h.key} needs arms {h.treatment} and {h.control}; the pilot has "
                            f"{', '.join(g.name for g in groups)}")
        pairs_named.append((t, c))
    family = list({g.name: g for pair in pairs_named for g in pair}.values())
    names = [g.name for g in family]
    pairs = [(names.index(t.name), names.index(c.name)) for t, c in pairs_named]
    seeds = [seeds_of(g) for g in family]
    method, why = choose_method(seeds, "auto")
    if method is not Method.BLOCKED or len(seeds[0]) < 2:
        raise SrddError(f"the pilot's arms cannot be read as seed blocks ({why}); a pilot for the planner runs "
                        "every arm with the same seeds (>= 2)")
    y = np.stack([np.asarray(g.accuracies, float)[np.argsort(s)] for g, s in zip(family, seeds)])
    pooled, _ = pooled_variance(y)
    seed_ms = y.shape[0] * np.var(y.mean(0), ddof=1)
    residual = dict(zip(names, map(float, arm_variances(y))))
    sizes = {r.test_size for g in family for r in g.runs}
    if len(sizes) != 1 or None in sizes:
        raise SrddError(f"the pilot's runs were evaluated on different or unrecorded test-set sizes: {sizes}")
    test_size = sizes.pop()
    problem, measured, note = _problem_parts(family, test_size, residual)
    return Components(arms=names, seeds=sorted(seeds[0]), test_size=test_size,
                      seed_variance=float(max(0.0, (seed_ms - pooled) / y.shape[0])), residual=residual,
                      problem=problem, problem_measured=measured, note=note), pairs, [r for g in family for r in g.runs]


def _median(values: list[float], what: str) -> float:
    if not values:
        raise SrddError(f"the pilot's metrics.jsonl record no {what}: no timings to plan with")
    return float(statistics.median(values))


def timing(runs: list[RunRecord], arms: Sequence[str] = ()) -> Timing:
    """What a run of each of `arms` costs, averaged over them, so that arms x one run is what one seed of every
    arm costs: arms differ (noise on RMSNorm weights hooks the rollout's forward, which then prefills every copy
    of a prompt and measures its effective sigma there), and each arm with runs here is priced by its own, any
    other by all of them (`arms` empty: all of them)."""
    pooled = _timing(runs)
    own = {arm: _timing([r for r in runs if r.group == arm]) for arm in {r.group for r in runs}}
    chosen = [own.get(arm, pooled) for arm in arms] or [pooled]
    priced = [arm for arm in arms if arm in own]
    return replace(pooled, step_s=statistics.fmean(t.step_s for t in chosen),
                   problem_s=statistics.fmean(t.problem_s for t in chosen),
                   overhead_s=statistics.fmean(t.overhead_s for t in chosen),
                   source=pooled.source + (f"; the mean over the arms of each arm's own ({', '.join(priced)}) "
                                           "or, for an arm without runs here, of all runs" if arms else ""))


def _timing(runs: list[RunRecord]) -> Timing:
    """Median seconds per training step, per evaluated problem, and per run besides (load, scans, step 0)."""
    steps, per_problem, endpoint, other, totals, walls = [], [], [], [], [], []
    for r in runs:
        lines = [json.loads(x) for x in (r.path / "metrics.jsonl").read_text().splitlines() if x.strip()]
        train = [x["step_s"] for x in lines if x.get("step_s") and x.get("accuracy") is None]
        steps += train
        last = max(x["step"] for x in lines)
        scaled, fixed = 0, 0
        for x in lines:
            evaluated = [int(e.get("eval_samples") or 0) for e in (x, x.get("eval_merged") or {})
                         if e.get("accuracy") is not None]
            for n in evaluated:
                if x["step"] == last and n == r.test_size:
                    scaled += 1
                else:
                    fixed += n
            if x.get("step_s") and sum(evaluated) and train:
                per_problem.append((x["step_s"] - statistics.median(train)) / sum(evaluated))
        endpoint.append(scaled)
        other.append(fixed)
        totals.append(last)
        info = json.loads((r.path / "run.json").read_text())
        if isinstance(info.get("wall_time_s"), (int, float)):
            walls.append((float(info["wall_time_s"]), last, scaled * (r.test_size or 0) + fixed))
    step_s = _median(steps, "training step times (step_s)")
    problem_s = max(0.0, _median(per_problem, "evaluation times (step_s of evaluated steps)"))
    overhead = [w - s * step_s - n * problem_s for w, s, n in walls]
    return Timing(step_s=step_s, problem_s=problem_s, overhead_s=max(0.0, statistics.median(overhead or [0.0])),
                  steps=int(statistics.median(totals)), endpoint_evaluations=int(statistics.median(endpoint)),
                  other_problems=int(statistics.median(other)),
                  source=(f"median step_s of {len(steps)} training steps; per problem, the extra step_s of "
                          f"{len(per_problem)} evaluated steps over their problems; per run besides (model load, "
                          f"scans, step 0), run.json wall_time_s minus both, median of {len(walls)} runs"))


def design_power(components: Components, pairs: list[tuple[int, int]], method: Method, seeds: int,
                 test_size: int, effect: float, alpha: float, with_problem_part: bool) -> np.ndarray:
    """Simulated power of each hypothesis (its treatment better by `effect`, the others null) at `alpha`."""
    variances = components.variances(test_size, with_problem_part)
    if method is Method.POOLED:
        variances = np.full(len(variances), variances.mean())
    if method is Method.WELCH:  # Welch sees the seed block as noise
        null = simulate_null(method, variances, seeds, pairs, seed_variance=components.seed_variance,
                             draws=PLAN_DRAWS, seed=seeds)
    else:
        null = simulate_null(method, variances, seeds, pairs, draws=PLAN_DRAWS, seed=seeds)
    return np.array([null.power(effect, alpha)[k] for k in range(len(pairs))])


def fewest_seeds(components: Components, pairs, method: Method, test_size: int, effect: float, alpha: float,
                 with_problem_part: bool, max_seeds: int) -> tuple[int | None, np.ndarray | None]:
    """Smallest seeds per arm (>= MIN_SEEDS) whose power reaches POWER on every hypothesis: doubling, then
    bisection (power grows with the seeds)."""
    @functools.cache
    def power(n: int) -> np.ndarray:
        return design_power(components, pairs, method, n, test_size, effect, alpha, with_problem_part)

    low, high = MIN_SEEDS - 1, MIN_SEEDS
    while power(high).min() < POWER:
        if high >= max_seeds:
            return None, None
        low, high = high, min(2 * high, max_seeds)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if power(mid).min() < POWER else (low, mid)
    return high, power(high)


def family_of(runs_dir: Path, hypotheses: Sequence[str] | None) -> tuple[tuple[Hypothesis, ...], str]:
    """The family a plan sizes, and where it comes from: the given keys, else the pilot study's declared family,
    else every hypothesis of its suite (what a report of it would adjust across)."""
    own, declared, source = declared_family(runs_dir, hypotheses)
    if declared is None:
        return own, "every hypothesis of the suite (no family declared)"
    return declared, source


# What makes two runs the same amount of work per step: a timing pilot must agree on these with the pilot.
SHAPE = ("steps", "batch_size", "num_generations", "max_prompt_length", "max_completion_length")


def _shape(run: RunRecord) -> dict:
    grpo = run.config.get("grpo") or {}
    return {key: grpo.get(key) for key in SHAPE}


def priced_by(timing_dir: Path, family_runs: list[RunRecord]) -> list[RunRecord]:
    """The runs of `timing_dir` that price a plan in place of the pilot's own: the same design run by today's
    code or on the study's machine (a pilot's variance outlives a faster release; its wall times do not).
    Refused unless every run has the pilot's GRPO shape, so a faster design cannot price a slower one."""
    try:
        found = run_dirs(timing_dir)
    except SrddError as exc:
        raise SrddError(f"--timing: {exc}") from None
    runs = [r for r in (load_run(p, "relative_error", "merged") for p in found) if r.valid]  # one is enough
    if not runs:
        raise SrddError(f"--timing {timing_dir}: no complete runs to take times from")
    want = _shape(family_runs[0])
    for r in runs:
        shape = _shape(r)
        if shape != want:
            diff = ", ".join(f"grpo.{k} {shape[k]} (pilot {want[k]})" for k in SHAPE if shape[k] != want[k])
            raise SrddError(f"--timing {timing_dir}: run {r.name} is another design than the pilot's: {diff}")
    return runs


def plan(runs_dir: Path, *, effect_pp: float, hypotheses: Sequence[str] | None = None,
         analysis: str = Method.BLOCKED.value, sizes: Sequence[int] = SIZES, max_seeds: int = 50,
         alpha: float = ALPHA, timing_dir: Path | None = None) -> dict:
    """The plan as a JSON-ready dict (the table is `table(plan)`); priced by `timing_dir`'s runs when given,
    else by the pilot's own."""
    if not (math.isfinite(effect_pp) and 0 < effect_pp < 100):
        raise SrddError(f"--effect {effect_pp:g}: an effect is in (0, 100) percentage points")
    if analysis not in ANALYSES:
        raise SrddError(f"--analysis {analysis}: one of {', '.join(ANALYSES)}")
    if not sizes or any(m < 1 for m in sizes) or max_seeds < MIN_SEEDS:
        raise SrddError(f"--sizes need positive test-set sizes and --max-seeds >= {MIN_SEEDS}")
    family, source = family_of(runs_dir, hypotheses)
    keys = [h.key for h in family]
    runs = load_runs(runs_dir, "relative_error", "merged")
    components, pairs, family_runs = estimate(runs, family)
    clock = timing(family_runs if timing_dir is None else priced_by(timing_dir, family_runs), components.arms)
    level = alpha / len(keys)
    scenarios = [("measured", True)] if components.problem_measured else [("problem part at its bound", True),
                                                                         ("no problem part", False)]
    designs = []
    for name, with_part in scenarios:
        for m in sizes:
            n, powers = fewest_seeds(components, pairs, Method(analysis), m, effect_pp / 100, level, with_part,
                                     max_seeds)
            hours = None if n is None else n * len(components.arms) * clock.run_seconds(m) / 3600
            designs.append(Design(name, m, n, None if powers is None else float(powers.min()),
                                  {} if powers is None else dict(zip(keys, map(float, powers))), hours))
    return {"schema": "srdd.plan/v1", "pilot": str(runs_dir),
            "timing_runs": str(runs_dir if timing_dir is None else timing_dir), "effect_pp": effect_pp,
            "hypotheses": keys,
            "family_source": source, "analysis": analysis, "alpha": alpha, "holm_strictest_level": level,
            "power_target": POWER, "draws": PLAN_DRAWS, "components": asdict(components), "timing": asdict(clock),
            "designs": [asdict(d) for d in designs],
            "note": (f"power simulated through the {analysis} analysis, {PLAN_DRAWS:,} studies per design "
                     f"(Monte-Carlo sd ±{math.sqrt(POWER * (1 - POWER) / PLAN_DRAWS):.3f}); each hypothesis "
                     f"alone has the effect, the others none; hours = seeds x {len(components.arms)} arms x one "
                     "run, one run after another, a run's final-step evaluations on the endpoint's test set and "
                     "its other validations at the pilot's size (eval.final_samples)")}


def table(p: dict) -> str:
    """The plan for a terminal."""
    from srdd.scan.render import table as grid

    c, t = p["components"], p["timing"]
    pp = lambda v: f"{100 * math.sqrt(v):.1f}"  # noqa: E731  a variance as an sd in pp
    lines = [f"pilot {p['pilot']}: {len(c['arms'])} arms x seeds {', '.join(map(str, c['seeds']))}, "
             f"{c['test_size']} test problems (merged final accuracy)",
             f"variance components (as sd, pp): seed block {pp(c['seed_variance'])}; run residual per arm "
             + ", ".join(f"{a} {pp(v)}" for a, v in c["residual"].items()),
             f"problem part (sd, pp, at {c['test_size']} problems): "
             + ", ".join(f"{a} {pp(v)}" for a, v in c["problem"].items()) + f" -- {c['note']}",
             f"timings (from {p['timing_runs']}): {t['step_s']:.1f} s per step x {t['steps']} steps, "
             f"{t['problem_s']:.3f} s per evaluated problem x ({t['endpoint_evaluations']} endpoint evaluations x "
             f"the test set + {t['other_problems']} problems of the other validations), {t['overhead_s']:.0f} s per "
             f"run besides ({t['source']})",
             f"effect {p['effect_pp']:g} pp on each of {', '.join(p['hypotheses'])} ({p['family_source']}; Holm: "
             f"strictest level {p['holm_strictest_level']:.4g}), {p['analysis']} analysis, "
             f"{100 * p['power_target']:.0f} % power", ""]
    rows = [[d["scenario"], str(d["test_size"]), "—" if d["seeds"] is None else str(d["seeds"]),
             "—" if d["power"] is None else f"{d['power']:.3f}", "—" if d["hours"] is None else f"{d['hours']:.1f}"]
            for d in p["designs"]]
    lines.append(grid(["problem part", "test problems", "seeds per arm", "power (weakest hypothesis)", "hours"],
                      rows))
    lines += ["", p["note"] + "; — = not reached within --max-seeds"]
    return "\n".join(lines)
