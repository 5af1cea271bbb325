"""Which strings of a row are text a model trains on, by row format, and how to reach them.

A field path is a tuple of keys and list indexes, e.g. ("messages", 2, "content"). Only text is
returned: message contents, never roles, keys, ids or labels. `--fields` patterns are dotted paths
with `*` for any list index or key: `messages.*.content`, `instruction`, `meta.notes`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ftkit.data.formats import detect_format
from ftkit.errors import FtkitError

Path = tuple[str | int, ...]

# Per format: the top-level keys that hold text, as a string or as a list of chat turns.
FORMAT_FIELDS: dict[str, tuple[str, ...]] = {
    "messages": ("messages",),
    "sharegpt": ("conversations", "system"),
    "alpaca": ("system", "instruction", "input", "output"),
    "preference": ("system", "prompt", "input", "question", "chosen", "rejected"),
    "kto": ("system", "prompt", "input", "question", "completion"),
    "completion": ("text",),
    "prompt-only": ("system", "prompt"),
}
_TURN_TEXT = ("content", "value")  # messages use content, ShareGPT turns use value
_NOT_TEXT = {"role", "from", "id", "label", "type", "name", "tool_call_id"}


def _turn_strings(value: Any, path: Path) -> Iterator[tuple[Path, str]]:
    """A string, or chat turns whose content is a string or a list of {"type": "text", "text": ...} parts."""
    if isinstance(value, str):
        yield path, value
        return
    if not isinstance(value, list):
        return
    for i, turn in enumerate(value):
        if isinstance(turn, str):
            yield (*path, i), turn
            continue
        if not isinstance(turn, dict):
            continue
        for key in _TURN_TEXT:
            content = turn.get(key)
            if isinstance(content, str):
                yield (*path, i, key), content
            elif isinstance(content, list):
                for j, part in enumerate(content):
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        yield (*path, i, key, j, "text"), part["text"]


def _all_strings(value: Any, path: Path) -> Iterator[tuple[Path, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            if k not in _NOT_TEXT:
                yield from _all_strings(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _all_strings(v, (*path, i))


def parse_patterns(specs: list[str] | None) -> list[tuple[str, ...]] | None:
    if not specs:
        return None
    patterns = []
    for spec in specs:
        for one in spec.split(","):
            parts = tuple(p for p in one.strip().split(".") if p)
            if not parts:
                raise FtkitError.one(f"empty field pattern in '{spec}'", field="--fields",
                                     fix="write dotted paths such as messages.*.content or instruction")  # fmt: skip
            patterns.append(parts)
    return patterns


def _match(value: Any, pattern: tuple[str, ...], path: Path) -> Iterator[tuple[Path, str]]:
    if not pattern:
        yield from _all_strings(value, path)
        return
    head, rest = pattern[0], pattern[1:]
    if isinstance(value, dict):
        keys = list(value) if head == "*" else [head] if head in value else []
        for k in keys:
            yield from _match(value[k], rest, (*path, k))
    elif isinstance(value, list):
        indexes = range(len(value)) if head == "*" else [int(head)] if head.isdigit() and int(head) < len(value) else []
        for i in indexes:
            yield from _match(value[i], rest, (*path, i))


def text_fields(row: Any, patterns: list[tuple[str, ...]] | None = None) -> list[tuple[Path, str]]:
    """(path, text) of every text field: the given patterns, else the row format's text fields, else
    (no known format) every string that is not a role, id, label or name."""
    if not isinstance(row, dict):
        return []
    if patterns is not None:
        seen: dict[Path, str] = {}
        for pattern in patterns:
            seen.update(_match(row, pattern, ()))
        return list(seen.items())
    fmt = detect_format(row)
    if fmt is None:
        return list(_all_strings(row, ()))
    out: list[tuple[Path, str]] = []
    for key in FORMAT_FIELDS[fmt]:
        if key in row:
            out.extend(_turn_strings(row[key], (key,)))
    return out


def set_path(row: Any, path: Path, value: str) -> None:
    target = row
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


def path_str(path: Path) -> str:
    return ".".join(str(p) for p in path)
