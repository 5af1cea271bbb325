"""YAML loading that remembers the line of every key, so errors can point at it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ftkit.errors import FtkitError


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


def load_yaml(path: str | Path) -> LocatedYaml:
    """Parse a YAML file; a syntax error becomes an FtkitError naming file and line."""
    p = Path(path)
    if not p.is_file():
        raise FtkitError.one("file not found", file=p, fix="check the path, or create the file (see recipes/README.md)")
    text = p.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise FtkitError.one(
            f"YAML syntax error: {getattr(exc, 'problem', exc)}",
            file=p,
            line=mark.line + 1 if mark else None,
            fix="fix the YAML syntax (indentation, a missing ':' or quote)",
        ) from exc
    lines: dict[str, int] = {}
    if node is not None:
        _walk(node, "", lines)
    return LocatedYaml(p, data if data is not None else {}, lines)


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110)
