"""Edit values in YAML text in place, so comments, anchors and layout elsewhere survive.

Each change replaces the text of one existing value (found by its dotted path in the parsed node
tree) with the new value rendered in the same style (block or flow). The result is parsed back
and must equal the intended data; when it does not (an alias, an odd layout), `edit_text` raises
and the caller can fall back to `rewrite_text`, which keeps only the leading comment block.
"""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

import yaml

from ftkit.recipes.overrides import set_path


class TextEditError(ValueError):
    """The change cannot be made in the text without changing something else."""


def _node_at(root: yaml.Node, dotted: str) -> yaml.Node:
    node = root
    for part in dotted.split("."):
        if isinstance(node, yaml.MappingNode):
            match = [v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part]
            if len(match) != 1:
                raise TextEditError(f"'{dotted}': no single key '{part}'")
            node = match[0]
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
        else:
            raise TextEditError(f"'{dotted}': '{part}' is not in the document")
    return node


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


def _apply(text: str, root: yaml.Node, changes: dict[str, Any], quote: bool) -> str:
    spans = []
    for dotted, value in changes.items():
        node = _node_at(root, dotted)
        spans.append((node.start_mark.index, _end(node), _render(value, node, quote)))
    spans.sort()
    if any(a[1] > b[0] for a, b in itertools.pairwise(spans)):
        raise TextEditError("two changes overlap")
    for start, end, rendered in reversed(spans):
        text = text[:start] + rendered + text[end:]
    return text


def edit_text(text: str, changes: dict[str, Any]) -> str:
    """`text` with the value at each dotted path of `changes` replaced; every path must already exist.

    Strings are written plain where that parses back (else double-quoted, e.g. inside a flow mapping)."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is None:
        raise TextEditError("the document is empty")
    intended = copy.deepcopy(yaml.safe_load(text))
    for dotted, value in changes.items():
        set_path(intended, dotted, copy.deepcopy(value))
    for quote in (False, True):
        out = _apply(text, root, changes, quote)
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


def edit_or_rewrite(text: str, changes: dict[str, Any]) -> tuple[str, bool]:
    """(new text, whether comments were kept): an in-place edit where possible, else a rewrite."""
    try:
        return edit_text(text, changes), True
    except TextEditError:
        data = yaml.safe_load(text)
        for dotted, value in changes.items():
            set_path(data, dotted, copy.deepcopy(value))
        return rewrite_text(text, data), False
