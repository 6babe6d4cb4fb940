"""Where a whole `srdd train` run spends its time and memory, phase by phase, against what the CPU could do.

    python benchmarks/bench_run.py --preset learn                      # one profiled run, seconds
    python benchmarks/bench_run.py --preset demo --set grpo.steps=2 --set eval.every=2 --set grpo.save_every=2
    python benchmarks/bench_run.py --preset demo --reference --rounds 2     # + a plain bf16 LoRA GRPO run
    python benchmarks/bench_run.py --preset demo --refs main,cost --rounds 2  # two versions, interleaved
    python benchmarks/bench_run.py --preset demo --refs main,cost --study-run  # as a study's later runs of an arm
    python benchmarks/bench_run.py --preset demo --refs old,new \
        --variant "final 512:task.test_size=512,eval.final_samples=512,eval.endpoint_only=true" --variant-refs new

Each run is a child process (a fresh heap, so its peak RSS is its own) training one
preset with the usual `--set` overrides. Its time is split into phases by wrapping
the functions that do each job; a phase's time is exclusive (a generation inside a
rollout counts once, as generation), and resident memory, sampled every 20 ms, is
attributed to the innermost phase running (the run's peak of anonymous memory, resident less file-backed
pages, is reported beside it: the model's safetensors are memory-mapped, and a frozen weight that is never
written stays a page of that file, which the kernel can drop and read again; and, at that peak, how much of
malloc's heaps was free, holes that stay resident: fragmentation rather than data):

    setup          preflight, task, noise injector (fp32 masters), dataset, TRL trainer construction
    load           base model, LoRA, fake quantization (train.load_policy)
    rescan         the before/after scans (train.rescan)
    validation     greedy validation of every validated step, both LoRA settings
    generation     TRL's rollout generation (noise already written)
    noise write / noise restore / noise readback   perturb, restore, nominal + effective σ per layer
    log-probs      the policy's forward over prompt + completion for the loss (TRL's fused LM head)
    log-probs (no grad)   old/reference log-probs, when the configuration needs them
    backward       loss.backward()
    optimizer      AdamW steps
    rollout other  reward scoring, advantages, batching around generation
    update other   the trainer's step around forward/backward
    checkpoint     TRL checkpoint writes
    other          everything else (config, task, run directory, trainer construction)

Bounds, measured in the same child after its run, on the trained policy as its last scan left it
(LoRA merged: the bound skips the adapters' small GEMMs, so it is a little tighter)
(quantized, LoRA beside it), `--bound-rounds` interleaved rounds, min and median:
`prefill` (a no-grad forward of one rollout batch of the run's training prompts,
tokens/s) and a `decode` step (one token for every sequence of a batch, KV cache of
the prompt, at the rollout batch and at the validation batch). A phase's ratio is
bound throughput / achieved throughput ("x× its bound"): generation and validation
against the decode step at their batch (decode positions computed: every row of a
batch runs until the batch's longest completion ends), log-probs and backward
against prefill (a backward through frozen base weights computes input gradients
only, about one forward's FLOPs, so 1× would be tight for it too).

`--reference` adds, in every round, the plain bf16 LoRA GRPO run of the same shape
(grpo.dtype=bfloat16, quant.mode=none, noise off). `--refs A,B` runs the same
configuration from other commits (each checked out with `git archive` into a temp
dir and put first on the child's PYTHONPATH), interleaved round by round, so that a
busy machine slows every version alike; it prints each phase's min and median per
version and the ratio of total wall times. `--variant "LABEL:KEY=VALUE,..."` adds a
configuration (the preset, the `--set`s and these), run by the versions `--variant-refs`
names (default: all; a version that predates a setting refuses it), and compared, like
every other configuration, with the first version's plain one. `--json FILE` writes
every child's raw profile.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

RSS_SAMPLE_S = 0.02
REFERENCE_SETS = ("grpo.dtype=bfloat16", "quant.mode=none", "noise.enabled=false")
PHASE_ORDER = ("setup", "load", "rescan", "validation", "generation", "noise write", "noise restore", "noise readback",
               "log-probs", "log-probs (no grad)", "backward", "optimizer", "rollout other", "update other",
               "checkpoint", "other")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


def _mallinfo2() -> Callable[[], _MallInfo2] | None:
    """glibc's heap statistics (2.33+), or None."""
    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    return fn


