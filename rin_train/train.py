"""One training run end to end: run dir -> scan before -> GRPO -> final validation -> scan after."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from rin_train.engine_trl import train_grpo
from rin_train.noise import NoiseInjector
from rin_train.rundir import RunDir
from rin_train.run_config import RunConfig
from rin_train.tasks import load_task
from rin_train.watchdog import Watchdog
from srdd.models import decoder_layers, load_causal_lm, model_info, resolve_model
from srdd.qlinear import quantization_disabled, quantize_linears
from srdd.scan.runner import ScanConfig, scan_model


def load_policy(cfg: RunConfig, workdir: Path):
    """Base model + LoRA (peft) + fake quantization of every targeted linear (adapters stay fp32)."""
    from peft import LoraConfig, get_peft_model

    spec = cfg.model
    if spec == "tiny":
        from srdd.tiny import build_tiny_llama

        spec = str(build_tiny_llama(workdir / "tiny-model", seed=cfg.seed))
    model, tokenizer = load_causal_lm(spec, dtype=torch.float32)
    info = model_info(model, cfg.model, resolve_model(spec))
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    names = quantize_linears(model, cfg.quant.linear_config())
    print(f"quantized {len(names)} linear modules under {cfg.quant.linear_config().label} "
          f"(lm_head/embed_tokens excluded, LoRA adapters full precision):")
    for name in names:
        print(f"  {name}")
    return model, tokenizer, info


def rescan(model, tokenizer, cfg: RunConfig, info: dict) -> dict:
    """The policy's own activations (LoRA applied, no fake quant in the forward) scanned under the format."""
    scan_cfg = ScanConfig(formats=(cfg.quant.format,), format_options=dict(cfg.quant.options),
                          samples=cfg.scan.samples, max_tokens=cfg.scan.max_tokens, seed=cfg.seed)
    with quantization_disabled(model):
        return scan_model(model, tokenizer, scan_cfg, model_info=info, progress=False)[0]


def run_training(cfg: RunConfig, out: Path, *, resume: bool = False) -> RunDir:
    run = RunDir.open_for_resume(out) if resume else RunDir.create(out, name=cfg.name, config=cfg.to_dict(),
                                                                  seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    watchdog = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model, tokenizer, info = load_policy(cfg, Path(tmp))
            train, test = load_task(cfg.task, cfg.seed)
            test = test[: cfg.eval.samples]
            injector = NoiseInjector(model, cfg.noise, seed=cfg.seed) if cfg.noise.enabled else None
            if cfg.scan.before and not (run.path / "scan_before.json").exists():
                run.write_scan("before", rescan(model, tokenizer, cfg, info))
            watchdog = Watchdog(cfg.grpo.stall_timeout_s, lambda idle: run.finish(
                "failed", f"watchdog: no training step finished for {idle:.0f} s")).start()
            label = cfg.quant.linear_config().label
            validated = train_grpo(model, tokenizer, cfg, run, train, test, injector, label,
                                   resume=resume, watchdog=watchdog)
            watchdog.stop()
            if cfg.scan.after:
                run.write_scan("after", rescan(model, tokenizer, cfg, info))
        if validated:
            run.finish("complete")
        else:
            run.finish("invalid", "the final step was not validated")
    except BaseException as exc:
        if watchdog:
            watchdog.stop()
        run.finish("failed", f"{type(exc).__name__}: {exc}")
        raise
    return run
