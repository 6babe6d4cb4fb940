"""`srdd calibrate SCAN -o multipliers.yaml [--suite DIR]`."""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import yaml

from calibrate.multipliers import Mode, clip, compute, damage, explain
from calibrate.scan_input import METRICS, read_scan
from calibrate.suite import Sigmas, experiments, plan_markdown, verl_overrides, with_multipliers_file
from srdd.errors import SrddError
from srdd.jsonio import dumps_json, ensure_writable, sha256_file, write_text_atomic
from srdd.metrics import get_metric
from srdd.scan.render import table
from srdd.zones import depth_zones, high_error_bands

SCHEMA = "srdd.noise/v1"
EPILOG = """examples:
  srdd calibrate scan.json -o multipliers.yaml                 # published: round(err_i / mean, 2)
  srdd calibrate scan.json -o m.yaml --metric sqnr_db --mode inverse --clip 0.5,1.5
  srdd calibrate scan.json -o m.yaml --explain
  srdd calibrate scan.json -o m.yaml --suite study/ --baseline-acc 0.5641 --target-acc 0.6088

Modes: proportional m_i = round(v_i/mean(v), 2); inverse 2 - m_i; ceiling (2 - m_i)/max(2 - m);
tiers fixed values by band of v_i/mean; targeted 1.0 in the high-error zone, 0 elsewhere.
For sqnr_db, v_i is the noise/signal power 10^(-SQNR_i/10), so lower SQNR means a larger m_i.
SCAN may be a srdd.scan/v1 file or a scan from the published verl-fork scanner."""


def _floats(text: str, n: int | None, flag: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise SrddError(f"{flag}: expected comma-separated numbers, got {text!r}") from None
    if n is not None and len(vals) != n:
        raise SrddError(f"{flag}: expected {n} numbers, got {len(vals)}")
    return vals


def register(sub) -> None:
    p = sub.add_parser("calibrate", help="turn a scan into per-layer noise multipliers (+ experiment suite)",
                       description="Compute per-layer noise multipliers and zones from a scan.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scan", type=Path)
    p.add_argument("-o", "--out", type=Path, required=True, help="multipliers YAML (srdd.noise/v1)")
    p.add_argument("--metric", choices=METRICS, default="relative_error")
    p.add_argument("--mode", choices=[m.value for m in Mode], default="proportional")
    p.add_argument("--clip", help="LO,HI bounds applied after the mode")
    p.add_argument("--tier-cuts", default="1.1,1.0", help="tiers: bands of v_i/mean (descending)")
    p.add_argument("--tier-values", default="1.5,1.2,1.0", help="tiers: multiplier per band")
    p.add_argument("--targets", default="linear", help="noise targets for training: linear,rmsnorm")
    p.add_argument("--exclude", default="", help="comma list of module-name regexes never perturbed")
    p.add_argument("--explain", action="store_true", help="print why each layer got its multiplier")
    p.add_argument("--suite", type=Path, help="also write the E13 experiment suite into this directory")
    p.add_argument("--baseline-acc", type=float)
    p.add_argument("--target-acc", type=float)
    p.add_argument("--sigma", default="0.05,0.0005", help="baseline sigma start,end")
    p.add_argument("--sigma-high", default="0.08,0.001")
    p.add_argument("--sigma-low", default="0.03,0.0003")
    p.add_argument("--sigma-constant", type=float, default=0.03)
    p.add_argument("--sigma-conservative", default="0.05,0.005")
    p.add_argument("--stages", type=int, default=10)
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=run)


def _zones(table_values: dict[str, list[float]], metric: str) -> list[dict]:
    n = len(table_values[metric])
    badness = [get_metric(metric).badness(v) for v in table_values[metric]]
    zones = [(z.name, "depth", z.layers) for z in depth_zones(n)]
    zones += [(z.name, "data", z.layers) for z in high_error_bands(badness)]
    return [{"name": name, "kind": kind, "layers": list(layers),
             **{m: statistics.fmean(table_values[m][i] for i in layers) for m in METRICS}}
            for name, kind, layers in zones]


