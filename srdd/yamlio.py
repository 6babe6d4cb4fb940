"""YAML from files and `--set` values, loaded within bounds.

PyYAML's safe loader runs no code, but it still takes whatever it is given: an alias
bomb (a few lines that expand to 10^9 leaves once anything walks them), a document
nested 100,000 deep (RecursionError), a 100 MB value, and duplicate keys, of which the
last silently wins (`steps: 3` then `steps: 1000000`). `load_yaml` refuses each of them
with one line that never repeats the rejected input whole.
"""

from __future__ import annotations

from typing import Any

import yaml

from srdd.errors import SrddError

MAX_CHARS = 4 * 1024 * 1024  # a config or multipliers file is a few KB
MAX_DEPTH = 64
MAX_NODES = 1_000_000  # after alias expansion


class _Refused(yaml.YAMLError):
    pass


def yaml_problem(exc: Exception) -> str:
    """A YAML error in one line: what is wrong and where (PyYAML's own text spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{getattr(exc, 'problem', None) or exc}{where}"


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader with a depth limit while composing and no duplicate mapping keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen: set[str] = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                if key.value in seen:
                    raise _Refused(f"duplicate key {key.value[:40]!r} at line {key.start_mark.line + 1} (the last "
                                   "would silently win)")
                seen.add(key.value)
        return super().construct_mapping(node, deep)


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Nodes the document holds once every alias is expanded (shared nodes counted at each use)."""
    if id(node) not in memo:
        children = node.value if isinstance(node.value, list) else []
        parts = [c for pair in children for c in (pair if isinstance(pair, tuple) else (pair,))]
        memo[id(node)] = 1 + sum(_expanded_size(c, memo) for c in parts)
    return memo[id(node)]


def load_yaml(text: str, where: str) -> Any:
    """The document in `text`, or SrddError("{where} ...") in one line."""
    if len(text) > MAX_CHARS:
        raise SrddError(f"{where} is {len(text)} characters long, more than the {MAX_CHARS} srdd reads as YAML")
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_NODES:
            raise _Refused(f"its aliases expand to more than {MAX_NODES} values")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise SrddError(f"{where} is not valid YAML: {yaml_problem(exc)}") from None
    finally:
        loader.dispose()
