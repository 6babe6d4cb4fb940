"""`srdd calibrate SCAN -o multipliers.yaml [--explain] [--suite DIR]`.

Everything the user typed and everything in the scan is validated, and every
file's text is built, before the first file is written; a failure while
writing removes the files this call created.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
import statistics
from decimal import Decimal
from pathlib import Path

import yaml

from calibrate.multipliers import Mode, Tiers, basis_description, compute, damage, parse_clip, statistics_of
from calibrate.noise_file import TARGET_KINDS, build_document, calibrate_zones, high_error_band, no_band_advice
from calibrate.scan_input import DAMAGE_METRIC, METRICS, read_scan
from calibrate.suite import (DICT_STYLES, Sigmas, check_accuracies, experiments, plan_markdown, rin_train_config,
                             suite_document, verl_overrides)
from srdd.errors import SrddError
from srdd.jsonio import dumps_json, ensure_writable, sha256_file, write_all_atomic
from srdd.metrics import definitions, get_metric
from srdd.zones import ZoneRule, span

SUITE_FIXED_FILES = ("plan.md", "suite.json")

EPILOG = """modes (v_i = the layer's value, see below; every result is rounded to 2 decimals, halves away
from zero, on the exact decimal value -- the published spreadsheet's ROUND):
  proportional  m_i = round(v_i / mean(v), 2)                    the published choice (default)
  inverse       m_i = 2 - round(v_i / mean(v), 2)
  ceiling       m_i = round((2 - p_i) / max_j(2 - p_j), 2)      p = proportional; largest is 1
  tiers         by z_i = (v_i - mean) / std: default z >= 0.5 -> 1.5, z >= -0.5 -> 1.2, else 1.0 (--tiers)
  targeted      1.0 inside the high-error zone, 0.0 elsewhere
v_i: relative_error and deadzone_ratio as they are; for sqnr_db (higher is better) v_i = 10^(-SQNR_i/20),
the relative RMS error, so a layer 3 dB below another gets 1.41x its multiplier under proportional.
Zones are srdd's one definition (srdd scan and srdd show print the same ones for the same metric and K).
Data zones: contiguous runs (>= 2 layers) with v_i > mean + K*std (K = --band-std, default 0.5), named by
rank of their mean v_i: high_error (the worst; the one targeted mode perturbs), high_error_2, ...; the
published 1.5B scan gives high_error = layers 10-19. Depth zones: first/early_mid/middle/late_mid/last
at 4/28, 10/28, 20/28, 26/28 of depth.

SCAN is a srdd.scan/v1 file (metrics under layers[i].block_output) or a scan written by the published
verl-fork scanner ({config, report: {per_layer: [...]}, recommendations, timestamp}); the layout found is
printed. Missing or duplicated layers, NaN and wrong schemas are errors that name the field.

--suite DIR writes, per experiment, a rin_train config (<name>.yaml) and the same noise settings as verl
overrides (<name>.overrides, one per line), plus plan.md and suite.json: E13i-baseline, E13i-targeted,
E13i-high, E13i-low, E13j-variable, E13m-rmsnorm, E13l-conservative, E13k-constant (priority order).

examples:
  srdd calibrate scan.json -o multipliers.yaml                          # published: round(err_i/mean, 2)
  srdd calibrate scan.json -o m.yaml --explain                          # the formula for every layer
  srdd calibrate scan.json -o m.yaml --metric sqnr_db --mode inverse --clip 0.5,1.5
  srdd calibrate scan.json -o m.yaml --mode tiers --tiers 1.0:1.5,0:1.2,1.0
  srdd calibrate scan.json -o m.yaml --suite study/ --baseline-acc 0.5641 --target-acc 0.6088
  srdd calibrate scan.json -o m.yaml --suite study/ --sigma 0.04,0.0004 --sigma-high 0.1,0.002"""


def _pair(text: str | None, flag: str) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        a, b = (float(t) for t in text.split(","))
    except ValueError:
        raise SrddError(f"{flag}: expected START,END (two numbers), got {text!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)):
        raise SrddError(f"{flag}: START and END must be finite numbers, got {text!r}")
    return a, b


SUITE_ONLY = (("fmt", "--format"), ("baseline_acc", "--baseline-acc"), ("target_acc", "--target-acc"))
"""Options that only shape the suite: given without --suite they would be silently ignored."""


def _check_user_options(args) -> None:
    """Flags that would be ignored or write a non-number into YAML are refused by name."""
    if args.suite is None:
        given = [flag for attr, flag in SUITE_ONLY if getattr(args, attr) is not None]
        given += ["--inline-multipliers"] if args.inline_multipliers else []
        if given:
            raise SrddError(f"{', '.join(given)} only shape the experiment suite; give --suite DIR with them")
    for flag, value in (("--band-std", args.band_std), ("--sigma-constant", args.sigma_constant)):
        if not (math.isfinite(value) and value >= 0):
            raise SrddError(f"{flag} must be a finite number >= 0, got {value}")
    for pattern in (e for e in args.exclude.split(",") if e):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise SrddError(f"--exclude: bad regex {pattern!r}: {exc}") from None


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def register(sub) -> None:
    p = sub.add_parser("calibrate", help="turn a scan into per-layer noise multipliers, zones and an experiment suite",
                       description="Compute per-layer noise multipliers and zones from a scan (srdd.noise/v1 "
                                   "YAML for rin_train's noise.multipliers_file), optionally with the E13 "
                                   "experiment suite.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scan", type=Path, help="srdd.scan/v1 JSON or a published verl-fork scan JSON")
    p.add_argument("-o", "--out", type=Path, required=True, help="multipliers YAML to write (srdd.noise/v1)")
    p.add_argument("--metric", choices=(*METRICS, DAMAGE_METRIC), default="relative_error",
                   help="per-layer value the multipliers follow (default relative_error, the published choice; "
                        "sensitivity: each layer's output KL, from a scan made with srdd scan --sensitivity)")
    p.add_argument("--mode", choices=[m.value for m in Mode], default="proportional",
                   help="how a layer's value becomes its multiplier (default %(default)s; see the modes below)")
    p.add_argument("--clip", metavar="LO,HI", help="bound every multiplier to [LO, HI] after the mode")
    p.add_argument("--tiers", metavar="SPEC", default="0.5:1.5,-0.5:1.2,1.0",
                   help="tiers mode: 'Z1:M1,Z2:M2,...,REST' -- z_i >= Z1 gets M1, ... (default %(default)s)")
    p.add_argument("--band-std", type=float, default=0.5, metavar="K",
                   help="data zones (high-error bands): v_i > mean + K*std (default %(default)s, as srdd scan/show)")
    p.add_argument("--targets", default="linear", help="noise targets for training: linear,rmsnorm (default linear)")
    p.add_argument("--exclude", default="", help="comma list of module-name regexes never perturbed")
    p.add_argument("--explain", action="store_true", help="print the formula, with the numbers, for every layer")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    g = p.add_argument_group("experiment suite")
    g.add_argument("--suite", type=Path, metavar="DIR", help="write the experiment suite into DIR")
    g.add_argument("--format", dest="fmt", help="quant.format of the suite's configs (default: the scan's format)")
    g.add_argument("--baseline-acc", type=float, help="accuracy of the quantized run without noise (fraction)")
    g.add_argument("--target-acc", type=float, help="accuracy to reach, e.g. a better format's run (fraction)")
    g.add_argument("--sigma", metavar="START,END", help="baseline sigma (default 0.05,0.0005); also recorded "
                                                        "in the multipliers YAML when given")
    g.add_argument("--stages", type=int, help="baseline stages (default 10); recorded in the YAML when given")
    g.add_argument("--sigma-high", metavar="START,END", default="0.08,0.001", help="E13i-high band sigma (default %(default)s)")
    g.add_argument("--sigma-low", metavar="START,END", default="0.03,0.0003", help="E13i-low band sigma (default %(default)s)")
    g.add_argument("--sigma-constant", type=float, default=0.03, help="E13k-constant sigma (default %(default)s)")
    g.add_argument("--sigma-conservative", metavar="START,END", default="0.05,0.005", help="E13l-conservative sigma (default %(default)s)")
    g.add_argument("--conservative-stages", type=int, default=5, help="E13l stages (default 5)")
    g.add_argument("--inline-multipliers", action="store_true",
                   help="E13j-variable.yaml holds layer_multipliers inline instead of multipliers_file: <-o path>")
    g.add_argument("--verl-multipliers", choices=["inline", "path"], default="inline",
                   help="verl overrides: layer_multipliers as a Hydra dict (default) or the YAML's path")
    g.add_argument("--verl-dicts", choices=list(DICT_STYLES), default="replace",
                   help="replace (default): '~key' then '+key={...}', for a verl config declaring "
                        "layer_multipliers: {} (the published fork); assign: 'key={...}', for one declaring null")
    p.set_defaults(func=run)


def _table(header: list[str], rows: list[list[str]], left: tuple[int, ...] = ()) -> str:
    """Columns right-aligned except those in `left`."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


class _Dumper(yaml.SafeDumper):
    """Block-style mappings; lists of scalars on one line ([10, 11, 12])."""


def _represent_list(dumper, data):
    flow = all(not isinstance(x, (dict, list, tuple)) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def _dump_yaml(doc: dict) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120, allow_unicode=True)


def _suite_paths(suite: Path, names: list[str]) -> list[Path]:
    return [suite / f"{n}{ext}" for n in names for ext in (".yaml", ".overrides")] + \
        [suite / f for f in SUITE_FIXED_FILES]


def _check_suite_dir(suite: Path, paths: list[Path], force: bool) -> None:
    if suite.exists() and not suite.is_dir():
        raise SrddError(f"--suite {suite} exists and is not a directory")
    if not suite.exists() and not suite.parent.is_dir():
        raise SrddError(f"--suite {suite}: parent directory {suite.parent} does not exist")
    clash = [p.name for p in paths if p.exists()]
    if clash and not force:
        raise SrddError(f"--suite {suite} already holds {', '.join(clash)}; pass --force to overwrite")


def _validate_in_rin_train(configs: dict[str, dict], multipliers: dict[int, float]) -> bool:
    """Load every config through rin_train (multipliers inlined); False when rin_train is not importable."""
    try:
        from rin_train.run_config import load_run_config
    except ImportError:
        return False
    for name, cfg in configs.items():
        noise = dict(cfg["noise"])
        if noise.get("multipliers_file") is not None:
            noise["multipliers_file"] = None
            noise["layer_multipliers"] = dict(multipliers)
        try:
            load_run_config({**cfg, "noise": noise})
        except SrddError as exc:
            raise SrddError(f"suite config {name}.yaml would not load in rin_train: {exc}") from None
    return True


def run(args) -> int:
    # 1. everything the user typed
    clip = parse_clip(args.clip) if args.clip else None
    tiers = Tiers.parse(args.tiers)
    _check_user_options(args)
    rule = ZoneRule(args.metric, args.band_std)
    targets = _csv(args.targets)
    if not targets or set(targets) - set(TARGET_KINDS):
        raise SrddError(f"--targets: choose from {', '.join(TARGET_KINDS)}, got {args.targets!r}")
    exclude = [e for e in args.exclude.split(",") if e]
    baseline = _pair(args.sigma, "--sigma")
    defaults = Sigmas()
    stages = defaults.stages if args.stages is None else args.stages
    sigmas = Sigmas(baseline=baseline or defaults.baseline, stages=stages,
                    high=_pair(args.sigma_high, "--sigma-high"), low=_pair(args.sigma_low, "--sigma-low"),
                    constant=args.sigma_constant, conservative=_pair(args.sigma_conservative, "--sigma-conservative"),
                    conservative_stages=args.conservative_stages)
    check_accuracies(args.baseline_acc, args.target_acc)
    if args.suite is not None and not args.suite.exists() and args.out.resolve().parent == args.suite.resolve():
        _check_suite_dir(args.suite, [], args.force)  # -o inside the suite directory this call creates
    else:
        ensure_writable(args.out, force=args.force)

    # 2. the scan
    scan = read_scan(args.scan)
    scan_sha = sha256_file(args.scan)
    mode, metric = Mode(args.mode), get_metric(args.metric)
    print(f"read {args.scan}: {scan.layout} layout, {scan.num_layers} layers, model {scan.model}, "
          f"format {scan.fmt}, site {scan.site}")
    for note in scan.notes:
        print(f"  note: {note}")
    if args.metric not in scan.values:
        raise SrddError(f"--metric {args.metric}: {args.scan} has no per-layer {args.metric}; "
                        "make the scan with srdd scan --sensitivity")
    raw = scan.values[args.metric]
    v = damage(args.metric, raw)
    st = statistics_of(v)
    zones = calibrate_zones(scan, rule)
    band = high_error_band(zones)
    for needs, wanted in (("targeted mode", mode is Mode.TARGETED),
                          ("--suite (E13i-targeted/high/low perturb the band)", args.suite is not None)):
        if wanted and not band:
            raise SrddError(f"{needs} needs a high-error band and this scan has none at --band-std {args.band_std:g}; "
                            f"{no_band_advice(scan, rule)}")
    mults = compute(mode, v, band=band, tiers=tiers, clip=clip)
    layer_multipliers = {m.layer: float(m.multiplier) for m in mults}
    sigma_block = None
    if args.sigma is not None or args.stages is not None:
        sigma_block = {"schedule": "exponential", "sigma_start": sigmas.baseline[0],
                       "sigma_end": sigmas.baseline[1], "num_stages": sigmas.stages}
    doc = build_document(scan_path=relative_to(args.scan, args.out.parent), scan_sha256=scan_sha, scan=scan, metric=args.metric, mode=mode,
                         clip=clip, tiers=tiers, rule=rule, st=st, mults=mults, zones=zones,
                         targets=targets, exclude=exclude, sigma=sigma_block)
    noise_text = _dump_yaml(doc)

    # 3. the suite, built in memory and validated before anything is written
    files: list[tuple[Path, str]] = [(args.out, noise_text)]
    validated = None
    if args.suite is not None:
        fmt = _suite_format(args.fmt, scan.fmt)
        exps = experiments(sigmas, band, layer_multipliers, targets=targets, exclude=exclude)
        suite_paths = _suite_paths(args.suite, [e.name for e in exps])
        if args.out.resolve() in {p.resolve() for p in suite_paths}:
            raise SrddError(f"-o {args.out} is a file of the suite itself; write the multipliers beside it "
                            f"(e.g. -o {args.suite / 'multipliers.yaml'})")
        _check_suite_dir(args.suite, suite_paths, args.force)
        mult_path = str(args.out.resolve())
        mult_from_suite = relative_to(args.out, args.suite)
        configs = {e.name: rin_train_config(e, fmt, None if args.inline_multipliers else mult_from_suite)
                   for e in exps}
        validated = _validate_in_rin_train(configs, layer_multipliers)
        for e in exps:
            files.append((args.suite / f"{e.name}.yaml", _dump_yaml(configs[e.name])))
            lines = verl_overrides(e, mult_path if args.verl_multipliers == "path" else None, args.verl_dicts)
            files.append((args.suite / f"{e.name}.overrides", "\n".join(lines) + "\n"))
        band_zone = next(z for z in doc["zones"] if z["kind"] == "data" and z["name"] == "high_error")
        band_summary = (f"mean {args.metric} {metric.format(band_zone[args.metric])} vs "
                        f"{metric.format(statistics.fmean(raw))} over all layers")
        files.append((args.suite / "plan.md", plan_markdown(
            exps, band=band, band_summary=band_summary, source=str(args.scan), metric=args.metric, mode=mode.value,
            multipliers_file=mult_from_suite, baseline=args.baseline_acc, target=args.target_acc, fmt=fmt,
            suite_dir=str(args.suite), dict_style=args.verl_dicts)))
        files.append((args.suite / "suite.json", dumps_json(suite_document(
            exps, created=doc["created"], source={"path": relative_to(args.scan, args.suite), "sha256": scan_sha},
            multipliers={"path": mult_from_suite, "sha256": hashlib.sha256(noise_text.encode()).hexdigest()},
            band=band, baseline=args.baseline_acc, target=args.target_acc, fmt=fmt))))

    # 4. the screen
    _print_tables(scan, args.metric, mults, doc["zones"], rule, mode)
    if args.explain:
        print(f"\nwhy ({mode.value}; {basis_description(args.metric)}; mean {_short(st.mean)}, "
              f"std {_short(st.std)}):")
        for m in mults:
            print(f"  layer {m.layer:>3}: {args.metric} {metric.format(raw[m.layer])}; {m.why}")

    # 5. the files
    write_all_atomic([(p, text.encode("utf-8")) for p, text in files], force=args.force)
    print(f"\nwrote {args.out}")
    if args.suite is not None:
        print(f"wrote {len(files) - 1} suite files in {args.suite}"
              + ("" if validated else " (rin_train not importable: configs not load-checked)"))
    return 0


def relative_to(path: Path, folder: Path) -> str:
    """`path` as a file in `folder` names it: relative, so a calibrated suite can be moved or committed whole."""
    return os.path.relpath(path.resolve(), folder.resolve())


def _short(x: Decimal) -> str:
    return f"{float(x):.6g}"


def _suite_format(requested: str | None, scanned: str) -> str:
    from srdd.formats import list_formats

    known = list_formats()
    fmt = requested or scanned
    if fmt not in known:
        hint = "" if requested else f" (the scan's format {scanned!r} is not a srdd format; pass --format)"
        raise SrddError(f"--format {fmt!r} is not a srdd format{hint}; choose from {', '.join(known)}")
    return fmt


def _print_tables(scan, metric_name: str, mults, zones: list[dict], rule: ZoneRule, mode: Mode) -> None:
    metric = get_metric(metric_name)
    depth = {i: z["name"] for z in zones if z["kind"] == "depth" for i in z["layers"]}
    data = {i: z["name"] for z in zones if z["kind"] == "data" for i in z["layers"]}
    transformed = metric.higher_is_better
    shown = METRICS if metric_name in METRICS else (*METRICS, metric_name)
    header = ["layer", *shown, *(["v_i"] if transformed else []), "multiplier", "zone"]
    rows = []
    for m in mults:
        i = m.layer
        zone = depth.get(i, "") + (f" * {data[i]}" if i in data else "")
        rows.append([str(i), *[get_metric(k).format(scan.values[k][i]) for k in shown],
                     *([_short(m.value)] if transformed else []), f"{m.multiplier:.2f}", zone])
    print(f"\n{mode.value} multipliers from {metric_name} (* = in a high-error zone: v_i > mean + "
          f"{rule.band_std:g} std = {rule.threshold(scan.values[metric_name]):.6g})")
    print(_table(header, rows, left=(len(header) - 1,)))
    print(definitions(shown))
    zone_rows = [[z["name"], z["kind"], span(z["layers"]),
                  *[get_metric(k).format(z[k]) for k in shown], f"{z['multiplier_mean']:.2f}"] for z in zones]
    print("\nzones (means over each zone's layers; the same zones as srdd scan/show with --zone-metric "
          f"{metric_name} --band-std {rule.band_std:g})")
    print(_table(["zone", "kind", "layers", *shown, "mean mult."], zone_rows, left=(0, 1)))
    print("  " + rule.describe())
