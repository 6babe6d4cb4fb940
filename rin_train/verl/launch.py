"""Run a prepared verl command and keep the run directory current while it runs.

- verl's output is teed to the terminal and appended to `verl/verl.log`.
- verl's file logger (`verl/metrics.jsonl`, `{"step": N, "data": {...}}`, truncated
  whenever verl restarts) is read as it grows; each new step becomes one
  metrics.jsonl record at once (lesson 11), with the noise the vLLM workers
  logged for the weights that step's rollouts used. A step already in
  metrics.jsonl (a relaunch replaying it) is not logged again.
- A watchdog, armed once verl logs its first step (step 0's validation), ends
  a run whose next step does not arrive within grpo.stall_timeout_s.
- Final status: complete only when the final step was validated and every
  training step's rollout noise was recorded; invalid otherwise; failed when
  verl exits non-zero, is stopped or stalls.

Record per step (the TRL engine's keys where verl has the value):
    step, sigma (scheduled, for the rollouts of this step), sigma_layers (achieved std per layer,
    mean over tensor-parallel ranks), sigma_layers_effective (the std the quantized GEMM sees, same
    averaging; linear targets only, see rin_train.verl.hooks), reward_mean (critic/score/mean: the training reward),
    loss (actor/pg_loss), completion_mean_length (response_length/mean),
    accuracy / accuracy_flexible (val-core/<source>/acc/mean@1, val-aux/<source>/acc_flexible/mean@1:
    strict and flexible, greedy, no noise), eval_samples, eval_quant, eval_lora ("separate": verl validates
    the policy as trained), step_s (timing_s/step), wall_s.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

from rin_train.verl.ingest import SCORE_KEY, parse_jsonl
from rin_train.rundir import RunDir
from rin_train.signals import Terminated, terminate_on_signals
from rin_train.watchdog import STALL_EXIT_CODE, Watchdog
from srdd.errors import SrddError


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def read_noise_logs(directory: Path) -> dict[int, dict]:
    """weights version -> {"sigma", "sigma_layers", "sigma_layers_effective"} from the rollout workers' noise logs.

    Each worker process writes its own file; within a file the last record of a
    (rank, version) wins (noise is re-applied, identically, after each validation);
    per-layer achieved std is averaged over the ranks that logged the version.
    """
    latest: dict[tuple[str, int, int], dict] = {}
    for path in sorted(Path(directory).glob("*.jsonl")):
        text = path.read_text(encoding="utf-8")
        complete = text[: text.rfind("\n") + 1]  # a worker may be writing the last line right now
        for i, line in enumerate(complete.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                latest[(path.name, int(rec["rank"]), int(rec["version"]))] = rec
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise SrddError(f"{path}:{i}: not a noise log line ({exc})") from None
    by_version: dict[int, list[dict]] = defaultdict(list)
    for (_, _, version), rec in latest.items():
        by_version[version].append(rec)
    return {version: {"sigma": recs[0].get("sigma"), **{key: _mean_by_layer(recs, key) for key in NOISE_LAYER_KEYS}}
            for version, recs in by_version.items()}


NOISE_LAYER_KEYS = ("sigma_layers", "sigma_layers_effective")
"""Per-layer values of a noise log record, averaged over the ranks that logged its version."""


def _mean_by_layer(recs: list[dict], key: str) -> dict[str, float] | None:
    layers: dict[str, list[float]] = defaultdict(list)
    for rec in recs:
        for layer, value in (rec.get(key) or {}).items():
            layers[layer].append(value)
    if not layers:
        return None  # not logged (clean weights, or a value the workers do not measure)
    return {k: sum(v) / len(v) for k, v in sorted(layers.items(), key=lambda kv: int(kv[0]))}


def metrics_record(step: int, data: dict, *, data_source: str, quant_label: str, eval_samples: int,
                   noise: dict | None, wall_s: float) -> dict:
    """One metrics.jsonl record from verl's logged metrics of `step` and the noise its rollouts used."""
    accuracy = _number(data.get(f"val-core/{data_source}/acc/mean@1"))
    validated = accuracy is not None
    return {"step": step, "sigma": (noise or {}).get("sigma"), "sigma_layers": (noise or {}).get("sigma_layers"),
            "sigma_layers_effective": (noise or {}).get("sigma_layers_effective"),
            "reward_mean": _number(data.get(SCORE_KEY)), "loss": _number(data.get("actor/pg_loss")),
            "completion_mean_length": _number(data.get("response_length/mean")),
            "accuracy": accuracy,
            "accuracy_flexible": _number(data.get(f"val-aux/{data_source}/acc_flexible/mean@1")) if validated else None,
            "eval_samples": eval_samples if validated else None, "eval_quant": quant_label if validated else None,
            "eval_lora": "separate" if validated else None,
            "step_s": _number(data.get("timing_s/step")), "wall_s": round(wall_s, 3)}


