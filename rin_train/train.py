"""One training run end to end.

    preflight (config vs model, task files, --out free)   <- every config error lands here, no run dir yet
    load policy: base model + LoRA + fake quantization (modules counted by kind; the list into the run dir)
    noise injector (validated against the model)
    RunDir.create / open_for_resume
    scan_before (policy under the training format)
    GRPO (rin_train.trl.engine) with validation at step 0, every N and at the final step; watchdog
    scan_after (trained policy, LoRA applied)
    status: complete only when the final step was validated (lesson 6);
            failed (exception, SIGTERM, watchdog, zero-variance stop) with the reason;
            invalid when training ended without the final validation.

A process killed outright (SIGKILL, power loss) leaves status "running" with
no live lock holder (`RunDir.is_live()` is false): never complete, and
`srdd train --resume --out DIR` continues it.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
import sys
import time
from pathlib import Path

import torch

from rin_train.lora_merge import lora_merged
from rin_train.noise import NoiseInjector
from rin_train.rundir import RunDir
from rin_train.signals import Terminated, terminate_on_signals
from rin_train.step0 import Step0Cache, check_directory
from rin_train.run_config import RunConfig, check_against_model
from rin_train.tasks import drop_long_prompts, load_task
from srdd.errors import SrddError
from srdd.memory import frozen_weights_packed, release_free_memory, steady_heap, update_allocations_mapped
from srdd.jsonio import write_text_atomic
from srdd.model_files import check_model_files
from srdd.models import load_causal_lm, model_info, resolve_model
from srdd.provenance import command_line, machine
from srdd.qlinear import count_by_kind, quantization_disabled, quantize_linears
from srdd.quiet import library_notices_silenced, progress_bars_hidden
from srdd.threads import update_workers
from srdd.tiny import TINY_LAYERS, TINY_MODELS


def model_num_layers(spec: str) -> int:
    """Decoder depth from the model's config.json, without loading weights."""
    if spec in TINY_MODELS:
        return TINY_LAYERS
    check_model_files(spec)  # a local file is checked before anything parses it
    path = resolve_model(spec).path
    check_model_files(str(path))
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SrddError(f"cannot read {path / 'config.json'}: {exc}") from None
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(config.get(key), int):
            return config[key]
    raise SrddError(f"{path / 'config.json'} does not say how many decoder layers the model has")


def preflight(cfg: RunConfig, out: Path, *, resume: bool, step0_cache: Path | None = None) -> None:
    """Everything that can be checked before a model is loaded or a run directory made."""
    if cfg.engine != "trl":
        raise SrddError(f"engine {cfg.engine!r}: this process runs the trl engine (use srdd train --engine verl)")
    if not resume and (out.exists() or out.is_symlink()):
        raise SrddError(f"run directory {out} already exists; runs are never overwritten "
                        "(choose another --out, or pass --resume to continue that run)")
    check_against_model(cfg, model_num_layers(cfg.model))
    load_task(cfg.task, cfg.seed)  # task files readable, sizes satisfiable
    update_workers()  # SRDD_PASS_WORKERS readable
    update_allocations_mapped()  # SRDD_MAPPED_UPDATE readable
    frozen_weights_packed()  # SRDD_PACKED_WEIGHTS readable
    if step0_cache is not None:
        check_directory(step0_cache)


QUANTIZED_LIST = "quantized_modules.txt"


def load_policy(cfg: RunConfig, *, verbose: bool = False):
    """Base model (grpo.dtype) + LoRA (peft) + fake quantization of every targeted linear (adapters full precision),
    whose GEMMs run in grpo.matmul_dtype."""
    from peft import LoraConfig, get_peft_model

    spec = cfg.model
    source = resolve_model(spec)
    with progress_bars_hidden() if spec in TINY_MODELS else nullcontext():  # srdd built it: no bars
        model, tokenizer = load_causal_lm(source, dtype=getattr(torch, cfg.grpo.dtype))
    info = model_info(model, source)
    if tokenizer.chat_template is None:
        raise SrddError(f"model {spec!r} has no chat template; GRPO prompts are chat messages")
    torch.manual_seed(cfg.seed)  # LoRA A initialisation
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM")
    head = model.get_output_embeddings()
    try:
        model = get_peft_model(model, lora)
    except ValueError as exc:
        raise SrddError(f"lora.target_modules {cfg.lora.target_modules}: {exc}") from None
    refuse_adapted_head(model, head, cfg.lora.target_modules)
    names = quantize_linears(model, cfg.quant.linear_config(cfg.grpo.matmul_dtype))
    print(f"quantized {len(names)} linear modules under {cfg.quant_label}, matmuls in {cfg.grpo.matmul_dtype}: "
          f"{count_by_kind(names) or 'none'} (excluded: {', '.join(cfg.quant.exclude) or 'none'}; "
          f"LoRA adapters stay full precision; the full list goes to {QUANTIZED_LIST} in the run directory"
          f"{'' if verbose else ', or here with --verbose'})")
    if verbose:
        for name in names:
            print(f"  {name}")
    return model, tokenizer, info, names


def refuse_adapted_head(model, head, targets: list[str]) -> None:
    """GRPO computes log-probabilities from the output layer's weight directly (TRL does, to save the
    logits' memory), so an adapter there would never train: refuse it by identity, whatever the head is called."""
    from peft.tuners.lora import LoraLayer

    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and module.get_base_layer() is head:
            raise SrddError(f"lora.target_modules {targets}: {name.split('.')[-1]} is the model's output layer; "
                            "GRPO computes log-probabilities from its weight directly, so an adapter there would "
                            "never train (remove it)")


