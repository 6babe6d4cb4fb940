"""The untrained policy's validation, computed once for all the runs of a study that share it.

Every run validates its policy at step 0, before any update. Its LoRA B matrices are zero, so
the adapter adds exact zeros whatever its seed drew for A, and no noise is applied during
validation. So the runs of one arm differ there only in their seed, and their step-0 validations are the same
bits. A study of 13 seeds would compute the same 20-second validation 13 times. Here the first
run stores its result in a shared directory (the study's `RUNS/_study/step0/`), and a later run with the
same key copies it, with its per-problem outcomes, into its own metrics.jsonl and eval_outcomes.jsonl
(so each run directory still holds its whole record). The record also names the run it came from.

The key is everything the result could depend on besides the seed: the run config without its
seed and name, the model files' fingerprints, the library versions, a digest of srdd's own
source, the CPU's vector ISA, torch's thread count and OpenMP wait policy. Any change in
these is a different key, so a change of code or machine computes the validation again.
The noise settings stay in the key although
validation applies none: an arm's hooks are part of the forward it runs, and sharing is only
claimed where the test (tests/rin_train/test_step0.py) shows it bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from srdd.errors import SrddError
from srdd.jsonio import dumps_json, write_text_atomic
from srdd.provenance import versions

SCHEMA = "srdd.step0/v1"
PACKAGES = ("srdd", "rin_train")
"""Whose source the key hashes: the model, quantization, LoRA and evaluation code a validation runs."""


@cache
def source_digest() -> str:
    """sha256 over srdd's and rin_train's Python files (path and content): any edit is another key."""
    h = hashlib.sha256()
    for package in PACKAGES:
        root = Path(__import__(package).__file__).parent
        for path in sorted(root.rglob("*.py")):
            h.update(str(path.relative_to(root.parent)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def key_inputs(config: dict, model: dict) -> dict:
    """What a step-0 validation's bits could depend on, besides the seed (module docstring)."""
    return {"config": {k: v for k, v in config.items() if k not in ("seed", "name")},
            "model_files": model.get("files"), "model": model.get("spec") or model.get("path"),
            "versions": versions(), "source": source_digest(), "cpu_isa": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}


def check_directory(directory: Path) -> None:
    """Refuse a --step0-cache that cannot be a directory of stored validations (checked before a model loads)."""
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        raise SrddError(f"--step0-cache {directory}: not a directory")


@dataclass(frozen=True)
class Step0Cache:
    """One run's view of a shared directory of step-0 validations."""

    directory: Path
    inputs: dict
    run_name: str

    @classmethod
    def open(cls, directory: Path, *, config: dict, model: dict, run_name: str) -> Step0Cache:
        check_directory(directory)
        return cls(directory, json.loads(dumps_json(key_inputs(config, model))), run_name)  # as stored: lists

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.inputs, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    @property
    def path(self) -> Path:
        return self.directory / f"{self.key[:32]}.json"

    def load(self) -> dict | None:
        """The stored validation (with `per_problem` and where it came from), or None: none stored, or a file
        that is not one for exactly this key (then the run validates and replaces it)."""
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or doc.get("inputs") != self.inputs:
            return None
        return {**doc["result"], "eval_reused_from": {"run": doc["run"], "file": self.path.name}}

    def store(self, result: dict) -> None:
        """Keep this run's step-0 validation (`result` as rin_train.evaluate returns it) for the runs after it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path, dumps_json({"schema": SCHEMA, "run": self.run_name, "inputs": self.inputs,
                                                 "result": result}), force=True)
