"""Edit values in YAML text in place, so comments, anchors and layout elsewhere survive.

Each change replaces the text of one existing value (found by its dotted path in the parsed node
tree) with the new value rendered in the same style (block or flow). The result is parsed back
and must equal the intended data; when it does not (an alias, an odd layout), `edit_text` raises
and the caller can fall back to `rewrite_text`, which keeps only the leading comment block.
A path is a dotted string or, for keys that hold dots themselves (a profile's `datasets.0.path`
override), a tuple of keys. With `insert`, a missing key of a block mapping is added at its end.
"""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

import yaml

from ftkit.dotted_keys import set_path

Key = str | tuple[str, ...]


class TextEditError(ValueError):
    """The change cannot be made in the text without changing something else."""


class _Missing(TextEditError):
    def __init__(self, key: Key, parent: yaml.Node, rest: list[str]) -> None:
        super().__init__(f"'{_label(key)}': no key '{rest[0]}'")
        self.parent, self.rest = parent, rest


def _parts(key: Key) -> list[str]:
    return list(key) if isinstance(key, tuple) else key.split(".")


def _label(key: Key) -> str:
    return ".".join(key) if isinstance(key, tuple) else key


def set_key(data: Any, key: Key, value: Any) -> None:
    """`set_path` for a dotted key; a tuple key is followed key by key (creating mappings on the way)."""
    if isinstance(key, str):
        set_path(data, key, value)
        return
    current = data
    for part in key[:-1]:
        if isinstance(current, list):
            current = current[int(part)]
            continue
        if current.get(part) is None:
            current[part] = {}
        current = current[part]
    if isinstance(current, list):
        current[int(key[-1])] = value
    else:
        current[key[-1]] = value


def _node_at(root: yaml.Node, key: Key) -> yaml.Node:
    node, parts = root, _parts(key)
    for i, part in enumerate(parts):
        if isinstance(node, yaml.MappingNode):
            match = [v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part]
            if not match:
                raise _Missing(key, node, parts[i:])
            if len(match) != 1:
                raise TextEditError(f"'{_label(key)}': no single key '{part}'")
            node = match[0]
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
        else:
            raise TextEditError(f"'{_label(key)}': '{part}' is not in the document")
    return node


def _insertion(text: str, parent: yaml.Node, entries: dict[str, Any]) -> tuple[int, int, str]:
    """A zero-width span that adds `entries` as the last keys of a block mapping (at the start of the line after
    its last value, so a trailing comment stays where it was)."""
    if parent.flow_style or not parent.value:
        raise TextEditError(f"{list(entries)}: only a non-empty block mapping can take a new key")
    indent = " " * parent.value[0][0].start_mark.column
    dumped = yaml.safe_dump(entries, sort_keys=False, allow_unicode=True, width=10**6, default_flow_style=False)
    block = "".join(indent + line + "\n" for line in dumped.splitlines())
    end = text.find("\n", _end(parent))
    if end < 0:
        return len(text), len(text), ("" if text.endswith("\n") else "\n") + block
    return end + 1, end + 1, block


def _end(node: yaml.Node) -> int:
    """Where a value's own text ends (a block collection's end mark lies past trailing comments)."""
    if isinstance(node, yaml.MappingNode | yaml.SequenceNode) and not node.flow_style and node.value:
        last = node.value[-1]
        return _end(last[1] if isinstance(node, yaml.MappingNode) else last)
    return node.end_mark.index


def _render(value: Any, node: yaml.Node, quote: bool) -> str:
    if quote and isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a double-quoted YAML scalar
    block = isinstance(node, yaml.MappingNode | yaml.SequenceNode) and not node.flow_style
    if isinstance(value, dict | list) and value and block:
        text = yaml.safe_dump(value, sort_keys=False, allow_unicode=True, width=10**6).rstrip("\n")
        return text.replace("\n", "\n" + " " * node.start_mark.column)
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, allow_unicode=True, width=10**6)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _apply(text: str, root: yaml.Node, changes: dict[Key, Any], quote: bool, insert: bool) -> str:
    spans = []
    added: dict[int, tuple[yaml.Node, dict[str, Any]]] = {}  # new keys per block mapping, merged
    for key, value in changes.items():
        try:
            node = _node_at(root, key)
        except _Missing as missing:
            if not insert:
                raise
            entries = added.setdefault(id(missing.parent), (missing.parent, {}))[1]
            for part in missing.rest[:-1]:
                entries = entries.setdefault(part, {})
            entries[missing.rest[-1]] = value
            continue
        spans.append((node.start_mark.index, _end(node), _render(value, node, quote)))
    spans += [_insertion(text, parent, entries) for parent, entries in added.values()]
    spans.sort()
    if any(a[1] > b[0] for a, b in itertools.pairwise(spans)):
        raise TextEditError("two changes overlap")
    for start, end, rendered in reversed(spans):
        text = text[:start] + rendered + text[end:]
    return text


def edit_text(text: str, changes: dict[Key, Any], *, insert: bool = False) -> str:
    """`text` with the value at each path of `changes` replaced; every path must already exist (with `insert`, a
    missing key of a block mapping is added).

    Strings are written plain where that parses back (else double-quoted, e.g. inside a flow mapping)."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is None:
        raise TextEditError("the document is empty")
    intended = copy.deepcopy(yaml.safe_load(text))
    for key, value in changes.items():
        set_key(intended, key, copy.deepcopy(value))
    for quote in (False, True):
        out = _apply(text, root, changes, quote, insert)
        try:
            if yaml.safe_load(out) == intended:
                return out
        except yaml.YAMLError:
            continue
    raise TextEditError("the edited text does not parse back to the intended data")


class _PlainDumper(yaml.SafeDumper):
    """Writes shared values out in full instead of as &id001 anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def rewrite_text(text: str, data: Any) -> str:
    """`data` dumped as YAML under the leading comment block of `text` (other comments and anchors are lost)."""
    lines = text.splitlines(keepends=True)
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line)
    return "".join(header) + yaml.dump(data, Dumper=_PlainDumper, sort_keys=False, allow_unicode=True, width=110)


def edit_or_rewrite(text: str, changes: dict[Key, Any]) -> tuple[str, bool]:
    """(new text, whether comments were kept): an in-place edit (missing keys added) where possible, else a
    rewrite."""
    try:
        return edit_text(text, changes, insert=True), True
    except TextEditError:
        data = yaml.safe_load(text)
        for key, value in changes.items():
            set_key(data, key, copy.deepcopy(value))
        return rewrite_text(text, data), False