class MetricsCollector:
    """Copies verl's file-logger steps into the run's metrics.jsonl as they appear."""

    def __init__(self, run: RunDir, *, verl_log: Path, noise_dir: Path | None, data_source: str, quant_label: str,
                 eval_samples: int) -> None:
        self.run, self.verl_log, self.noise_dir = run, Path(verl_log), noise_dir
        self.data_source, self.quant_label, self.eval_samples = data_source, quant_label, eval_samples
        self.logged = {r["step"] for r in run.logged_steps()}
        self.missing_noise: list[int] = []
        self.offset = 0
        self.t0 = time.monotonic()

    def poll(self) -> list[int]:
        """Append the steps verl logged since the last call; returns their numbers."""
        if not self.verl_log.is_file():
            return []
        size = self.verl_log.stat().st_size
        if size < self.offset:  # verl restarted and truncated its log
            self.offset = 0
        with open(self.verl_log, "rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        steps = parse_jsonl(complete.decode("utf-8"), self.verl_log)
        new = [s for s in sorted(steps) if s not in self.logged]
        noise = read_noise_logs(self.noise_dir) if self.noise_dir is not None and new else {}
        for step in new:
            used = None
            if self.noise_dir is not None and step > 0:
                used = noise.get(step - 1)  # the rollouts of step s ran on the weights synced after step s-1
                if used is None:
                    self.missing_noise.append(step)
            self.run.append_metrics(metrics_record(step, steps[step], data_source=self.data_source,
                                                   quant_label=self.quant_label, eval_samples=self.eval_samples,
                                                   noise=used, wall_s=time.monotonic() - self.t0))
            self.logged.add(step)
        return new

    def verdict(self, final_step: int) -> tuple[str, str | None]:
        """(status, reason) once verl has exited successfully."""
        final = [r for r in self.run.logged_steps() if r["step"] == final_step]
        if not final or final[-1].get("accuracy") is None:
            return "invalid", (f"verl ended without validating the final step ({final_step}); "
                               "its accuracy is not a final result")
        if self.missing_noise:
            return "invalid", (f"no rollout noise was recorded for steps {self.missing_noise}: the plugin's hook did "
                               "not run in the vLLM workers, so the noise of this run is unknown")
        return "complete", None


def _stop(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """End verl and everything it started (its own session), gently first."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _stop_leftovers(proc: subprocess.Popen) -> None:
    """After verl's driver exits, end what is left of its session (it would hold our output pipe open)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def _tee(stream, log_path: Path) -> None:
    with open(log_path, "ab") as log:
        for line in iter(stream.readline, b""):
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
            log.write(line)
            log.flush()


def run_verl(argv: list[str], run: RunDir, collector: MetricsCollector, *, env: dict[str, str], final_step: int,
             stall_timeout_s: float, poll_s: float = 2.0) -> int:
    """Run `argv` (the prepared command) to its end; sets the run's final status; returns the exit code."""
    log_path = run.path / "verl" / "verl.log"
    proc = subprocess.Popen(argv, env=env, cwd=run.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    tee = threading.Thread(target=_tee, args=(proc.stdout, log_path), name="verl-tee", daemon=True)
    tee.start()
    watchdog = Watchdog(stall_timeout_s, lambda idle, what: run.finish(
        "failed", f"watchdog: no new verl step for {idle:.0f} s after {what} "
                  f"(grpo.stall_timeout_s={stall_timeout_s:g})"), exit=lambda code: _stop(proc, grace_s=5.0))
    try:
        with terminate_on_signals():
            while proc.poll() is None:
                for step in collector.poll():
                    watchdog.start()  # armed at verl's first logged step, a beat at every later one
                    watchdog.beat(f"step {step}")
                time.sleep(poll_s)
            _stop_leftovers(proc)
            tee.join(timeout=60)
            collector.poll()
    except BaseException as exc:
        _stop(proc)
        reason = str(exc) if isinstance(exc, Terminated) else (
            "interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}")
        run.finish("failed", reason)
        if isinstance(exc, (Terminated, KeyboardInterrupt)):
            return 1
        raise
    finally:
        watchdog.stop()
    if watchdog.fired:
        return STALL_EXIT_CODE
    if proc.returncode != 0:
        run.finish("failed", f"verl exited with code {proc.returncode} (its output: {log_path})")
        return 1
    status, reason = collector.verdict(final_step)
    run.finish(status, reason)
    return 0 if status == "complete" else 1
