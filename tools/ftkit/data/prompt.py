"""The prompt of a pairwise or KTO row, however the dataset spells it.

TRL's rows carry `prompt` (text, or the chat turns before the answer). Axolotl's Bradley-Terry and
Intel-ORCA-style pairs carry the user turn as `input` (or `question`) with an optional `system`
turn instead. Every check that reads a row's prompt (lengths, duplicates and leakage, PII fields,
format checks) goes through here, so none of them misses the user turn.
"""

from __future__ import annotations

from typing import Any

# Keys that hold the user turn when a row has no `prompt`, in the order they are looked up.
USER_TURN_KEYS = ("input", "question")


def prompt_key(row: dict[str, Any]) -> str | None:
    """The key holding the prompt: `prompt`, else `input` / `question`; None when the row has none."""
    if "prompt" in row:
        return "prompt"
    return next((k for k in USER_TURN_KEYS if k in row), None)


def prompt_turns(row: dict[str, Any]) -> list[dict[str, str]]:
    """The chat turns before the answer: `prompt` as turns (a string is one user turn), else a `system` turn
    (when non-empty) and the `input` / `question` user turn. Empty when the row has no prompt."""
    key = prompt_key(row)
    if key is None:
        return []
    value = row[key]
    if key == "prompt" and isinstance(value, list):
        return [t for t in value if isinstance(t, dict)]
    turns = []
    system = row.get("system")
    if key != "prompt" and isinstance(system, str) and system.strip():
        turns.append({"role": "system", "content": system})
    turns.append({"role": "user", "content": value if isinstance(value, str) else str(value)})
    return turns