def write_module_list(run: RunDir, names: list[str]) -> None:
    """The quantized modules, one per line, in the run directory (written once; a resume finds it there)."""
    path = run.path / QUANTIZED_LIST
    if not path.exists():
        write_text_atomic(path, "".join(f"{n}\n" for n in names))


def rescan(model, tokenizer, cfg: RunConfig, info: dict, *, last: bool = False) -> dict:
    """Scan the policy (LoRA applied, merged) under the training format.

    The scanner quantizes the policy's own full-precision tensors on the side, so
    fake quantization in the forward is switched off while it runs; noise is never
    on here (the injector restores after every rollout). The `last` scan of a run
    leaves the LoRA merged: nothing runs the model after it, so no copy of the base
    weights is kept to restore them.
    """
    from srdd.scan import ScanConfig, scan_model

    scan_cfg = ScanConfig(formats=(cfg.quant.format,), format_options=dict(cfg.quant.options),
                          samples=cfg.scan.samples, max_tokens=cfg.scan.max_tokens, seed=cfg.seed,
                          sites=("block_output", "linear_input", "weight"))
    with quantization_disabled(model), lora_merged(model, restore=not last), torch.no_grad():
        scan = scan_model(model, tokenizer, scan_cfg, model_info=info, progress=False)[0]
    release_free_memory()
    return scan


def provenance(info: dict) -> dict:
    """run.json's provenance: the model loaded (spec, hub id and commit, or file fingerprints), command, machine."""
    return {"model": info, "command": command_line(), "machine": machine("cpu")}


def final_validated(run: RunDir, steps: int) -> bool:
    return any(r["step"] == steps and r.get("accuracy") is not None and r.get("eval_quant")
               for r in run.logged_steps())


def run_training(cfg: RunConfig, out: Path, *, resume: bool = False, verbose: bool = False,
                 step0_cache: Path | None = None) -> RunDir:
    """Train one run into `out`; returns its RunDir (read `info()['status']`), its lock released.
    `step0_cache`: a directory of step-0 validations shared with other runs (rin_train.step0)."""
    with library_notices_silenced(), steady_heap():
        return _run_training(cfg, Path(out), resume=resume, verbose=verbose, step0_cache=step0_cache)


def _run_training(cfg: RunConfig, out: Path, *, resume: bool, verbose: bool, step0_cache: Path | None) -> RunDir:
    from rin_train.trl.engine import train_grpo
    from rin_train.watchdog import Watchdog

    t0 = time.monotonic()
    preflight(cfg, out, resume=resume, step0_cache=step0_cache)
    torch.manual_seed(cfg.seed)
    model, tokenizer, info, names = load_policy(cfg, verbose=verbose)
    train, test = load_task(cfg.task, cfg.seed)
    train = drop_long_prompts(train, tokenizer, cfg.grpo.max_prompt_length, "train set")
    test = test[: cfg.eval.final_problems]
    # validates layers/targets against the model
    injector = NoiseInjector(model, cfg.noise, seed=cfg.seed, effective=True) if cfg.noise.enabled else None
    step0 = None if step0_cache is None else Step0Cache.open(step0_cache, config=cfg.to_dict(), model=info,
                                                             run_name=cfg.name)
    run = RunDir.open_for_resume(out) if resume else RunDir.create(out, name=cfg.name, config=cfg.to_dict(),
                                                                  seed=cfg.seed, provenance=provenance(info))
    write_module_list(run, names)
    print(f"run {cfg.name} -> {out} ({'resumed' if resume else 'new'}); accuracies measured under "
          f"{cfg.quant_label}", flush=True)
    watchdog = Watchdog(cfg.grpo.stall_timeout_s, lambda idle, what: run.finish(
        "failed", f"watchdog: no progress for {idle:.0f} s during {what} "
                  f"(grpo.stall_timeout_s={cfg.grpo.stall_timeout_s:g})"))
    try:
        with terminate_on_signals():
            if cfg.scan.before and not run.scan_path("before").exists():
                run.write_scan("before", rescan(model, tokenizer, cfg, info))
            try:  # armed by the engine when training begins
                logger = train_grpo(model, tokenizer, cfg, run, train, test, injector=injector, resume=resume,
                                    watchdog=watchdog, step0=step0)
            finally:
                watchdog.stop()
            if logger.stop_reason is not None:
                run.finish("failed", logger.stop_reason)
                run.release()
                return run
            validated = final_validated(run, cfg.grpo.steps)
            if validated and cfg.scan.after and not run.scan_path("after").exists():
                run.write_scan("after", rescan(model, tokenizer, cfg, info, last=True))
    except BaseException as exc:
        if isinstance(exc, Terminated):
            reason = str(exc)
        elif isinstance(exc, KeyboardInterrupt):
            reason = "interrupted (Ctrl-C)"
        else:
            reason = f"{type(exc).__name__}: {exc}"
        try:
            run.finish("failed", reason)
        except OSError as write_error:  # e.g. the disk is still full: the original error matters more
            print(f"could not mark run {out} failed ({write_error}); it stays 'running' with no live "
                  "process, which --resume continues", file=sys.stderr)
        run.release()
        raise
    finally:
        if injector is not None:
            injector.restore()
    if validated:
        run.finish("complete")
    else:
        run.finish("invalid", f"training ended without validating the final step ({cfg.grpo.steps}); "
                              "its accuracy is not a final result")
    run.release()
    print(f"training took {time.monotonic() - t0:.0f} s", flush=True)
    return run
