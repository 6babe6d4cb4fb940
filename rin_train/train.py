"""One training run end to end.

    preflight (config vs model, task files, --out free)   <- every config error lands here, no run dir yet
    load policy: base model + LoRA + fake quantization (list of quantized modules printed)
    noise injector (validated against the model)
    RunDir.create / open_for_resume
    scan_before (policy under the training format)
    GRPO (engine_trl) with validation at step 0, every N and at the final step; watchdog
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
import tempfile
import time
from pathlib import Path

import torch

from rin_train.lora_merge import lora_merged
from rin_train.noise import NoiseInjector
from rin_train.rundir import RunDir
from rin_train.signals import Terminated, terminate_on_signals
from rin_train.run_config import RunConfig, check_against_model
from rin_train.tasks import drop_long_prompts, load_task
from srdd.errors import SrddError
from srdd.models import load_causal_lm, model_info, resolve_model
from srdd.qlinear import quantization_disabled, quantize_linears
from srdd.tiny import TINY_LAYERS, TINY_MODELS, build_tiny_model


def model_num_layers(spec: str) -> int:
    """Decoder depth from the model's config.json, without loading weights."""
    if spec in TINY_MODELS:
        return TINY_LAYERS
    path = resolve_model(spec)
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SrddError(f"cannot read {path / 'config.json'}: {exc}") from None
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(config.get(key), int):
            return config[key]
    raise SrddError(f"{path / 'config.json'} does not say how many decoder layers the model has")


def preflight(cfg: RunConfig, out: Path, *, resume: bool) -> None:
    """Everything that can be checked before a model is loaded or a run directory made."""
    if cfg.engine != "trl":
        raise SrddError(f"engine {cfg.engine!r}: this process runs the trl engine (use srdd train --engine verl)")
    if not resume and out.exists():
        raise SrddError(f"run directory {out} already exists; runs are never overwritten "
                        "(choose another --out, or pass --resume to continue that run)")
    check_against_model(cfg, model_num_layers(cfg.model))
    load_task(cfg.task, cfg.seed)  # task files readable, sizes satisfiable


def load_policy(cfg: RunConfig, workdir: Path):
    """Base model (grpo.dtype) + LoRA (peft) + fake quantization of every targeted linear (adapters full precision),
    whose GEMMs run in grpo.matmul_dtype."""
    from peft import LoraConfig, get_peft_model

    spec = cfg.model
    if spec in TINY_MODELS:
        path = build_tiny_model(spec, workdir / spec, seed=cfg.seed)
        model, tokenizer = load_causal_lm(str(path), dtype=getattr(torch, cfg.grpo.dtype))
        info = model_info(model, spec, path)
    else:
        model, tokenizer = load_causal_lm(spec, dtype=getattr(torch, cfg.grpo.dtype))
        info = model_info(model, spec, resolve_model(spec))
    if tokenizer.chat_template is None:
        raise SrddError(f"model {spec!r} has no chat template; GRPO prompts are chat messages")
    torch.manual_seed(cfg.seed)  # LoRA A initialisation
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM")
    try:
        model = get_peft_model(model, lora)
    except ValueError as exc:
        raise SrddError(f"lora.target_modules {cfg.lora.target_modules}: {exc}") from None
    names = quantize_linears(model, cfg.quant.linear_config(cfg.grpo.matmul_dtype))
    print(f"quantized {len(names)} linear modules under {cfg.quant_label}, matmuls in {cfg.grpo.matmul_dtype} "
          f"(excluded: {', '.join(cfg.quant.exclude) or 'none'}; LoRA adapters stay full precision):")
    for name in names:
        print(f"  {name}")
    return model, tokenizer, info


def rescan(model, tokenizer, cfg: RunConfig, info: dict) -> dict:
    """Scan the policy (LoRA applied, merged) under the training format.

    The scanner quantizes the policy's own full-precision tensors on the side, so
    fake quantization in the forward is switched off while it runs; noise is never
    on here (the injector restores after every rollout).
    """
    from srdd.scan import ScanConfig, scan_model

    scan_cfg = ScanConfig(formats=(cfg.quant.format,), format_options=dict(cfg.quant.options),
                          samples=cfg.scan.samples, max_tokens=cfg.scan.max_tokens, seed=cfg.seed,
                          sites=("block_output", "linear_input", "weight"))
    with quantization_disabled(model), lora_merged(model), torch.no_grad():
        return scan_model(model, tokenizer, scan_cfg, model_info=info, progress=False)[0]


def final_validated(run: RunDir, steps: int) -> bool:
    return any(r["step"] == steps and r.get("accuracy") is not None and r.get("eval_quant")
               for r in run.logged_steps())


def run_training(cfg: RunConfig, out: Path, *, resume: bool = False) -> RunDir:
    """Train one run into `out`; returns its RunDir (read `info()['status']`)."""
    from rin_train.engine_trl import train_grpo
    from rin_train.watchdog import Watchdog

    out = Path(out)
    t0 = time.monotonic()
    preflight(cfg, out, resume=resume)
    torch.manual_seed(cfg.seed)
    with tempfile.TemporaryDirectory(prefix="rin-train-") as tmp:
        model, tokenizer, info = load_policy(cfg, Path(tmp))
        train, test = load_task(cfg.task, cfg.seed)
        train = drop_long_prompts(train, tokenizer, cfg.grpo.max_prompt_length, "train set")
        test = test[: cfg.eval.samples]
        # validates layers/targets against the model
        injector = NoiseInjector(model, cfg.noise, seed=cfg.seed, effective=True) if cfg.noise.enabled else None
        run = RunDir.open_for_resume(out) if resume else RunDir.create(out, name=cfg.name, config=cfg.to_dict(),
                                                                      seed=cfg.seed)
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
                                        watchdog=watchdog)
                finally:
                    watchdog.stop()
                if logger.stop_reason is not None:
                    run.finish("failed", logger.stop_reason)
                    return run
                validated = final_validated(run, cfg.grpo.steps)
                if validated and cfg.scan.after and not run.scan_path("after").exists():
                    run.write_scan("after", rescan(model, tokenizer, cfg, info))
        except BaseException as exc:
            if isinstance(exc, Terminated):
                reason = str(exc)
            elif isinstance(exc, KeyboardInterrupt):
                reason = "interrupted (Ctrl-C)"
            else:
                reason = f"{type(exc).__name__}: {exc}"
            run.finish("failed", reason)
            raise
        finally:
            if injector is not None:
                injector.restore()
    if validated:
        run.finish("complete")
    else:
        run.finish("invalid", f"training ended without validating the final step ({cfg.grpo.steps}); "
                              "its accuracy is not a final result")
    print(f"run {cfg.name}: {run.status} in {time.monotonic() - t0:.0f} s", flush=True)
    return run
