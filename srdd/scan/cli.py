"""`srdd scan` and `srdd show`."""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from pathlib import Path

import torch

from srdd.errors import SrddError
from srdd.formats import list_formats
from srdd.jsonio import dumps_json, ensure_writable, read_json, write_all_atomic
from srdd.model_files import check_model_files
from srdd.scan.schema import check_scan_report
from srdd.metrics import PRIMARY_METRICS
from srdd.quiet import progress_bars_hidden
from srdd.zones import DEFAULT_BAND_STD, DEFAULT_ZONE_METRIC, ZoneRule

SCAN_EPILOG = """examples:
  srdd scan --fmt mxfp4 --model Qwen2.5-7B
  srdd scan --fmt mxfp4 --model smollm2 --out scan.json
  srdd scan --fmt mxfp4,nvfp4 --model ./Qwen2.5-1.5B-Instruct --samples 64 --max-tokens 512
  srdd scan --fmt mxfp4 --scale-mode rceil --model model.gguf --mode propagated
  srdd scan --fmt nvfp4 --model Qwen/Qwen2.5-7B-Instruct --revision main --offload --dtype bfloat16
  srdd scan --fmt mxfp4,nvfp4 --model smollm2 --sensitivity          # + per-layer damage (one forward per layer)

Models: a local directory, a .gguf file, 'smollm2', a hub id (org/name) or a bare name such as
Qwen2.5-7B (matched in the Hugging Face cache, then among the Qwen2.5, Llama 3 and SmolLM2 families).
Online, hub models download into the Hugging Face cache; offline (HF_HUB_OFFLINE=1) the cache answers.
A model too big for the memory available is offloaded layer by layer automatically.
With several formats, one file is written per format: scan.json -> scan.mxfp4.json, ...
Metrics: SQNR (primary, dB), relative error and deadzone (the published multipliers' inputs),
saturation. Ratios are fractions in the file and percentages on screen.
Every scan also compares the quantized model's next-token distributions with the fp model's (KL, top-1
agreement, perplexities); --sensitivity adds each layer's share of that damage."""


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _formats(value: str) -> list[str]:
    """Format names as the specs write them (MXFP4) or as srdd does (mxfp4): the same format."""
    return [v.lower() for v in _csv(value)]


