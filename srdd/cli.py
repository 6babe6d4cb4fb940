"""The `srdd` command: one entry point, one module per subcommand.

Each module in COMMAND_MODULES exposes `register(subparsers)`, which adds its
parser and sets `func` to a callable taking the parsed namespace and returning
an exit code. Keeping the list explicit (no entry-point discovery) means a
broken subcommand fails loudly instead of vanishing from `--help`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from srdd import __version__
from srdd.errors import SrddError, disk_full
from srdd.threads import passive_openmp_wait

COMMAND_MODULES: tuple[str, ...] = (
    "srdd.scan.cli",
    "calibrate.cli",
    "rin_train.cli",
    "rin_train.verl.ingest_cli",
    "rin_train.study.cli",
    "reports.cli",
    "reports.flips_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="srdd",
        description=(
            "Find where 4-bit quantization hurts an LLM (scan), turn the diagnosis into "
            "per-layer noise settings (calibrate), train with them (train) and test "
            "whether it helped (correlate)."
        ),
        epilog="Run `srdd COMMAND --help` for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"srdd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    passive_openmp_wait()  # before the subcommands import torch
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SrddError as exc:
        message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"srdd {args.command}: error: {message}", file=sys.stderr)  # one line, whatever the message
        return 2
    except KeyboardInterrupt:
        print(f"srdd {args.command}: interrupted", file=sys.stderr)
        return 130
    except (OSError, RuntimeError) as exc:
        if not disk_full(exc):
            raise
        what = exc.strerror if isinstance(exc, OSError) else str(exc).splitlines()[0][:200]
        where = f" writing {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"srdd {args.command}: error: {what}{where}; free some space and run it again (files are "
              "written whole or not at all: what was there before is unchanged)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
