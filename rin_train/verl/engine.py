"""`srdd train --engine verl`: the same run config as verl 0.9.1 runs it, at scale.

    srdd train CONFIG --engine verl --out runs/NAME            prepare: write the run directory and print the command
    srdd train CONFIG --engine verl --out runs/NAME --launch   prepare, then run it here
    srdd train --resume --launch --out runs/NAME               run (again) what runs/NAME prepared

Preparing checks everything it can before anything is written (bad input is
a SrddError, exit 2, no directory): the model must be local (a HF directory, a
.gguf file, `smollm2` or `tiny`, which is built into the run directory); the
config must be one verl can run as written (no LoRA dropout, validation with
the training response length, no zero-variance stop, quant.exclude patterns the
vLLM rollout can mirror); with --launch, every module a verl run imports
(RUN_IMPORTS) must import here. It then writes:

    run.json, metrics.jsonl        srdd.run/v1; config = the resolved config, as the TRL engine writes it
    verl_command.sh                the exact command (rin_train.verl.command); extra arguments are Hydra overrides
    verl/plugin_settings.json      quantization + noise for rin_train.verl.plugin inside verl's workers
    data/train.parquet, test.parquet   the run's problems in verl's GSM8K layout (rin_train.verl.data)
    model/                         the tiny model, for model: tiny

A prepared run that was not launched has status "invalid" with the reason
"prepared, not run ...": the schema has no "prepared" state, "running" would
claim a live process and "failed" a failure; "invalid" says what matters to
every reader (`srdd correlate` included): it holds no result. The exit code is 0.
With --launch, rin_train.verl.launch runs the command and sets the final status
(complete only when the final step was validated); exit codes as for the TRL engine.
A complete run then gets eval_outcomes.jsonl, each validation's per-problem outcomes, from
the samples verl dumped into verl/generations/ (rin_train.verl.generations).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rin_train.noise import SigmaBasis
from rin_train.run_config import RunConfig, check_against_model
from rin_train.rundir import RunDir, now_iso
from rin_train.tasks import Example, chat_tokenizer, read_task_file
from rin_train.verl.command import VerlPaths, script
from rin_train.verl.data import DATA_SOURCES, select_problems, write_task_files
from rin_train.verl.generations import GENERATIONS, RenderedProblems, outcomes_from_dumps, write_outcomes
from rin_train.verl.hooks import check_rollout_exclusions
from rin_train.verl.launch import MetricsCollector, run_verl
from rin_train.verl.settings import SETTINGS_ENV, PluginSettings
from srdd import __version__
from srdd.errors import SrddError

PREPARED_REASON = ("prepared, not run (srdd train --engine verl without --launch): run `{script}` on a GPU node and "
                   "ingest its log, or `srdd train --resume --launch --out {out}` to run it and fill this directory")


@dataclass(frozen=True)
class Plan:
    """Everything checked and computed before the run directory exists."""

    model_dir: Path | None
    """The local HF directory; None for model: tiny (built into the run directory)."""
    train: list[Example]
    test: list[Example]
    n_gpus: int


def _gpus() -> int:
    import torch

    return torch.cuda.device_count() or 1


RUN_IMPORTS = (
    "verl.trainer.main_ppo",                            # the entry point (hydra, ray)
    "transfer_queue",                                   # TaskRunnerV1.run; not in verl's base requirements
    "verl.trainer.ppo.v1.trainer_base",                 # imports transfer_queue, tensordict, torchdata at the top
    "verl.trainer.ppo.v1.trainer_sync",
    "verl.checkpoint_engine.base",
    "verl.workers.engine.fsdp.transformer_impl",
    "verl.workers.rollout.utils",                       # uvicorn, fastapi: the rollout servers
    "vllm",
    "verl.workers.rollout.vllm_rollout.vllm_async_server",
    "verl.workers.rollout.vllm_rollout.utils",
)
"""Every module a verl 0.9.1 run of ours imports, in the order it does: the v1 trainer, the plugin's patch
targets and the vLLM rollout. `verl==0.9.1` alone lacks transfer_queue, uvicorn, fastapi and vllm."""

_IMPORT_PROBE = """
import importlib, json, sys
missing = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as exc:
        missing[name] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
print(json.dumps(missing))
"""


def missing_imports(python: str = sys.executable) -> dict[str, str]:
    """RUN_IMPORTS that `python` cannot import, with the first line of each error.

    Imported in a child process (vLLM and verl are heavy, and they would stay in this one) without
    the plugin's environment, so verl does not import rin_train.verl.plugin on the way.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("VERL_USE_EXTERNAL_MODULES", SETTINGS_ENV)}
    r = subprocess.run([python, "-c", _IMPORT_PROBE, *RUN_IMPORTS], capture_output=True, text=True, env=env,
                       timeout=900)
    if r.returncode != 0:
        return {name: f"the import check failed: {r.stderr.strip().splitlines()[-1:]}" for name in RUN_IMPORTS}
    return json.loads(r.stdout.strip().splitlines()[-1])


INSTALL_HINT = "pip install 'srdd[verl]' (verl[vllm]==0.9.1; ideally in its own environment, on a GPU machine)"


