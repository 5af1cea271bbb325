"""Dataset row formats: detect which one a row is, and check a row of a known format.

Formats: messages ({"messages": [...]}), sharegpt ({"conversations": [{"from", "value"}]}),
alpaca ({"instruction", "input"?, "output"}), preference ({"prompt", "chosen", "rejected"}),
kto ({"prompt", "completion", "label": bool}), completion ({"text"}),
prompt-only ({"prompt", ...}: no answer; online RL such as GRPO samples it, other columns feed the rewards).
Pure functions: each check returns (field_path, message, fix) findings.
"""

from __future__ import annotations

from typing import Any

from ftkit.data.checks import Finding, check_conversation, check_preference, check_prompt_only

FORMATS = ("messages", "sharegpt", "alpaca", "preference", "kto", "completion", "prompt-only")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def detect_format(row: Any) -> str | None:
    if not isinstance(row, dict):
        return None
    if "chosen" in row and "rejected" in row:
        return "preference"
    if "label" in row and "completion" in row:
        return "kto"
    if isinstance(row.get("messages"), list):
        return "messages"
    if isinstance(row.get("conversations"), list):
        return "sharegpt"
    if "instruction" in row and "output" in row:
        return "alpaca"
    if isinstance(row.get("text"), str):
        return "completion"
    if "prompt" in row and "completion" not in row:
        return "prompt-only"
    return None


def _non_empty(row: dict[str, Any], field: str) -> list[Finding]:
    value = row.get(field)
    if not isinstance(value, str):
        return [(field, f"'{field}' must be a string, got {type(value).__name__}", f"set '{field}' to text")]
    if not value.strip():
        return [(field, f"'{field}' is empty", "fill it in or drop the row")]
    return []


def check_sharegpt(row: dict[str, Any]) -> list[Finding]:
    turns = row["conversations"]
    out: list[Finding] = []
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            out.append(
                (f"conversations.{i}", "a turn needs 'from' and 'value'", "write {'from': 'human', 'value': ...}")
            )
            continue
        role = SHAREGPT_ROLES.get(turn["from"])
        if role is None:
            known = ", ".join(SHAREGPT_ROLES)
            out.append((f"conversations.{i}.from", f"unknown speaker '{turn['from']}'", f"use one of: {known}"))
            continue
        messages.append({"role": role, "content": turn["value"]})
    if out:
        return out
    renamed = []
    for field, message, fix in check_conversation(messages, "conversations"):
        field = field.removesuffix(".role") + ".from" if field.endswith(".role") else field
        field = field.removesuffix(".content") + ".value" if field.endswith(".content") else field
        renamed.append((field, message, fix))
    return renamed


def check_kto(row: dict[str, Any]) -> list[Finding]:
    out = _non_empty(row, "completion")
    if not isinstance(row.get("label"), bool):
        out.append(("label", f"label must be true or false, got {row.get('label')!r}", "true = desirable answer"))
    if not row.get("prompt"):
        out.append(("prompt", "the prompt is missing or empty", "add the prompt"))
    return out


def check_format(row: Any, fmt: str) -> list[Finding]:
    if not isinstance(row, dict):
        return [("", f"a row must be a JSON object, got {type(row).__name__}", "write one object per row")]
    found = detect_format(row)
    if found != fmt:
        return [("", f"the row looks like '{found or 'no known format'}', not '{fmt}'", f"write it as {fmt} rows")]
    if fmt == "messages":
        return check_conversation(row["messages"], "messages")
    if fmt == "sharegpt":
        return check_sharegpt(row)
    if fmt == "alpaca":
        return _non_empty(row, "instruction") + _non_empty(row, "output")
    if fmt == "preference":
        return check_preference(row)
    if fmt == "kto":
        return check_kto(row)
    if fmt == "prompt-only":
        return check_prompt_only(row)
    return _non_empty(row, "text")
