"""`srdd study plan --design NAME=RUNS ...`: which way of running a study reaches the power for the fewest hours.

A design is one way to run every arm (its prompts per step, its steps, ...), and a small pilot of it,
a runs directory, tells both how noisy its final accuracy is (its variance components) and what a run
of it costs (its runs' own recorded times). More prompts per step may make each run steadier and
dearer; whether that buys fewer seeds than it costs is what this compares. Each pilot is planned on
its own (reports.plan: the same family, effect, analysis and test-set sizes); per design the cheapest
test-set size is kept, and the design whose cheapest size costs fewest hours wins.

Where a pilot's problem part is only bounded (no per-problem outcomes), a test-set size needs the
larger of the two scenarios' seeds: a design is never called cheap on an assumption it cannot check.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from reports.plan import Timing, family_of, plan
from srdd.errors import SrddError


def parse_design(text: str, option: str = "--design") -> tuple[str, Path]:
    """`NAME=RUNS` of --design (and of --timing with designs)."""
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise SrddError(f"{option} {text!r}: expected NAME=RUNS, e.g. p8=pilot-8prompts/runs")
    return name.strip(), Path(path.strip())


def needed(p: dict) -> list[dict]:
    """Per test-set size, the design every scenario of the plan agrees reaches the power: the most seeds (None
    where some scenario does not reach it within --max-seeds)."""
    out = []
    for m in dict.fromkeys(d["test_size"] for d in p["designs"]):
        rows = [d for d in p["designs"] if d["test_size"] == m]
        out.append(None if any(d["seeds"] is None for d in rows) else max(rows, key=lambda d: d["seeds"]))
    return [d for d in out if d is not None]


def compare_designs(designs: Sequence[tuple[str, Path]], *, effect_pp: float, hypotheses: Sequence[str] | None,
                    analysis: str, sizes: Sequence[int], max_seeds: int,
                    timings: dict[str, Path] | None = None) -> dict:
    """Every design's plan, its cheapest test-set size, and the cheapest design (None: none reaches the power).
    `timings`: per design name, the runs that price it in place of its pilot's own (reports.plan.priced_by)."""
    names = [name for name, _ in designs]
    if len(designs) < 2 or len(set(names)) != len(names):
        raise SrddError("--design: give two or more designs with distinct names (for one pilot, give its RUNS)")
    timings = timings or {}
    unknown = sorted(set(timings) - set(names))
    if unknown:
        raise SrddError(f"--timing {unknown[0]}=...: no --design is named {unknown[0]!r} ({', '.join(names)})")
    families = {name: [h.key for h in family_of(path, hypotheses)[0]] for name, path in designs}
    if len({tuple(f) for f in families.values()}) > 1:
        shown = "; ".join(f"{name}: {', '.join(f)}" for name, f in families.items())
        raise SrddError(f"the designs' pilots plan different families ({shown}); give --hypotheses")
    plans = {name: plan(path, effect_pp=effect_pp, hypotheses=hypotheses, analysis=analysis, sizes=sizes,
                        max_seeds=max_seeds, timing_dir=timings.get(name)) for name, path in designs}
    rows = []
    for name, p in plans.items():
        options = needed(p)
        best = min(options, key=lambda d: d["hours"]) if options else None
        rows.append({"name": name, "cheapest": best, "plan": p})
    ranking = [r["name"] for r in sorted((r for r in rows if r["cheapest"]), key=lambda r: r["cheapest"]["hours"])]
    first = next(iter(plans.values()))
    return {"schema": "srdd.design-plan/v1", "effect_pp": effect_pp, "hypotheses": first["hypotheses"],
            "analysis": analysis, "power_target": first["power_target"],
            "holm_strictest_level": first["holm_strictest_level"], "designs": rows, "ranking": ranking,
            "cheapest": ranking[0] if ranking else None,
            "note": ("per design, the test-set size with the fewest hours among those every problem-part scenario "
                     "agrees on; hours = seeds per arm x arms x one run by the pilot's own times (or --timing's)")}


def _sd_range(variances: dict[str, float]) -> str:
    values = [100 * math.sqrt(v) for v in variances.values()]
    return f"{min(values):.1f}-{max(values):.1f}"


def table(d: dict) -> str:
    """The comparison for a terminal."""
    from srdd.scan.render import table as grid

    rows = []
    for r in d["designs"]:
        c, best = r["plan"]["components"], r["cheapest"]
        clock = Timing(**r["plan"]["timing"])
        run_min = "—" if best is None else f"{clock.run_seconds(best['test_size']) / 60:.1f}"
        pilot = r["plan"]["pilot"]
        if r["plan"]["timing_runs"] != pilot:
            pilot += f" (timed by {r['plan']['timing_runs']})"
        rows.append([r["name"], pilot, f"{len(c['arms'])} x {len(c['seeds'])}",
                     f"{100 * math.sqrt(c['seed_variance']):.1f}", _sd_range(c["residual"]),
                     _sd_range(c["problem"]) + ("" if c["problem_measured"] else " (bound)"), run_min,
                     *(["—"] * 4 if best is None else
                       [str(best["test_size"]), str(best["seeds"]), f"{best['power']:.3f}", f"{best['hours']:.1f}"])])
    header = ["design", "pilot", "arms x seeds", "seed sd (pp)", "run sd (pp)", "problem sd (pp)", "min per run",
              "test problems", "seeds per arm", "power", "hours"]
    lines = [f"effect {d['effect_pp']:g} pp on each of {', '.join(d['hypotheses'])} (Holm: strictest level "
             f"{d['holm_strictest_level']:.4g}), {d['analysis']} analysis, {100 * d['power_target']:.0f} % power",
             "", grid(header, rows, left=[0, 1]), ""]
    by_name = {r["name"]: r["cheapest"] for r in d["designs"]}
    if d["cheapest"] is None:
        lines.append("no design reaches the power within --max-seeds at these test-set sizes")
    else:
        win = by_name[d["cheapest"]]
        lines.append(f"cheapest: {d['cheapest']}, {win['hours']:.1f} h ({win['seeds']} seeds per arm, "
                     f"{win['test_size']} test problems)"
                     + "".join(f"; {name} {by_name[name]['hours'] / win['hours']:.2f}x as long"
                               for name in d["ranking"][1:]))
        lines += [f"{name}: does not reach the power within --max-seeds" for name, best in by_name.items()
                  if best is None]
    lines.append(d["note"])
    return "\n".join(lines)
