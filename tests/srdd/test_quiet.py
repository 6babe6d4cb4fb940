"""Library notices are dropped narrowly: the user's own warnings still reach the screen."""

import logging
import warnings

from srdd.quiet import library_notices_silenced


def test_only_the_listed_notices_are_dropped():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with library_notices_silenced():
            warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
            warnings.warn("`torch.jit.script_method` is deprecated. Please switch to torch.compile", DeprecationWarning)
            warnings.warn("noise.sigma_start 5.0 is absurd", UserWarning)
            warnings.warn("`other_api` is deprecated", FutureWarning)
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
    assert [str(w.message) for w in caught] == ["noise.sigma_start 5.0 is absurd", "`other_api` is deprecated",
                                                "`is_gradient_checkpointing` is deprecated and will be removed in v6."]
    logger = logging.getLogger("transformers.trainer_utils")
    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)  # transformers' own loggers may not propagate to pytest's capture
    try:
        with library_notices_silenced():
            logger.warning("mtime may not be reliable on this filesystem, falling back to numerical ordering")
            logger.warning("checkpoint-3 is missing")
        logger.warning("mtime may not be reliable on this filesystem")  # outside the block: back again
    finally:
        logger.removeHandler(handler)
    assert seen == ["checkpoint-3 is missing", "mtime may not be reliable on this filesystem"]