MALLINFO2 = _mallinfo2()


def heap_usage() -> dict | None:
    """What malloc's heaps hold, in MiB, and how much of it is free: holes between live blocks, resident until
    reused or trimmed (fragmentation, not data); beside it, what malloc mapped block by block. None without glibc."""
    if MALLINFO2 is None:
        return None
    m = MALLINFO2()
    return {"heap_mib": m.arena / 2**20, "heap_free_mib": m.fordblks / 2**20, "mapped_mib": m.hblkhd / 2**20}


class Profiler:
    """Exclusive wall time, calls, tokens and peak RSS per phase; phases nest on one stack, the main thread's.

    Work in other threads (update passes run ahead, rin_train.trl.parallel_passes; validation batches side by
    side) is not a phase of its own: it runs while the main thread's phase does, and that phase's wall time is
    what it costs. Its tokens count under the phase its function names."""

    def __init__(self) -> None:
        self.stack: list[str] = ["other"]
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.tokens: dict[str, int] = {}
        self.peak_rss: dict[str, int] = {}
        self.peak_anon = 0  # resident minus file-backed and shared pages: memory only this process can give back
        self.heap_at_peak: dict | None = None  # heap_usage() when the anonymous peak was sampled
        self._mark = time.perf_counter()
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def _switch(self) -> None:
        """Charge the time since the last switch to the phase on top of the stack."""
        now = time.perf_counter()
        top = self.stack[-1]
        self.seconds[top] = self.seconds.get(top, 0.0) + now - self._mark
        self._mark = now

    def enter(self, name: str) -> None:
        self._switch()
        self.stack.append(name)
        self.calls[name] = self.calls.get(name, 0) + 1

    def leave(self) -> None:
        self._switch()
        self.stack.pop()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.enter(name)
        try:
            yield
        finally:
            self.leave()

    def count_tokens(self, n: int, phase: str | None = None) -> None:
        top = self.stack[-1] if phase is None else phase
        self.tokens[top] = self.tokens.get(top, 0) + n

    def wrap(self, owner, attr: str, name: str | Callable[..., str]) -> None:
        """Replace owner.attr by a wrapper that runs it inside phase `name` (or name(*args) -> phase), when the
        main thread calls it."""
        inner = getattr(owner, attr)

        def wrapped(*args, **kwargs):
            if threading.current_thread() is not threading.main_thread():
                return inner(*args, **kwargs)
            with self.phase(name(*args, **kwargs) if callable(name) else name):
                return inner(*args, **kwargs)

        setattr(owner, attr, wrapped)

    def _sample(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        with open("/proc/self/statm") as fh:
            while not self._stop.wait(RSS_SAMPLE_S):
                fh.seek(0)
                _, resident, shared = (int(x) for x in fh.read().split()[:3])
                rss = resident * page
                top = self.stack[-1]
                self.peak_rss[top] = max(self.peak_rss.get(top, 0), rss)
                anon = (resident - shared) * page
                if anon > self.peak_anon:
                    self.peak_anon = anon
                    self.heap_at_peak = heap_usage()

    def start(self) -> None:
        self._mark = time.perf_counter()
        self._sampler.start()

    def stop(self) -> dict:
        self._switch()
        self._stop.set()
        self._sampler.join()
        return {"seconds": self.seconds, "calls": self.calls, "tokens": self.tokens,
                "peak_rss_mib": {k: v / 2**20 for k, v in self.peak_rss.items()},
                "peak_anon_mib": self.peak_anon / 2**20, "heap_at_anon_peak": self.heap_at_peak}


def install(prof: Profiler, captured: dict) -> None:
    """Wrap the functions of a run that do each phase's job (module attributes the run looks up at call time)."""
    import accelerate
    import torch
    import transformers
    from torch.optim import optimizer as optim
    from trl import GRPOTrainer

    import rin_train.train as train
    import rin_train.trl.engine as engine
    from rin_train.noise import NoiseInjector

    load_policy = train.load_policy

    def load_and_keep(*args, **kwargs):
        out = load_policy(*args, **kwargs)
        captured["model"], captured["tokenizer"] = out[0], out[1]
        return out

    train.load_policy = load_and_keep
    prof.wrap(train, "load_policy", "load")
    prof.wrap(train, "rescan", "rescan")
    for owner, attr in ((train, "preflight"), (train, "load_task"), (engine, "build_dataset"),
                        (GRPOTrainer, "__init__"), (NoiseInjector, "__init__")):
        prof.wrap(owner, attr, "setup")
    prof.wrap(engine, "evaluate", "validation")
    prof.wrap(GRPOTrainer, "_generate_single_turn", "generation")
    prof.wrap(GRPOTrainer, "_prepare_inputs", "rollout other")
    prof.wrap(GRPOTrainer, "training_step", "update other")
    prof.wrap(GRPOTrainer, "_save_checkpoint", "checkpoint")
    prof.wrap(accelerate.Accelerator, "backward", "backward")
    prof.wrap(NoiseInjector, "perturb", "noise write")
    prof.wrap(NoiseInjector, "restore", "noise restore")
    prof.wrap(NoiseInjector, "nominal_layers", "noise readback")
    prof.wrap(NoiseInjector, "effective_layers", "noise readback")
    generate = transformers.GenerationMixin.generate

    def counted_generate(self, *args, **kwargs):
        prompt = kwargs.get("input_ids", args[0] if args else None)
        out = generate(self, *args, **kwargs)
        sequences = out if isinstance(out, torch.Tensor) else out.sequences
        if prompt is not None:
            prof.count_tokens(sequences.shape[0] * (sequences.shape[1] - prompt.shape[1]))
        return out

    transformers.GenerationMixin.generate = counted_generate
    # the engine's trainer: its own log-probs (grpo.shared_prompt) where it has them, else TRL's
    forward = engine.NoisyGRPOTrainer._get_per_token_logps_and_entropies

    def counted_logps(self, model, input_ids, *args, **kwargs):
        prof.count_tokens(int(input_ids.numel()), "log-probs" if torch.is_grad_enabled() else "log-probs (no grad)")
        return forward(self, model, input_ids, *args, **kwargs)

    engine.NoisyGRPOTrainer._get_per_token_logps_and_entropies = counted_logps
    prof.wrap(engine.NoisyGRPOTrainer, "_get_per_token_logps_and_entropies",
              lambda *a, **k: "log-probs" if torch.is_grad_enabled() else "log-probs (no grad)")
    optim.register_optimizer_step_pre_hook(lambda *_: prof.enter("optimizer"))
    optim.register_optimizer_step_post_hook(lambda *_: prof.leave())


def bounds(model, tokenizer, cfg, rounds: int) -> dict:
    """Prefill tokens/s on one rollout batch of the run's prompts; decode-step tokens/s at both batches."""
    import torch

    from rin_train.tasks import load_task, prompt_text

    train, test = load_task(cfg.task, cfg.seed)
    per_step = cfg.grpo.batch_size // cfg.grpo.num_generations
    rollout = [e for e in train[:per_step] for _ in range(cfg.grpo.num_generations)]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"

    def encode(examples):
        return tokenizer([prompt_text(tokenizer, e) for e in examples], return_tensors="pt", padding=True,
                         add_special_tokens=False)

    batches = {"prefill": encode(rollout), "decode (rollout batch)": encode(rollout),
               "decode (validation batch)": encode(test[:cfg.eval.batch_size])}
    tokenizer.padding_side = side
    model.eval()
    times: dict[str, list[float]] = {k: [] for k in batches}
    with torch.no_grad():
        for _ in range(rounds):
            for name, enc in batches.items():
                if name == "prefill":
                    t0 = time.perf_counter()
                    model(**enc, use_cache=False)
                    times[name].append(time.perf_counter() - t0)
                    continue
                out = model(**enc, use_cache=True)
                step = out.logits[:, -1:].argmax(-1)
                mask = torch.cat([enc["attention_mask"], torch.ones_like(step)], dim=1)
                t0 = time.perf_counter()
                model(input_ids=step, attention_mask=mask, past_key_values=out.past_key_values, use_cache=True)
                times[name].append(time.perf_counter() - t0)
    tokens = {"prefill": int(batches["prefill"]["attention_mask"].sum()),
              "decode (rollout batch)": len(rollout), "decode (validation batch)": len(test[:cfg.eval.batch_size])}
    return {name: {"tokens": tokens[name], "seconds_min": min(ts), "seconds_median": statistics.median(ts),
                   "tokens_per_s": tokens[name] / min(ts)} for name, ts in times.items()}


def process_settings() -> None:
    """What the version's `srdd` command sets for its process before torch loads (nothing before srdd.threads)."""
    try:
        from srdd.threads import passive_openmp_wait
    except ImportError:
        return
    passive_openmp_wait()


def child(preset_name: str, sets: list[str], bound_rounds: int, out: Path, step0: Path | None = None) -> None:
    """One profiled run; its profile, bounds and metrics as JSON into `out` (`step0`: the run's --step0-cache)."""
    from rin_train.presets import preset
    from rin_train.run_config import load_run_config

    prof = Profiler()
    captured: dict = {}
    install(prof, captured)
    import rin_train.train as train

    cfg = load_run_config(None, sets, preset=preset(preset_name), name="bench")
    prof.start()
    t0, cpu0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        run = train.run_training(cfg, Path(tmp) / "run", **({} if step0 is None else {"step0_cache": step0}))
        records = run.logged_steps()
        status = run.info()["status"]
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    profile = prof.stop()
    generated = sum((r.get("completion_mean_length") or 0) * cfg.grpo.batch_size for r in records if r["step"])
    doc = {"preset": preset_name, "sets": sets, "status": status, "wall_s": wall, "cpu_s": cpu, "profile": profile,
           "completion_tokens": generated, "validated_problems": cfg.eval.samples * _validations(records),
           "bounds": bounds(captured["model"], captured["tokenizer"], cfg, bound_rounds),
           "threads": __import__("torch").get_num_threads(), "config": cfg.to_dict()}
    out.write_text(json.dumps(doc))


def _validations(records: list[dict]) -> int:
    """Validations a run made: one per validated step, a second (merged LoRA) at the final one; a step-0
    validation copied from the cache (rin_train.step0) was not made."""
    return sum(("eval_reused_from" not in r) + ("eval_merged" in r) for r in records if r.get("accuracy") is not None)


def ratios(doc: dict) -> dict[str, float]:
    """Per phase with a bound: bound throughput / achieved throughput (1 = at the bound)."""
    prof, b = doc["profile"], doc["bounds"]
    against = {"generation": "decode (rollout batch)", "validation": "decode (validation batch)",
               "log-probs": "prefill", "backward": "prefill"}
    out = {}
    for phase, bound in against.items():
        seconds = prof["seconds"].get(phase)
        tokens = prof["tokens"].get("log-probs" if phase == "backward" else phase)
        if seconds and tokens:
            out[phase] = b[bound]["tokens_per_s"] / (tokens / seconds)
    return out


def checkout(ref: str, into: Path) -> Path:
    """The tree of commit `ref` (of this repository) in `into`, for a child's PYTHONPATH."""
    root = Path(__file__).resolve().parents[1]
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(root), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run_child(pythonpath: str | None, preset_name: str, sets: list[str], bound_rounds: int, tmp: Path,
              env_overrides: dict[str, str | None] | None = None, as_srdd: bool = True,
              step0: Path | None = None) -> dict:
    """One profiled run in a child process; `env_overrides` sets (or, with None, unsets) its environment;
    `as_srdd` False skips what the `srdd` command sets for its process (to measure what it changes); `step0`
    is the run's --step0-cache."""
    out = tmp / f"profile-{time.monotonic_ns()}.json"
    env = dict(os.environ)
    for key, value in (env_overrides or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    argv = [sys.executable, __file__, "--child", str(out), "--preset", preset_name, "--bound-rounds",
            str(bound_rounds), *[x for s in sets for x in ("--set", s)], *([] if as_srdd else ["--bare"]),
            *([] if step0 is None else ["--step0-cache", str(step0)])]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"profiled run failed ({' '.join(sets)}):\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def has_step0(path: str | None) -> bool:
    """Whether a version (checked out at `path`; None: the code on PYTHONPATH) shares step-0 validations."""
    if path is None:
        import importlib.util

        return importlib.util.find_spec("rin_train.step0") is not None
    return (Path(path) / "rin_train" / "step0.py").is_file()


def spread(values: list[float]) -> str:
    return f"{min(values):8.1f} {statistics.median(values):8.1f}"


def named(label: str, ref: str | None) -> str:
    """A configuration as the output names it: with the commit that ran it, where --refs chose one."""
    return label if ref is None else f"{label} @ {ref}"


def report(label: str, docs: list[dict]) -> None:
    """One table per configuration: phase seconds (min, median over rounds), share, peak RSS, ratio to bound."""
    walls = [d["wall_s"] for d in docs]
    phases = [p for p in PHASE_ORDER if any(p in d["profile"]["seconds"] for d in docs)]
    first = docs[0]
    print(f"\n{label}: {first['status']}, {first['threads']} threads, wall min {min(walls):.1f} s, "
          f"median {statistics.median(walls):.1f} s over {len(docs)} round(s)")
    print(f"  {'phase':<22} {'min s':>8} {'med s':>8} {'share':>6} {'peak MiB':>9} {'tokens':>8} {'x bound':>12}")
    for p in phases:
        secs = [d["profile"]["seconds"].get(p, 0.0) for d in docs]
        share = statistics.median(s / d["wall_s"] for s, d in zip(secs, docs))
        peak = max(d["profile"]["peak_rss_mib"].get(p, 0.0) for d in docs)
        tokens = first["profile"]["tokens"].get(p, "")
        rs = [ratios(d).get(p) for d in docs]
        ratio = f"{min(rs):5.1f} {statistics.median(rs):5.1f}" if None not in rs else ""
        print(f"  {p:<22} {spread(secs)} {100 * share:5.1f}% {peak:9.0f} {tokens!s:>8} {ratio:>12}")
    peak = max(max(d["profile"]["peak_rss_mib"].values()) for d in docs)
    anon = max(d["profile"].get("peak_anon_mib", 0.0) for d in docs)
    print(f"  peak RSS {peak:.0f} MiB (of it, at most {anon:.0f} MiB anonymous: the rest is file pages, the "
          f"memory-mapped model file's among them); completion tokens {first['completion_tokens']:.0f}; "
          f"validated problems {first['validated_problems']}")
    heaps = [d["profile"].get("heap_at_anon_peak") for d in docs]
    if all(heaps):
        worst = max(heaps, key=lambda h: h["heap_free_mib"])
        print(f"  at the anonymous peak, malloc's heaps held {worst['heap_mib']:.0f} MiB, {worst['heap_free_mib']:.0f} "
              f"of it free (holes between live blocks, resident); {worst['mapped_mib']:.0f} MiB mapped block by block "
              "(the round whose heap held most free)")
    for name, b in first["bounds"].items():
        tps = [d["bounds"][name]["tokens_per_s"] for d in docs]
        print(f"  bound {name:<26} {max(tps):9.0f} tokens/s (best round), batch of {b['tokens']} tokens")
    gen = [d["profile"]["tokens"].get("generation", 0) / d["profile"]["seconds"]["generation"]
           for d in docs if d["profile"]["seconds"].get("generation")]
    if gen:
        print(f"  generation: {max(gen):.0f} decode positions/s (best round)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="demo")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds of every configuration (default 1)")
    p.add_argument("--bound-rounds", type=int, default=3, help="interleaved rounds of the bounds (default 3)")
    p.add_argument("--reference", action="store_true", help="also the plain bf16 LoRA GRPO run of the same shape")
    p.add_argument("--refs", help="comma-separated commits to compare (default: the code on PYTHONPATH)")
    p.add_argument("--variant", action="append", default=[], metavar="LABEL:KEY=VALUE,...",
                   help="another configuration: the preset with the --sets and these (repeatable)")
    p.add_argument("--variant-refs", help="the commits of --refs that run the variants (default: all)")
    p.add_argument("--json", type=Path, help="write every child's raw profile here")
    p.add_argument("--study-run", action="store_true",
                   help="time a study's later runs of an arm: each copies its step-0 validation from a cache that "
                        "one unmeasured run per version fills first (versions without rin_train.step0 validate)")
    p.add_argument("--step0-cache", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rounds < 1 or args.bound_rounds < 1:
        p.error("--rounds and --bound-rounds must be >= 1")
    if args.child:
        if not args.bare:
            process_settings()
        child(args.preset, args.set, args.bound_rounds, args.child, args.step0_cache)
        return
    configs = {args.preset: list(args.set)}
    if args.reference:
        configs[f"{args.preset} as plain bf16 LoRA"] = [*args.set, *REFERENCE_SETS]
    variants: set[str] = set()
    for variant in args.variant:
        label, colon, sets = variant.partition(":")
        if not (colon and label.strip() and sets.strip()):
            p.error(f"--variant {variant!r}: write it LABEL:KEY=VALUE[,KEY=VALUE...]")
        name = f"{args.preset}, {label.strip()}"
        variants.add(name)
        configs[name] = [*args.set, *(s.strip() for s in sets.split(","))]
    variant_refs = set(args.variant_refs.split(",")) if args.variant_refs else None
    if variant_refs and not (args.refs and variant_refs <= set(args.refs.split(","))):
        p.error("--variant-refs names commits that --refs does not")

    def runs_config(ref: str | None, label: str) -> bool:
        """Whether version `ref` runs configuration `label` (the preset's and --reference's: every version)."""
        return variant_refs is None or ref in variant_refs or label not in variants
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp_name:
        tmp = Path(tmp_name)
        versions = {None: None} if not args.refs else {
            ref: str(checkout(ref, tmp / f"src-{i}")) for i, ref in enumerate(args.refs.split(","))}
        step0 = {ref: tmp / "step0" if args.study_run and has_step0(path) else None for ref, path in versions.items()}
        for ref, path in versions.items():
            for label, sets in configs.items():
                if step0[ref] is not None and runs_config(ref, label):
                    run_child(path, args.preset, sets, 1, tmp, step0=step0[ref])
                    print(f"warm-up: {named(label, ref)} stored its step-0 validation",
                          flush=True)
        docs: dict[tuple, list[dict]] = {}
        for r in range(args.rounds):
            for ref, path in versions.items():
                for label, sets in (item for item in configs.items() if runs_config(ref, item[0])):
                    doc = run_child(path, args.preset, sets, args.bound_rounds, tmp, step0=step0[ref])
                    docs.setdefault((ref, label), []).append(doc)
                    print(f"round {r + 1}: {named(label, ref)}: {doc['wall_s']:.1f} s",
                          flush=True)
    for (ref, label), runs in docs.items():
        report(named(label, ref), runs)
    first = next(iter(versions))
    for (ref, label), runs_of in docs.items():
        # a variant against the first version's plain configuration, anything else against its own in that version
        against = (first, args.preset if label in variants else label)
        if (ref, label) != against and against in docs:
            pairs = [b["wall_s"] / a["wall_s"] for a, b in zip(docs[against], runs_of)]
            print(f"wall {named(label, ref)} / {named(against[1], first)} = min {min(pairs):.2f}, "
                  f"median {statistics.median(pairs):.2f}")
    if args.json:
        args.json.write_text(json.dumps([{"ref": ref, "label": label, "runs": runs}
                                         for (ref, label), runs in docs.items()], indent=1))


if __name__ == "__main__":
    main()
