"""Scan cost against a plain no-grad forward over the same tokens, in one process.

    python benchmarks/bench_scan.py            # SmolLM2, 8 x 256 tokens, block_output + linear_input
    python benchmarks/bench_scan.py --offload-rss

Prints the wall-time ratio scan / forward (goal <= 1.15) and, with
--offload-rss, the peak RSS of `srdd scan --offload` against the normal mode
(each in a fresh process, from /proc's VmHWM).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from srdd.mathdata import generate_problems
from srdd.models import load_causal_lm, model_info
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


def peak_rss_mib(model: str, offload: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["srdd", "scan", "--fmt", "mxfp4", "--model", model, "--out", f"{tmp}/s.json", "--no-progress"]
        script = ("import re,sys,runpy; sys.argv=" + repr(cmd + (["--offload"] if offload else []))
                  + "; from srdd.cli import main\ntry: main(sys.argv[1:])\nfinally: print('HWM', "
                    "re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))")
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
        return int(re.search(r"HWM (\d+)", out).group(1)) / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--offload-rss", action="store_true", help="also compare peak RSS of --offload vs normal")
    args = p.parse_args()

    model, tok = load_causal_lm(args.model)
    ids = long_texts(args.samples, args.tokens, tok)
    texts = [tok.decode(s) for s in ids]
    cfg = ScanConfig(sites=("block_output", "linear_input"), samples=args.samples,
                     max_tokens=args.tokens, batch_size=args.samples)
    info = model_info(model, args.model)
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
