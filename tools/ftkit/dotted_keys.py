"""Dotted-path overrides of nested configs (`a.b.0.c: value`) and `--set key=value` parsing."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from ftkit.errors import FtkitError
from ftkit.yaml_load import describe_yaml_error


def parse_set(items: list[str]) -> list[tuple[str, Any]]:
    """Parse `KEY=VALUE` strings; VALUE is read as a YAML scalar/flow value (`3`, `true`, `[a, b]`)."""
    out = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise FtkitError.one(
                f"--set '{item}' is not KEY=VALUE",
                field="--set",
                fix="write it as --set learning_rate=1e-4 (or --set sft.max_steps=5 for one stage)",
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise FtkitError.one(
                f"--set {key}: value {raw!r} is not valid YAML ({getattr(exc, 'problem', None) or exc})",
                field=key,
                fix=f"{describe_yaml_error(exc, raw).fix}; or quote a string that contains ': ' or ' #'",
            ) from exc
        out.append((key.strip(), _number_if_numeric(value)))
    return out


def _number_if_numeric(value: Any) -> Any:
    """YAML 1.1 reads `1e-4` (no dot) as a string; on a command line it means a number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def get_path(data: Any, dotted: str) -> Any:
    current = data
    for part in dotted.split("."):
        current = current[int(part)] if isinstance(current, list) else current[part]
    return current


def has_path(data: Any, dotted: str) -> bool:
    try:
        get_path(data, dotted)
    except (KeyError, IndexError, ValueError, TypeError):
        return False
    return True


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set a dotted path, creating mappings on the way; numeric parts index existing lists."""
    parts = dotted.split(".")
    current: Any = data
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(current, list):
            idx = int(part)
            if idx >= len(current):
                raise FtkitError.one(
                    f"'{dotted}': index {idx} is past the end of a list of {len(current)}",
                    field=dotted,
                    fix="override an existing list item, or the whole list",
                )
            current = current[idx]
            continue
        if part not in current or current[part] is None:
            current[part] = [] if nxt.isdigit() else {}
        current = current[part]
    last = parts[-1]
    if isinstance(current, list):
        current[int(last)] = value
    else:
        current[last] = value


def apply_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of `base` with each (dotted) key of `overrides` set."""
    result = copy.deepcopy(base)
    for key, value in overrides.items():
        set_path(result, key, copy.deepcopy(value))
    return result
