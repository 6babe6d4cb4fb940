"""User-facing errors.

Anything raised as `SrddError` is a problem with the user's input or
environment, not a bug: the CLI prints its message without a traceback and
exits non-zero. Everything else is a bug and keeps its traceback, except a full
disk (`DISK_FULL`): an error of the machine, told in one line, exit code 1.
"""

import errno

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
TORCH_WRITE_FAILED = "file write failed"
"""torch.save on a full disk raises RuntimeError("... PytorchStreamWriter failed writing file ...: file write
failed"), without an errno: the text is all there is to recognise it by."""


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` says the disk (or the quota, or the file size limit) is full."""
    if isinstance(exc, OSError):
        return exc.errno in DISK_FULL
    return isinstance(exc, RuntimeError) and TORCH_WRITE_FAILED in str(exc)


class SrddError(Exception):
    """A problem the user can fix; the message must say what and how."""
