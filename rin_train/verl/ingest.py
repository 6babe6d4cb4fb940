"""Turn a verl run's logs (console or JSONL file logger) into a srdd run directory.

Console lines look like `step:10 - critic/score/mean:0.41 - val-core/openai/gsm8k/acc/mean@1:0.56 - ...`;
the file logger writes `{"step": N, "data": {...}}`. A restarted verl job logs
some steps again: the later record of a step wins, as it is the one the
resumed run continued from. The quant mode cannot be read from the logs and
must be given: an accuracy without its precision is not reported.

Given the run's validation dumps (`Dumps`: verl's trainer.validation_data_dir, the data.val_files it
validated on and the model whose tokenizer rendered the prompts), every validated step's per-problem
outcomes go to eval_outcomes.jsonl too (rin_train.verl.generations); a step they cannot be made for is
refused before anything is written.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from srdd.errors import SrddError
from srdd.jsonio import check_plain, read_json
from srdd.scan.schema import check_scan_layers
from rin_train.rundir import MAX_SEED, RunDir
from rin_train.tasks import chat_tokenizer, read_task_file
from rin_train.verl.generations import RenderedProblems, outcomes_from_dumps, write_outcomes

VAL_KEYS = ("val-core/openai/gsm8k/acc/mean@1", "val-core/openai/gsm8k/reward/mean@1")
SCORE_KEY = "critic/score/mean"
SIGMA_KEY = "noise/sigma"
_CONSOLE = re.compile(r"step:(\d+)\s+-\s+(.*)")


MAX_STEP = 10**9


def _value(raw: str):
    try:
        return float(raw)
    except ValueError:
        return raw.strip()


def _check_step(step: int, data: dict, where: str) -> None:
    """The fields a run directory stores: a step >= 0, finite numbers, an accuracy that is a fraction."""
    if not 0 <= step <= MAX_STEP:
        raise SrddError(f"{where}: step {step} is not in 0..{MAX_STEP}")
    for key in (*VAL_KEYS, SCORE_KEY, SIGMA_KEY):
        if key not in data or data[key] is None:
            continue
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SrddError(f"{where}: {key} is {value!r}, not a finite number")
        if key in VAL_KEYS and not 0.0 <= value <= 1.0:
            raise SrddError(f"{where}: {key} is {value}; accuracies are fractions 0..1 (a percentage?)")
        if key == SIGMA_KEY and value < 0:
            raise SrddError(f"{where}: {key} is {value}; a noise sigma cannot be negative")
        data[key] = float(value)


def parse_console(text: str) -> dict[int, dict]:
    steps: dict[int, dict] = {}
    for number, line in enumerate(text.splitlines(), 1):
        m = _CONSOLE.search(line)
        if not m:
            continue
        data = {}
        for part in m.group(2).split(" - "):
            key, sep, raw = part.partition(":")
            if sep:
                data[key.strip()] = _value(raw)
        step = int(m.group(1))
        _check_step(step, data, f"log line {number}")
        steps[step] = data
    return steps


def parse_jsonl(text: str, source: Path) -> dict[int, dict]:
    steps: dict[int, dict] = {}
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            step, data = rec["step"], rec["data"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise SrddError(f"{source}:{i}: not a verl file-logger line ({exc})") from None
        if isinstance(step, bool) or not isinstance(step, int) or not isinstance(data, dict):
            raise SrddError(f"{source}:{i}: a verl file-logger line is {{\"step\": int, \"data\": {{...}}}}")
        _check_step(step, data, f"{source}:{i}")
        steps[step] = dict(data)
    return steps


def parse_log(path: Path) -> dict[int, dict]:
    if not path.is_file():
        raise SrddError(f"log {path} does not exist")
    text = path.read_text(encoding="utf-8", errors="replace")
    first = next((line for line in text.splitlines() if line.strip()), "")
    steps = parse_jsonl(text, path) if first.lstrip().startswith("{") else parse_console(text)
    if not steps:
        raise SrddError(f"{path}: no verl step lines found (expected 'step:N - key:value' or JSONL)")
    return steps


def _accuracy(data: dict) -> float | None:
    for key in VAL_KEYS:
        if isinstance(data.get(key), float):
            return data[key]
    return None


@dataclass(frozen=True)
class Dumps:
    """Where a finished verl run's validation samples are, and what they are matched against."""

    directory: Path
    """verl's trainer.validation_data_dir: one `{step}.jsonl` per validation."""
    val_file: Path
    """The data.val_files parquet verl validated on: the test problems, in the order their ids take."""
    model: str
    """The model verl trained (HF directory or srdd model name): its tokenizer renders the prompts."""

    def __post_init__(self) -> None:
        if not Path(self.directory).is_dir():
            raise SrddError(f"--generations {self.directory} is not a directory (verl's trainer.validation_data_dir)")
        if not Path(self.val_file).is_file():
            raise SrddError(f"--val-file {self.val_file} does not exist")

    def renderings(self) -> RenderedProblems:
        from srdd.models import resolve_model

        return RenderedProblems.render(read_task_file(self.val_file), chat_tokenizer(resolve_model(self.model).path))


