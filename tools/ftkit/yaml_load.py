"""YAML loading that remembers the line of every key, so errors can point at it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ftkit.errors import FtkitError, Problem


@dataclass
class LocatedYaml:
    """A parsed YAML document and the 1-based line of each key path ("a.b.0.c")."""

    path: Path
    data: Any
    lines: dict[str, int]

    def line_of(self, dotted: str) -> int | None:
        """Line of the deepest known prefix of a dotted path."""
        parts = dotted.split(".") if dotted else []
        while parts:
            key = ".".join(parts)
            if key in self.lines:
                return self.lines[key]
            parts.pop()
        return None


def _walk(node: yaml.Node, prefix: str, out: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            out[key] = key_node.start_mark.line + 1
            _walk(value_node, key, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            key = f"{prefix}.{i}" if prefix else str(i)
            out[key] = item.start_mark.line + 1
            _walk(item, key, out)


@dataclass(frozen=True)
class YamlErrorSpot:
    """Where a YAML error is (1-based line and column; None when PyYAML gave no position) and what to say."""

    line: int | None
    column: int | None
    message: str
    fix: str


# Contexts that name a construct opened earlier and never closed: its start is where the mistake is, whereas
# PyYAML's problem mark is where it gave up (often the end of the file).
_OPENED = ("quoted scalar", "simple key", "flow sequence", "flow mapping")


def _pos(mark: Any) -> tuple[int, int]:
    return mark.line + 1, mark.column + 1


def _fix_for(problem: str, context: str, start: tuple[int, int] | None, opener: str) -> str:
    """A fix hint for the common PyYAML errors; `start` and `opener` name the construct left open, if any."""
    at = f" at line {start[0]}, column {start[1]}" if start else ""
    if "quoted scalar" in context:
        return f"close the {opener or 'quote'} opened{at} (a value without ': ' or ' #' needs no quotes)"
    if "flow sequence" in context:
        return f"close the '['{at} with ']' and separate its items with ', '"
    if "flow mapping" in context:
        return f"close the '{{'{at} with '}}' and separate its entries with ', '"
    if "\\t" in problem or "\t" in problem:
        return "indent with spaces: YAML does not allow tab characters in indentation"
    if "could not find expected ':'" in problem:
        return f"write the key{at} as 'key: value', or quote a value that was wrapped onto the next line"
    if "mapping values are not allowed" in problem:
        return "quote a value that contains ': ' (key: \"a: b\"), or indent this key like the keys next to it"
    if "expected <block end>" in problem:
        return "indent this line with as many spaces as the other keys (or list items) of its block"
    if "undefined alias" in problem:
        return "define the anchor (&name) before its alias (*name), or quote a value that starts with '*'"
    if "constructor for the tag" in problem:
        return "remove the '!' tag, or quote a value that starts with '!'"
    return "fix the YAML syntax (indentation with spaces, a missing ':' or a closing quote)"


def describe_yaml_error(exc: yaml.YAMLError, text: str) -> YamlErrorSpot:
    """Locate a PyYAML error at the mistake, not where the parser gave up.

    An unclosed quote or bracket makes PyYAML read on to the end of the file and report the problem there; its
    context mark names where the quote or bracket was opened, which is the line to fix."""
    problem = str(getattr(exc, "problem", None) or "")
    context = str(getattr(exc, "context", None) or "")
    problem_mark = getattr(exc, "problem_mark", None)
    context_mark = getattr(exc, "context_mark", None)
    if not problem and not problem_mark:  # a ReaderError (a character YAML does not allow) or a bare error
        position = getattr(exc, "position", None)
        line = text.count("\n", 0, position) + 1 if isinstance(position, int) else None
        column = position - (text.rfind("\n", 0, position) + 1) + 1 if isinstance(position, int) else None
        reason = getattr(exc, "reason", None) or str(exc)
        char = getattr(exc, "character", None)
        reason += f" (character {char:#06x})" if isinstance(char, int) else ""
        fix = "remove the control or non-printable character (or write it as an escape inside double quotes)"
        return YamlErrorSpot(line, column, f"YAML error: {reason}", fix)
    opened = context_mark is not None and any(what in context for what in _OPENED)
    start = _pos(context_mark) if opened else None
    opener = ""
    if start is not None and context_mark.index < len(text):
        opener = {"'": "single quote (')", '"': 'double quote (")'}.get(text[context_mark.index], "")
    fix = _fix_for(problem, context, start, opener)
    if start is not None and problem_mark is not None:
        found = _pos(problem_mark)
        message = f"YAML syntax error: {context} that starts here, {problem} at line {found[0]}, column {found[1]}"
        return YamlErrorSpot(start[0], start[1], message, fix)
    where = _pos(problem_mark) if problem_mark is not None else (None, None)
    aside = ""
    if context:
        aside = f" ({context} at line {context_mark.line + 1})" if context_mark is not None else f" ({context})"
    return YamlErrorSpot(where[0], where[1], f"YAML syntax error: {problem}{aside}", fix)


def yaml_error_problem(exc: yaml.YAMLError, text: str, path: str | Path) -> Problem:
    """The Problem for a YAML error in file `path` (its text `text`): file:line:column, PyYAML's words, a fix."""
    spot = describe_yaml_error(exc, text)
    return Problem(spot.message, str(path), spot.line, None, spot.fix, spot.column)


def load_yaml(path: str | Path) -> LocatedYaml:
    """Parse a YAML file; a syntax error becomes an FtkitError naming file:line:column of the mistake and a fix."""
    p = Path(path)
    if not p.is_file():
        raise FtkitError.one("file not found", file=p, fix="check the path, or create the file (see recipes/README.md)")
    text = p.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = yaml_error_problem(exc, text, p)
        raise FtkitError(problem.message, [problem]) from exc
    lines: dict[str, int] = {}
    if node is not None:
        _walk(node, "", lines)
    return LocatedYaml(p, data if data is not None else {}, lines)


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110)
