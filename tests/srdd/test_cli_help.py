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


def test_every_command_says_what_it_is_for():
    undescribed = [path for path, parser in _parsers(build_parser(), "srdd")
                   if path != "srdd" and not (parser.description or "").strip()]
    assert undescribed == []


def test_study_report_help_shows_its_own_examples():
    (report,) = [parser for path, parser in _parsers(build_parser(), "srdd") if path == "srdd study report"]
    text = report.format_help()
    assert "srdd study report runs/ -o report/" in text and "srdd correlate" not in text
