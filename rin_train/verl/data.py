"""The run's train/validation problems as verl GSM8K-layout parquet files.

verl reads `data.train_files`/`data.val_files` row by row: `data_source`,
`prompt` (chat messages), `ability`, `reward_model` {style, ground_truth},
`extra_info` (the layout of verl's examples/data_preprocess/gsm8k.py). We always
write the files ourselves, also for user-supplied GSM8K files, so verl trains
and validates on exactly the problems the TRL engine would: the first
`task.train_size` training problems and the first `eval.samples` test problems
(verl's own `data.*_max_samples` draws a random subset instead), with prompts
over `grpo.max_prompt_length` tokens dropped and counted, as TRL does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rin_train.run_config import RunConfig
from rin_train.tasks import Example, drop_long_prompts, load_task
from srdd.errors import SrddError

DATA_SOURCES = {"arithmetic": "srdd/arithmetic", "gsm8k": "openai/gsm8k"}


@dataclass(frozen=True)
class TaskFiles:
    train: Path
    test: Path
    data_source: str
    train_rows: int
    test_rows: int


def verl_rows(examples: list[Example], data_source: str, split: str) -> list[dict]:
    return [{"data_source": data_source, "prompt": e.messages(), "ability": "math",
             "reward_model": {"style": "rule", "ground_truth": e.answer},
             "extra_info": {"split": split, "index": i}} for i, e in enumerate(examples)]


def _write(rows: list[dict], path: Path) -> None:
    import pandas as pd

    pd.DataFrame(rows).to_parquet(path, index=False)


def select_problems(cfg: RunConfig, tokenizer) -> tuple[list[Example], list[Example]]:
    """(train, validation) problems of the run, overlong prompts dropped (counts printed)."""
    train, test = load_task(cfg.task, cfg.seed)
    max_tokens = cfg.grpo.max_prompt_length
    train = drop_long_prompts(train, tokenizer, max_tokens, "train set")
    test = drop_long_prompts(test[: cfg.eval.samples], tokenizer, max_tokens, "validation set")
    prompts_per_step = cfg.grpo.batch_size // cfg.grpo.num_generations
    if len(train) < prompts_per_step:
        raise SrddError(f"{len(train)} training prompts left, fewer than the {prompts_per_step} prompts of one step")
    return train, test


def write_task_files(train: list[Example], test: list[Example], data_source: str, directory: Path) -> TaskFiles:
    """train.parquet and test.parquet in `directory` (created)."""
    directory.mkdir(parents=True, exist_ok=True)
    files = TaskFiles(directory / "train.parquet", directory / "test.parquet", data_source, len(train), len(test))
    _write(verl_rows(train, data_source, "train"), files.train)
    _write(verl_rows(test, data_source, "test"), files.test)
    return files
