"""Library notices that say nothing about the user's input, silenced where srdd calls those libraries.

Each one is matched narrowly (category and message, or logger and message), so
any other warning -- above all one about the user's own config, model or data --
still reaches the screen. Why each is noise:

- transformers 5 renamed `is_gradient_checkpointing`; peft and trl still ask
  for the old name (three times a run, more in the tests) and are told it is
  deprecated. Nothing the user can change.
- transformers' checkpoint rotation finds two checkpoints written within a
  second (short runs) and says "mtime may not be reliable", then orders them by
  step number, which is what srdd wants anyway.
- Inductor (behind torch.compile, one of srdd's fake-quant back ends) imports
  torch.utils.mkldnn, which uses the deprecated `torch.jit.script_method`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
    (DeprecationWarning, r"`torch\.jit\.\w+` is deprecated"),
)
LOG_NOTICES: tuple[tuple[str, str], ...] = (
    ("transformers.trainer_utils", "mtime may not be reliable"),
)


class _DropNotice(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


@contextmanager
def library_notices_silenced() -> Iterator[None]:
    """Inside the block, the notices above are dropped; every other warning and log record passes."""
    filters = [(logging.getLogger(name), _DropNotice(text)) for name, text in LOG_NOTICES]
    for logger, drop in filters:
        logger.addFilter(drop)
    try:
        with warnings.catch_warnings():
            for category, pattern in WARNINGS:
                warnings.filterwarnings("ignore", message=pattern, category=category)
            yield
    finally:
        for logger, drop in filters:
            logger.removeFilter(drop)


@contextmanager
def progress_bars_hidden() -> Iterator[None]:
    """No transformers progress bars inside the block (saving or loading a model srdd built itself, --no-progress)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
