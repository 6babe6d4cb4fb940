"""User-facing errors.

Anything raised as `SrddError` is a problem with the user's input or
environment, not a bug: the CLI prints its message without a traceback and
exits non-zero. Everything else is a bug and keeps its traceback.
"""


class SrddError(Exception):
    """A problem the user can fix; the message must say what and how."""