def register(sub) -> None:
    p = sub.add_parser("scan", help="per-layer quantization error of a model",
                       description="Measure, in one forward pass over calibration prompts, how much a "
                                   "4-bit format damages every decoder layer's activations and weights.",
                       epilog=SCAN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fmt", required=True, type=_formats,
                   help=f"format name or comma list; one of: {', '.join(list_formats())}")
    p.add_argument("--model", required=True,
                   help="model directory, .gguf file, 'smollm2' (embedded default), hub id (Qwen/Qwen2.5-7B) "
                        "or bare name (Qwen2.5-7B)")
    p.add_argument("--revision", help="hub models: branch, tag or commit to load (default: main)")
    p.add_argument("--out", default="scan.json", type=Path, help="output file (default: scan.json)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--data", help="calibration data: .jsonl, .txt or verl GSM8K .parquet "
                                  "(default: built-in math word problems)")
    p.add_argument("--samples", type=int, default=8, help="number of calibration samples (default 8)")
    p.add_argument("--max-tokens", type=int, default=256, help="truncate each sample (default 256)")
    p.add_argument("--batch-size", type=int, default=8,
                   help="samples per forward pass (default 8); lower it when memory is short")
    p.add_argument("--seed", type=int, default=0, help="seed of the built-in problems (default 0)")
    p.add_argument("--sites", type=_csv, default=["block_output", "linear_input"],
                   help="comma list of block_output, linear_input, weight (default: block_output,linear_input)")
    p.add_argument("--mode", choices=["isolated", "propagated"], default="isolated",
                   help="isolated: quantize each fp tensor on the side; propagated: run W4A4 and compare "
                        "each layer's output with the fp model's")
    p.add_argument("--sensitivity", action="store_true",
                   help="also measure, per decoder layer, the output KL with only that layer quantized "
                        "(one forward per layer over the calibration set) and its rank correlation with the "
                        "local metrics")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="dtype the model runs in; the tensors it produces are what gets quantized (default float32)")
    p.add_argument("--device", default="cpu", help="where the model runs: cpu (default), cuda or cuda:N")
    p.add_argument("--scale-mode", type=str.lower, choices=["floor", "rceil"], help="MX scale rule (default floor, OCP)")
    p.add_argument("--no-per-tensor-scale", action="store_true",
                   help="NVFP4 one-level scaling (no fp32 tensor scale)")
    p.add_argument("--group-size", type=int, help="INT4 group size (default 32)")
    p.add_argument("--offload", action=argparse.BooleanOptionalAction, default=None,
                   help="load each decoder layer's weights only while it runs (big models, small RAM); "
                        "default: automatic, when the weights would not fit in the memory available")
    p.add_argument("--max-memory", type=float, metavar="GIB",
                   help="memory the model may use, in GiB (default: what is available on the device)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (model loading, scanning): for logs and CI")
    p.set_defaults(func=run_scan)

    s = sub.add_parser("show", help="re-render a scan.json; export CSV or a plot",
                       description="Print a scan's tables again, with zones computed by the rule srdd "
                                   "calibrate uses, and export them.",
                       epilog="example: srdd show scan.json --csv layers.csv --plot profile.png",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("scan", type=Path, help="a srdd.scan/v1 JSON written by srdd scan")
    s.add_argument("--csv", type=Path, help="write per-layer metrics as CSV (one row per layer)")
    s.add_argument("--plot", type=Path, help="write per-layer profiles (PNG), zones shaded")
    s.add_argument("--zone-metric", choices=(*PRIMARY_METRICS, "sensitivity"), default=DEFAULT_ZONE_METRIC,
                   help="metric whose high-error bands are the data zones (default %(default)s, as srdd calibrate; "
                        "sensitivity needs a scan made with --sensitivity)")
    s.add_argument("--band-std", type=float, default=DEFAULT_BAND_STD, metavar="K",
                   help="data zones: v > mean + K std (default %(default)s, as srdd calibrate)")
    s.add_argument("--force", action="store_true", help="overwrite existing --csv/--plot files")
    s.set_defaults(func=run_show)


def output_paths(out: Path, formats: list[str]) -> list[Path]:
    if len(formats) == 1:
        return [out]
    return [out.with_name(f"{out.stem}.{fmt}{out.suffix or '.json'}") for fmt in formats]


def run_scan(args) -> int:
    import time

    from srdd.models import load_causal_lm, model_info, resolve_model
    from srdd.provenance import command_line, machine, versions
    from srdd.scan.memory import GIB, decide_offload
    from srdd.scan.offload import load_offloaded
    from srdd.scan.render import render
    from srdd.scan.runner import ScanConfig, scan_model

    started = time.monotonic()
    options: dict = {}
    if args.scale_mode:
        options["scale_mode"] = args.scale_mode
    if args.no_per_tensor_scale:
        options["per_tensor_scale"] = False
    if args.group_size is not None:
        options["group_size"] = args.group_size
    cfg = ScanConfig(formats=tuple(args.fmt), format_options=options, sites=tuple(args.sites),
                     mode=args.mode, samples=args.samples, max_tokens=args.max_tokens,
                     batch_size=args.batch_size, seed=args.seed, data=args.data, sensitivity=args.sensitivity)
    paths = output_paths(args.out, args.fmt)
    for path in paths:
        ensure_writable(path, force=args.force)
    if args.data is not None and not Path(args.data).is_file():
        raise SrddError(f"data file {args.data} does not exist")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", args.device):
        raise SrddError(f"--device must be cpu, cuda or cuda:N, got {args.device!r}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SrddError("--device cuda requested but no CUDA device is available")
    if args.max_memory is not None and args.max_memory <= 0:
        raise SrddError(f"--max-memory must be > 0 GiB, got {args.max_memory:g}")
    check_model_files(args.model)  # a local file is checked before anything parses it
    source = resolve_model(args.model, revision=args.revision)
    check_model_files(str(source.path))
    dtype = getattr(torch, args.dtype)
    decision = decide_offload(source.path, dtype, args.device, force=args.offload,
                              limit_bytes=None if args.max_memory is None else int(args.max_memory * GIB))
    if decision.offload:
        print(f"srdd scan: {decision.reason}", file=sys.stderr, flush=True)
    with progress_bars_hidden() if args.no_progress else contextlib.nullcontext():
        if decision.offload:
            model, tokenizer = load_offloaded(source, dtype=dtype, device=args.device)
        else:
            model, tokenizer = load_causal_lm(source, dtype=dtype, device=args.device)
    info = model_info(model, source)
    docs = scan_model(model, tokenizer, cfg, model_info=info, progress=not args.no_progress)
    provenance = {"command": command_line(), "versions": versions(), "machine": machine(args.device),
                  "offload": decision.to_dict(), "wall_time_s": round(time.monotonic() - started, 3)}
    for doc in docs:
        doc["provenance"] = provenance
    write_all_atomic([(path, dumps_json(doc).encode("utf-8")) for doc, path in zip(docs, paths)], force=args.force)
    for doc, path in zip(docs, paths):  # one format's file never exists without the others'
        print(render(doc))
        print(f"\nwrote {path}\n")
    return 0


def run_show(args) -> int:
    from srdd.scan.export import write_csv, write_plot
    from srdd.scan.render import render
    from srdd.scan.report import with_correlations, with_zones

    doc = read_json(args.scan, what="scan")
    check_scan_report(doc, str(args.scan))
    for path in (args.csv, args.plot):
        if path is not None:
            ensure_writable(path, force=args.force)
    doc = with_correlations(with_zones(doc, ZoneRule(args.zone_metric, args.band_std)))
    print(render(doc))
    if args.csv:
        print(f"wrote {write_csv(doc, args.csv, force=args.force)}")
    if args.plot:
        print(f"wrote {write_plot(doc, args.plot, force=args.force)}")
    return 0
