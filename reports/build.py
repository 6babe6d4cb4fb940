"""Assemble report.json from the runs: results, diffs, correlations, verdicts."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import scipy

from calibrate.suite import HYPOTHESES, Hypothesis
from reports.runs import Group, RunRecord, config_diff, flatten, group_runs
from reports.stats import CI_METHOD, correlation
from reports.variance import components_section
from reports.verdicts import VerdictSettings, verdicts
from srdd import __version__


def _one_line(config: dict) -> str:
    n, q = config.get("noise", {}), config.get("quant", {})
    if not n.get("enabled", True):
        noise = "no noise"
    else:
        noise = (f"{n.get('schedule')} σ {n.get('sigma_start')}→{n.get('sigma_end')}/{n.get('num_stages')} "
                 f"on {','.join(n.get('targets', []))}")
        if n.get("target_layers"):
            noise += f" layers {min(n['target_layers'])}-{max(n['target_layers'])}"
        if n.get("layer_multipliers"):
            noise += " ×per-layer"
        if n.get("zone_overrides"):
            noise += " +zone σ"
    return f"{q.get('format')}/{q.get('mode')}, {noise}"


def _pick(groups: list[Group], name: str | None) -> Group | None:
    if name is None:
        hits = [g for g in groups if "baseline" in g.name.lower()]
        return hits[0] if len(hits) == 1 else None
    hits = [g for g in groups if g.name == name or any(r.name == name for r in g.runs)]
    return hits[0] if hits else None


def build_report(runs: list[RunRecord], *, metric: str, baseline: str | None, target: str | None,
                 settings: VerdictSettings = VerdictSettings(),
                 sources: dict[str, str] | None = None, hypotheses: Sequence[Hypothesis] = HYPOTHESES,
                 plan: tuple[str, dict] | None = None) -> dict:
    """report.json's content. `sources` says where the analysis, the margin and a declared family came from
    (reports.settings); `hypotheses` are every hypothesis tested (reports.settings.Resolved.hypotheses);
    `plan` is the (path, content) of the `srdd study plan` the study was sized by.

    A declared confirmatory family (or, without one, the plan's) gets its variance components beside the
    plan's (reports.variance), so that an inconclusive verdict shows whether the design or its bet failed.

    A report records a declared confirmatory family, and the definitions it tested unless they are the
    built-in HYPOTHESES, so that it can be rebuilt from its own options (tests/studies); a report of the
    built-in hypotheses without a declaration has neither key, as reports had before families existed."""
    valid = [r for r in runs if r.valid]
    groups = group_runs(valid)
    base = _pick(groups, baseline)
    target_acc = None
    if target is not None:
        try:
            target_acc = float(target)
        except ValueError:
            tg = _pick(groups, target)
            target_acc = tg.mean if tg else None
    results = []
    for g in groups:
        steps = sorted({s for r in g.runs for s, _ in r.trajectory})
        traj = {str(s): statistics.fmean(a for r in g.runs for st, a in r.trajectory if st == s) for s in steps}
        entry = {"group": g.name, "runs": [r.name for r in g.runs], "n": g.n, "config": _one_line(g.config),
                 "accuracies": g.accuracies,
                 "step0": traj.get("0"), "trajectory": traj, "final_mean": g.mean, "final_std": g.std,
                 "best": max(a for r in g.runs for _, a in r.trajectory),
                 "sigma_nominal_mean": _mean_sigma(g.runs, "applied_sigma"),
                 "sigma_effective_mean": _mean_sigma(g.runs, "effective_sigma")}
        if base is not None:
            entry["delta_vs_baseline"] = g.mean - base.mean
            if target_acc is not None and target_acc != base.mean:
                entry["gap_closed"] = (g.mean - base.mean) / (target_acc - base.mean)
        results.append(entry)
    diffs = {r.name: {k: list(v) for k, v in config_diff(base.config, r.config).items()}
             for r in valid} if base is not None else {}
    correlations = []
    for r in valid:
        correlations.append(correlation(r.pre, r.delta, scope="across_layers", run=r.name,
                                        xname=f"pre.{metric}", yname=f"delta.{metric}"))
        if not r.sigma_varies_by_design:  # uniform sigma: x would vary only by sampling noise
            continue
        for xname, sigma in (("sigma_nominal", r.applied_sigma), ("sigma_effective", r.effective_sigma)):
            layers = sorted(k for k in sigma if k < len(r.delta))
            if layers:
                correlations.append(correlation([sigma[k] for k in layers], [r.delta[k] for k in layers],
                                                scope="across_layers", run=r.name, xname=xname,
                                                yname=f"delta.{metric}"))
    finals = [r.final_accuracy for r in valid]
    srdd_r = correlation([statistics.fmean(r.delta) for r in valid], finals, scope="across_runs",
                         xname=f"mean_delta.{metric}", yname="final_accuracy")
    srdd_r["unit"] = (f"one point per run; x: the run's {metric} after training minus before, averaged over its "
                      f"layers ({METRIC_UNITS[metric]}); y: its final accuracy "
                      f"({valid[0].accuracy_kind if valid else 'merged'}, a fraction of the test problems)")
    correlations.append(srdd_r)
    arm_of = {r.name: g.name for g in groups for r in g.runs}
    for key, values in _numeric_features(valid).items():
        correlations.append(correlation(values, finals, scope="across_runs", xname=f"config.{key}",
                                        yname="final_accuracy", arms=[arm_of[r.name] for r in valid]))
    rows, analysis = verdicts(groups, settings, hypotheses)
    sources = dict(sources or {})
    report = {
        "schema": "srdd.report/v1", "tool_version": __version__, "metric": metric,
        "accuracy": valid[0].accuracy_kind if valid else None,
        "statistics": {"analysis": analysis, "alpha": settings.alpha, "multiple_comparisons": "Holm",
                       "equivalence": "TOST (two one-sided tests with the analysis' standard error and df)",
                       "margin_pp": 100 * settings.margin, "margin_source": sources.get("margin"),
                       "analysis_source": sources.get("analysis"), "min_seeds": settings.min_seeds,
                       "correlation_interval": CI_METHOD, "software": f"scipy {scipy.__version__}"},
        "baseline": base.name if base else None, "target_accuracy": target_acc,
        "runs": [{"name": r.name, "path": r.path.name, "group": r.group, "final_accuracy": r.final_accuracy,
                  "final_accuracies": r.final_accuracies, "eval_quant": r.eval_quant} for r in valid],
        "invalid_runs": [{"name": r.name, "path": r.path.name, "reason": r.reason} for r in runs if not r.valid],
        "results": results, "config_diff": diffs, "correlations": correlations,
        "verdicts": rows,
        "options": {"metric": metric, "baseline": baseline, "target": target,
                    "accuracy": valid[0].accuracy_kind if valid else None, "analysis": settings.analysis,
                    "margin_pp": 100 * settings.margin, "sources": sources},
    }
    if settings.confirmatory is not None:
        report["statistics"]["confirmatory"] = {"hypotheses": list(settings.confirmatory),
                                                "source": sources.get("hypotheses")}
        report["options"]["confirmatory"] = list(settings.confirmatory)
    if tuple(hypotheses) != HYPOTHESES:
        report["options"]["hypotheses"] = [h.to_dict() for h in hypotheses]
    keys = settings.confirmatory if settings.confirmatory is not None else (plan[1]["hypotheses"] if plan else None)
    if keys is not None:
        family = [h for h in hypotheses if h.key in keys]
        section = components_section(valid, family, None if plan is None else plan[1])
        if section is not None:
            report["variance_components"] = section
    if plan is not None:
        report["options"]["plan"] = plan[0]
    return report


METRIC_UNITS = {"relative_error": "mean |q - x| / |x| over the block's outputs, a fraction",
                "deadzone_ratio": "the fraction of block outputs quantized to zero",
                "sqnr_db": "10 log10 of signal over quantization-error power, dB"}
"""What a scan metric's numbers are (DESIGN.md §2), for the SRDD change <-> accuracy correlation's unit."""


def _mean_sigma(runs: list[RunRecord], attr: str) -> float | None:
    """Mean over runs and layers of a per-layer sigma (None when no run logged it)."""
    values = [v for r in runs for v in getattr(r, attr).values()]
    return statistics.fmean(values) if values else None


def _numeric_features(runs: list[RunRecord]) -> dict[str, list[float]]:
    """Config keys that vary across runs and read as numbers: sigma level, stages, targeted, variable, ..."""
    rows = []
    for r in runs:
        flat = flatten(r.config)
        n = r.config.get("noise", {})
        flat["noise.targeted"] = n.get("target_layers") is not None
        flat["noise.variable"] = bool(n.get("layer_multipliers") or n.get("multipliers_file"))
        flat["noise.decay"] = n.get("schedule") != "constant"
        flat["noise.rmsnorm_target"] = "rmsnorm" in (n.get("targets") or [])
        rows.append(flat)
    out = {}
    for key in sorted(set().union(*rows)):
        if key in ("seed",):
            continue
        values = [row.get(key) for row in rows]
        if all(isinstance(v, (int, float)) and v is not None for v in values) and len(set(values)) > 1:
            out[key] = [float(v) for v in values]
    return out