def check_launchable() -> None:
    missing = missing_imports()
    if missing:
        listing = "; ".join(f"{name} ({why})" for name, why in missing.items())
        raise SrddError(f"--launch needs every module a verl run imports, and {len(missing)} of "
                        f"{len(RUN_IMPORTS)} are not importable here: {listing}; {INSTALL_HINT}; without "
                        "--launch the run directory and verl_command.sh are written for a machine that has them")


def report_imports() -> None:
    """Without --launch: say whether this environment could run the prepared command itself."""
    missing = missing_imports()
    if not missing:
        print(f"verl environment: all {len(RUN_IMPORTS)} modules a run imports are present (--launch can run it here)")
        return
    print(f"verl environment: {len(missing)} of {len(RUN_IMPORTS)} modules a run imports are missing here "
          f"({', '.join(missing)}); fine for preparing, --launch needs them: {INSTALL_HINT}")


def check_config(cfg: RunConfig) -> None:
    """Settings verl cannot honour as written are refused, not silently changed."""
    if cfg.eval.max_new_tokens != cfg.grpo.max_completion_length:
        raise SrddError(f"verl validates with the training response length (data.max_response_length); set "
                        f"eval.max_new_tokens ({cfg.eval.max_new_tokens}) equal to grpo.max_completion_length "
                        f"({cfg.grpo.max_completion_length})")
    if cfg.eval.shared_prefix:
        raise SrddError("eval.shared_prefix is for the trl engine; vLLM shares prompt prefixes itself (prefix "
                        "caching), so leave it false for the verl engine")
    if cfg.grpo.shared_prompt:
        raise SrddError("grpo.shared_prompt is for the trl engine; verl's actor computes its own log-probs (with "
                        "remove-padding packing), so leave it false for the verl engine")
    if cfg.lora.dropout:
        raise SrddError(f"verl's FSDP engine builds LoRA without dropout; set lora.dropout to 0 (got {cfg.lora.dropout})")
    if cfg.grpo.dtype != "float32":
        raise SrddError(f"grpo.dtype={cfg.grpo.dtype} is for the trl engine; verl keeps fp32 master weights and runs "
                        "its own FSDP mixed precision, so leave grpo.dtype at float32 for the verl engine")
    if cfg.grpo.matmul_dtype != cfg.grpo.dtype:  # auto resolves to grpo.dtype for verl: this was asked for
        raise SrddError(f"grpo.matmul_dtype={cfg.grpo.matmul_dtype} is for the trl engine; verl runs its own FSDP "
                        "mixed precision, so leave grpo.matmul_dtype at auto for the verl engine")
    if cfg.noise.enabled and cfg.noise.sigma_basis is SigmaBasis.EFFECTIVE and "rmsnorm" in cfg.noise.targets:
        raise SrddError("noise.sigma_basis: effective on RMSNorm targets is calibrated on the norm's activations, "
                        "which vLLM's fused norm does not expose; use noise.sigma_basis nominal or linear targets "
                        "for the verl engine")
    if cfg.grpo.stop_after_zero_variance_steps is not None:
        raise SrddError("grpo.stop_after_zero_variance_steps cannot be enforced inside verl (its trainer exposes no "
                        "per-group rewards to stop on); set it to null for the verl engine")


def plan(cfg: RunConfig, tiny_dir: Path) -> Plan:
    """Check the config against verl, the model and the task; `tiny_dir` receives the tiny model if asked for."""
    from rin_train.train import model_num_layers
    from srdd.models import resolve_model
    from srdd.tiny import TINY_MODELS, build_tiny_model

    check_config(cfg)
    if cfg.model in TINY_MODELS:
        model_dir, tokenizer_dir = None, build_tiny_model(cfg.model, tiny_dir, seed=cfg.seed)
    else:
        model_dir = tokenizer_dir = resolve_model(cfg.model).path.resolve()
    num_layers = model_num_layers(cfg.model)
    check_against_model(cfg, num_layers)
    check_rollout_exclusions(cfg.quant.linear_config(), num_layers)
    train, test = select_problems(cfg, chat_tokenizer(tokenizer_dir))
    return Plan(model_dir, train, test, _gpus())


