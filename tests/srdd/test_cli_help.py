"""Every option of every `srdd` subcommand says what it does in --help."""

import argparse

from srdd.cli import build_parser


def _parsers(parser: argparse.ArgumentParser, path: str):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_option_and_argument_has_help():
    walked, missing = [], []
    for path, parser in _parsers(build_parser(), "srdd"):
        walked.append(path)
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if not (action.help or "").strip():
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    assert {"srdd scan", "srdd show", "srdd calibrate", "srdd train", "srdd ingest", "srdd correlate"} <= set(walked)
    assert missing == []