def ingest(log: Path, out: Path, *, quant: str, name: str | None = None, config: Path | None = None,
           seed: int = 0, scan_before: Path | None = None, scan_after: Path | None = None,
           dumps: Dumps | None = None) -> RunDir:
    if not re.fullmatch(r"[a-z0-9_]+/[a-z0-9_]+", quant):
        raise SrddError(f"--quant must look like 'mxfp4/w4a4', got {quant!r}")
    if not 0 <= seed <= MAX_SEED:
        raise SrddError(f"--seed must be in 0..{MAX_SEED}, got {seed}")
    if out.exists() or out.is_symlink():
        raise SrddError(f"run directory {out} already exists; runs are never overwritten")
    steps = parse_log(log)
    run_config = {"engine": "verl", "source_log": str(log), "quant": dict(zip(("format", "mode"), quant.split("/")))}
    if config is not None:
        from srdd.yamlio import load_yaml

        if not config.is_file():
            raise SrddError(f"--config {config} does not exist")
        try:
            loaded = load_yaml(config.read_text(encoding="utf-8"), f"--config {config}") or {}
        except UnicodeDecodeError:
            raise SrddError(f"--config {config} is not UTF-8 text") from None
        if not isinstance(loaded, dict):
            raise SrddError(f"--config {config}: expected a mapping")
        check_plain(loaded, f"--config {config}")
        run_config.update({k: v for k, v in loaded.items() if k != "quant"})
    noise = run_config.get("noise")
    if not isinstance(noise, dict) or not isinstance(noise.get("enabled"), bool):
        raise SrddError("the noise settings of the verl run are unknown: give --config with a "
                        "noise: {enabled: ..., ...} section (e.g. the E13 suite file the run used)")
    scans = {which: read_json(p, what=f"--scan-{which}") for which, p in (("before", scan_before),
                                                                           ("after", scan_after)) if p}
    for which, doc in scans.items():
        check_scan_layers(doc, f"--scan-{which} {scan_before if which == 'before' else scan_after}")
    outcomes = None
    if dumps is not None:
        test = dumps.renderings()
        outcomes = outcomes_from_dumps(dumps.directory, test, {step: {"strict": _accuracy(data)}
                                                               for step, data in steps.items()
                                                               if _accuracy(data) is not None})
        run_config["source_generations"] = str(dumps.directory)
    run = RunDir.create(out, name=name or out.name, config=run_config, seed=seed)
    try:
        if outcomes is not None:
            write_outcomes(run, test, quant, outcomes)
        _store(run, steps, scans, quant)  # sets the final status: last
    except BaseException as exc:  # e.g. a full disk: the run says so instead of staying "running"
        run.finish("failed", f"{type(exc).__name__}: {exc}")
        raise
    run.release()
    return run


def _store(run: RunDir, steps: dict[int, dict], scans: dict[str, dict], quant: str) -> None:
    for step in sorted(steps):
        data = steps[step]
        acc = _accuracy(data)
        run.append_metrics({"step": step, "sigma": data.get(SIGMA_KEY), "sigma_layers": None,
                            "reward_mean": data.get(SCORE_KEY), "accuracy": acc,
                            "eval_quant": quant if acc is not None else None,
                            "eval_lora": "separate" if acc is not None else None})
    for which, doc in scans.items():
        run.write_scan(which, doc)
    final = max(steps)
    if _accuracy(steps[final]) is None:
        run.finish("invalid", f"the final step {final} has no validation accuracy in the log")
    else:
        run.finish("complete")