def prepare(cfg: RunConfig, out: Path) -> RunDir:
    """Check, then write the run directory (status running until the caller finishes it)."""
    with tempfile.TemporaryDirectory(prefix="srdd-verl-") as tmp:
        p = plan(cfg, Path(tmp) / "model")
        run = RunDir.create(out, name=cfg.name, config=cfg.to_dict(), seed=cfg.seed)
        try:
            root = run.path.resolve()
            model_dir = p.model_dir
            if model_dir is None:
                model_dir = Path(shutil.copytree(Path(tmp) / "model", root / "model"))
            files = write_task_files(p.train, p.test, DATA_SOURCES[cfg.task.name], root / "data")
            paths = VerlPaths(model=model_dir, data=files, settings=root / "verl" / "plugin_settings.json",
                              file_logger=root / "verl" / "metrics.jsonl", checkpoints=root / "checkpoints",
                              generations=root / GENERATIONS)
            paths.settings.parent.mkdir()
            PluginSettings.from_run_config(cfg, root / "verl" / "noise").write(paths.settings)
            header = (f"verl run {cfg.name}: srdd train --engine verl (srdd {__version__}, {now_iso()}), "
                      f"quantization {cfg.quant_label}, noise {'on' if cfg.noise.enabled else 'off'}")
            command = root / "verl_command.sh"
            command.write_text(script(cfg, paths, root, n_gpus=p.n_gpus, header=header))
            command.chmod(0o755)
        except BaseException as exc:
            run.finish("failed", f"preparing the verl run failed: {type(exc).__name__}: {exc}")
            raise
    print(f"verl run {cfg.name} prepared in {out}: {files.train_rows} training and {files.test_rows} validation "
          f"problems, quantization {cfg.quant_label} (rin_train.verl.plugin in verl's actor and vLLM workers), "
          f"noise {'on the rollout copy' if cfg.noise.enabled else 'off'}")
    if cfg.scan.before or cfg.scan.after:
        print("note: verl runs get no scan_before/scan_after here; scan the base and the merged checkpoint with "
              "srdd scan and add them with srdd ingest verl --scan-before/--scan-after")
    print(command.read_text(), end="")
    return run


def _prepared_command(root: Path) -> Path:
    command = root / "verl_command.sh"
    if not command.is_file():
        raise SrddError(f"{command} does not exist; {root} was not prepared by srdd train --engine verl")
    return command


def launch(cfg: RunConfig, run: RunDir) -> int:
    """Run the prepared verl_command.sh, filling metrics.jsonl as verl logs steps; returns the exit code."""
    import pandas as pd

    root = run.path.resolve()
    command = _prepared_command(root)
    eval_samples = len(pd.read_parquet(root / "data" / "test.parquet"))
    collector = MetricsCollector(run, verl_log=root / "verl" / "metrics.jsonl",
                                 noise_dir=root / "verl" / "noise" if cfg.noise.enabled else None,
                                 data_source=DATA_SOURCES[cfg.task.name], quant_label=cfg.quant_label,
                                 eval_samples=eval_samples)
    print(f"launching {command}", flush=True)
    code = run_verl(["bash", str(command)], run, collector, env={**os.environ, "PYTHON": sys.executable},
                    final_step=cfg.grpo.steps, stall_timeout_s=cfg.grpo.stall_timeout_s)
    if run.status == "complete":
        print(collect_outcomes(cfg, run))
    run.release()
    info = run.info()
    print(f"run {cfg.name}: {info['status']}" + (f" ({info['reason']})" if info.get("reason") else "") + f" -> {root}")
    return code


def _model_dir(cfg: RunConfig, root: Path) -> Path:
    """The model verl trained: the run directory's copy of a tiny model, else the one cfg.model names."""
    from srdd.models import resolve_model
    from srdd.tiny import TINY_MODELS

    return root / "model" if cfg.model in TINY_MODELS else resolve_model(cfg.model).path.resolve()


def collect_outcomes(cfg: RunConfig, run: RunDir) -> str:
    """eval_outcomes.jsonl of a complete run, from the validation dumps verl wrote into verl/generations/
    (rin_train.verl.generations); returns the line that says what it wrote, or why nothing.

    All or nothing: one step whose dump is missing or refused leaves the run without outcomes (a report
    reads a run without them as valid, one with a gap as inconsistent). The run's status stays what
    verl's logs made it: the accuracies are verl's, with or without the per-problem detail."""
    root = run.path.resolve()
    logged = {r["step"]: {"strict": r["accuracy"], "flexible": r.get("accuracy_flexible")}
              for r in run.logged_steps() if r.get("accuracy") is not None}
    try:
        test = RenderedProblems.render(read_task_file(root / "data" / "test.parquet"),
                                       chat_tokenizer(_model_dir(cfg, root)))
        outcomes = outcomes_from_dumps(root / GENERATIONS, test, logged)
    except (SrddError, OSError) as exc:
        return (f"per-problem outcomes: none, so this run has no eval_outcomes.jsonl (reports bound the problem part "
                f"of its variance instead of measuring it, and srdd flips cannot compare it): {exc}")
    write_outcomes(run, test, cfg.quant_label, outcomes)
    return (f"per-problem outcomes of the validations at steps {sorted(outcomes)} ({len(test.examples)} problems "
            f"each, from verl's dumps in {GENERATIONS}) -> eval_outcomes.jsonl")


def main(cfg: RunConfig, args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.resume:
        if not args.launch:
            raise SrddError("--resume with the verl engine runs the prepared command again: add --launch (verl itself "
                            "continues from the checkpoints in the run directory)")
        check_launchable()
        _prepared_command(out)
        return launch(cfg, RunDir.open_for_resume(out))
    if args.launch:
        check_launchable()
    run = prepare(cfg, out)
    if not args.launch:
        run.finish("invalid", PREPARED_REASON.format(script=out / "verl_command.sh", out=out))
        report_imports()
        return 0
    return launch(cfg, run)