def run(args) -> int:
    suite_files = []
    if args.suite is not None:
        if args.suite.exists() and any(args.suite.iterdir()) and not args.force:
            raise SrddError(f"suite directory {args.suite} is not empty; pass --force to overwrite")
    ensure_writable(args.out, force=args.force)
    sigmas = Sigmas(_floats(args.sigma, 2, "--sigma"), _floats(args.sigma_high, 2, "--sigma-high"),
                    _floats(args.sigma_low, 2, "--sigma-low"), args.sigma_constant,
                    _floats(args.sigma_conservative, 2, "--sigma-conservative"), args.stages)
    scan = read_scan(args.scan)
    print(f"read {args.scan}: {scan.layout} layout, {scan.num_layers} layers, model {scan.model}, "
          f"format {scan.fmt}" + (f" ({scan.note})" if scan.note else ""))
    mode, raw = Mode(args.mode), scan.values[args.metric]
    v = damage(args.metric, raw)
    zones = _zones(scan.values, args.metric)
    band = next((z["layers"] for z in zones if z["name"] == "high_error"), [])
    if mode is Mode.TARGETED and not band:
        raise SrddError("targeted mode needs a high-error zone, and this scan has none")
    mult = compute(mode, v, band=tuple(band), tier_cuts=_floats(args.tier_cuts, None, "--tier-cuts"),
                   tier_values=_floats(args.tier_values, None, "--tier-values"))
    clip_range = _floats(args.clip, 2, "--clip") if args.clip else None
    if clip_range:
        mult = clip(mult, *clip_range)
    layer_multipliers = {i: m for i, m in enumerate(mult)}
    doc = {
        "schema": SCHEMA,
        "source": {"path": str(args.scan), "sha256": sha256_file(args.scan), "layout": scan.layout,
                   "model": scan.model, "format": scan.fmt},
        "metric": args.metric, "mode": mode.value,
        "clip": list(clip_range) if clip_range else None,
        "num_layers": scan.num_layers,
        "layer_multipliers": layer_multipliers,
        "zones": zones,
        "target_modules": [t.strip() for t in args.targets.split(",") if t.strip()],
        "exclude_patterns": [e for e in args.exclude.split(",") if e],
        "sigma": {"schedule": "exponential", "sigma_start": sigmas.baseline[0], "sigma_end": sigmas.baseline[1],
                  "num_stages": sigmas.stages},
    }
    metric = get_metric(args.metric)
    rows = [[str(i), metric.format(raw[i]), f"{m:.2f}",
             next((z["name"] for z in zones if z["kind"] == "depth" and i in z["layers"]), "")
             + (" *" if i in band else "")] for i, m in enumerate(mult)]
    print(table(["layer", args.metric, "multiplier", "zone (* high-error)"], rows))
    print()
    print(table(["zone", "kind", "layers", *METRICS],
                [[z["name"], z["kind"], f"{z['layers'][0]}-{z['layers'][-1]}",
                  *[get_metric(m).format(z[m]) for m in METRICS]] for z in zones]))
    if args.explain:
        print("\nwhy:")
        print("\n".join(explain(mode, args.metric, raw, v, mult, tuple(band))))
        if clip_range:
            print(f"(then clipped to [{clip_range[0]}, {clip_range[1]}])")
    if args.suite is not None:
        suite_files = write_suite(args, sigmas, band, layer_multipliers, scan.fmt)
    write_text_atomic(args.out, yaml.safe_dump(doc, sort_keys=False), force=args.force)
    print(f"\nwrote {args.out}" + (f" and {len(suite_files)} suite files in {args.suite}" if suite_files else ""))
    return 0


def write_suite(args, sigmas: Sigmas, band: list[int], multipliers: dict[int, float], fmt: str) -> list[Path]:
    args.suite.mkdir(parents=True, exist_ok=True)
    mult_path = str(args.out.resolve())
    fmt = fmt if fmt not in ("?", "") else "mxfp4"
    exps = experiments(sigmas, band, multipliers)
    written = []
    for exp in exps:
        cfg_exp = with_multipliers_file(exp, mult_path) if exp.noise.get("layer_multipliers") else exp
        config = {"name": exp.name, "quant": {"format": fmt, "mode": "w4a4"}, "noise": cfg_exp.noise}
        written.append(write_text_atomic(args.suite / f"{exp.name}.yaml", yaml.safe_dump(config, sort_keys=False),
                                         force=True))
        overrides = "\n".join(verl_overrides(exp, fmt, mult_path)) + "\n"
        written.append(write_text_atomic(args.suite / f"{exp.name}.overrides", overrides, force=True))
    plan = plan_markdown(exps, band, args.baseline_acc, args.target_acc)
    written.append(write_text_atomic(args.suite / "plan.md", plan, force=True))
    suite = {"schema": "srdd.suite/v1", "high_error_zone": band, "baseline_acc": args.baseline_acc,
             "target_acc": args.target_acc,
             "experiments": [{"name": e.name, "priority": e.priority, "hypothesis": e.hypothesis,
                              "expected": e.expected} for e in exps]}
    written.append(write_text_atomic(args.suite / "suite.json", dumps_json(suite), force=True))
    return written
