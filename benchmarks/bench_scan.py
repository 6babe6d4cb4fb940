"""Scan cost against a plain no-grad forward over the same tokens.

    python benchmarks/bench_scan.py            # SmolLM2, 8 x 256 tokens, block_output + linear_input
    python benchmarks/bench_scan.py --offload-rss
    python benchmarks/bench_scan.py --big      # the mission command on a Qwen2.5-7B-shaped model

Prints the wall-time ratio scan / forward (goal <= 1.15) and, with
--offload-rss, the peak RSS of `srdd scan --offload` against the normal mode
(each in a fresh process, from /proc's VmHWM).

--big builds (once, ~15 GB, see benchmarks/big_model.py) a Qwen2.5-7B-shaped
model with random bf16 weights laid out as a Hugging Face hub cache, then runs
`srdd scan --fmt mxfp4 --model Qwen2.5-7B` exactly as typed (offline, against
that cache: it must offload by itself) and a plain offloaded forward over the
same calibration batches, each in a fresh process, and reports both processes'
wall time and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from srdd.cache import cache_root
from srdd.mathdata import generate_problems
from srdd.models import load_causal_lm, model_info, resolve_model
from srdd.scan.runner import ScanConfig, batches, scan_model


def long_texts(n: int, tokens: int, tokenizer) -> list[list[int]]:
    """n samples of exactly `tokens` tokens, built from the math problems."""
    problems = iter(generate_problems(n * 40, seed=3))
    out = []
    for _ in range(n):
        ids: list[int] = []
        while len(ids) < tokens:
            ids += tokenizer(next(problems).question + " ")["input_ids"]
        out.append(ids[:tokens])
    return out


def timed(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measured(argv: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """(peak RSS MiB, wall s, stdout+stderr) of `srdd ARGV` run in a fresh process (VmHWM read at its exit)."""
    script = ("import re,sys; sys.argv=" + repr(["srdd", *argv])
              + "; from srdd.cli import main\ntry: main(sys.argv[1:])\nfinally: print('HWM', "
                "re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))")
    return _measured_script(script, env)


def _measured_script(script: str, env: dict | None) -> tuple[float, float, str]:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"benchmark process failed:\n{done.stderr[-3000:]}")
    return int(re.search(r"HWM (\d+)", done.stdout).group(1)) / 1024, wall, done.stdout + done.stderr


def peak_rss_mib(model: str, offload: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["scan", "--fmt", "mxfp4", "--model", model, "--out", f"{tmp}/s.json", "--no-progress"]
        return measured(argv + ["--offload" if offload else "--no-offload"])[0]


# The plain offloaded forward: the same model, batches and offload, no scan hooks, no statistics.
PLAIN_FORWARD = """
import re, sys
import torch
from srdd.calibration_prompts import load_samples, tokenize
from srdd.models import resolve_model
from srdd.scan.offload import load_offloaded
from srdd.scan.runner import ScanConfig, batches
cfg = ScanConfig()
model, tok = load_offloaded(resolve_model(sys.argv[1]))
ids = tokenize(load_samples(None, cfg.samples, cfg.seed), tok, cfg.max_tokens)
with torch.no_grad():
    for input_ids, mask in batches(ids, cfg.batch_size, tok.pad_token_id):
        model(input_ids=input_ids, attention_mask=mask, use_cache=False)
print("HWM", re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
"""


def big(cache: Path) -> None:
    from big_model import build

    t0 = time.perf_counter()
    snapshot = build(cache)
    print(f"model: {snapshot} (ready in {time.perf_counter() - t0:.0f} s)", flush=True)
    env = {**os.environ, "HF_HUB_CACHE": str(cache / "hub"), "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["scan", "--fmt", "mxfp4", "--model", "Qwen2.5-7B", "--out", f"{tmp}/scan.json"]
        scan_rss, scan_wall, log = measured(argv, env)
        doc = json.loads(Path(tmp, "scan.json").read_text())
    print("\n".join(line for line in log.splitlines() if line.startswith("srdd scan:")))
    cal = doc["calibration"]
    print(f"srdd scan --fmt mxfp4 --model Qwen2.5-7B: {scan_wall:.0f} s, peak RSS {scan_rss / 1024:.2f} GiB; "
          f"{cal['samples']} samples, {cal['tokens']} tokens; model {doc['model']['repo_id']}@"
          f"{doc['model']['revision'][:12]}, offload {doc['provenance']['offload']['enabled']}")
    fwd_rss, fwd_wall, _ = _measured_script(PLAIN_FORWARD.replace("sys.argv[1]", repr("Qwen2.5-7B")), env)
    print(f"plain offloaded forward, same batches: {fwd_wall:.0f} s, peak RSS {fwd_rss / 1024:.2f} GiB")
    print(f"ratio scan/forward: wall {scan_wall / fwd_wall:.2f}, peak RSS {scan_rss / fwd_rss:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--offload-rss", action="store_true", help="also compare peak RSS of --offload vs normal")
    p.add_argument("--big", action="store_true", help="the mission command on a Qwen2.5-7B-shaped model")
    p.add_argument("--cache", type=Path, default=cache_root() / "bench", help="where --big keeps its model")
    args = p.parse_args()
    if args.big:
        big(args.cache)
        return

    model, tok = load_causal_lm(args.model)
    ids = long_texts(args.samples, args.tokens, tok)
    texts = [tok.decode(s) for s in ids]
    cfg = ScanConfig(sites=("block_output", "linear_input"), samples=args.samples,
                     max_tokens=args.tokens, batch_size=args.samples)
    info = model_info(model, resolve_model(args.model))
    (input_ids, mask), = list(batches(ids, args.samples, tok.pad_token_id))

    def forward() -> None:
        with torch.no_grad():
            model(input_ids=input_ids, attention_mask=mask, use_cache=False)

    def scan() -> None:
        scan_model(model, tok, cfg, model_info=info, progress=False, texts=texts)

    t_fwd = timed(forward, args.repeat)
    t_scan = timed(scan, args.repeat)
    print(f"model {info['name']}: {args.samples} x {args.tokens} tokens, threads {torch.get_num_threads()}")
    print(f"plain forward   {t_fwd:8.3f} s")
    print(f"scan (isolated) {t_scan:8.3f} s")
    print(f"ratio scan/forward = {t_scan / t_fwd:.3f}  (goal <= 1.15)")
    if args.offload_rss:
        normal, offload = peak_rss_mib(args.model, False), peak_rss_mib(args.model, True)
        print(f"peak RSS: normal {normal:.0f} MiB, --offload {offload:.0f} MiB (ratio {offload / normal:.2f})")


if __name__ == "__main__":
    main()
