"""Pure format checks on one row, beyond what JSON Schema can say (turn order, pair sanity).

Each check returns a list of (field_path, message, fix); an empty list means the row is fine.
"""

from __future__ import annotations

from typing import Any

Finding = tuple[str, str, str]


def check_conversation(messages: Any, field: str, *, must_end_with_assistant: bool = True) -> list[Finding]:
    if not isinstance(messages, list) or not messages:
        return []  # the JSON Schema reports the type/emptiness
    out: list[Finding] = []
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    start = 1 if roles[0] == "system" else 0
    for i, role in enumerate(roles):
        if role == "system" and i != 0:
            out.append((f"{field}.{i}.role", "a system turn may only come first", "move it to the start"))
    expected = "user"
    for i in range(start, len(roles)):
        role = roles[i]
        if role in ("user", "assistant"):
            if role != expected:
                out.append(
                    (
                        f"{field}.{i}.role",
                        f"turn {i} is '{role}' but '{expected}' was expected (user and assistant alternate)",
                        "merge consecutive turns of one speaker, or drop the stray turn",
                    )
                )
                break
            expected = "assistant" if role == "user" else "user"
    if must_end_with_assistant:
        last = messages[-1] if isinstance(messages[-1], dict) else {}
        if last.get("role") != "assistant":
            out.append(
                (
                    f"{field}.{len(messages) - 1}.role",
                    "the conversation must end with an assistant turn (nothing to learn otherwise)",
                    "drop the trailing user turn or add the assistant's answer",
                )
            )
        elif not str(last.get("content", "")).strip():
            out.append(
                (
                    f"{field}.{len(messages) - 1}.content",
                    "the last assistant turn is empty",
                    "fill in the answer or drop the row",
                )
            )
    return out


def _last_content(conv: Any) -> Any:
    if isinstance(conv, list) and conv and isinstance(conv[-1], dict):
        return conv[-1].get("content")
    return conv


def check_preference(row: dict[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    for side in ("chosen", "rejected"):
        if isinstance(row.get(side), list):
            out += check_conversation(row[side], side)
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if chosen is not None and _last_content(chosen) == _last_content(rejected):
        out.append(("rejected", "chosen and rejected answers are identical", "drop the pair; it teaches nothing"))
    prompt = row.get("prompt")
    if isinstance(prompt, list) and isinstance(chosen, list) and isinstance(rejected, list):
        for side, conv in (("chosen", chosen), ("rejected", rejected)):
            if len(conv) > 1 and conv[: len(prompt)] != prompt:
                out.append(
                    (
                        side,
                        f"{side} does not start with the prompt turns",
                        "make chosen and rejected = prompt + one assistant answer each",
                    )
                )
    return out


def check_prompt_only(row: dict[str, Any]) -> list[Finding]:
    """A prompt-only row (online RL: the trainer samples the answers): the prompt is non-empty text, or chat
    turns that end with the user's turn (no answer turn to learn from)."""
    prompt = row.get("prompt")
    if isinstance(prompt, str):
        return [] if prompt.strip() else [("prompt", "the prompt is empty", "write the question, or drop the row")]
    if not isinstance(prompt, list) or not prompt:
        kind = type(prompt).__name__
        return [("prompt", f"the prompt must be text or a non-empty list of chat turns, got {kind}",
                 "write 'prompt' as a string or as [{'role': 'user', 'content': ...}]")]  # fmt: skip
    out = check_conversation(prompt, "prompt", must_end_with_assistant=False)
    last = prompt[-1] if isinstance(prompt[-1], dict) else {}
    if last.get("role") != "user":
        message = f"a prompt-only row ends with the user's turn, not '{last.get('role')}' (the model writes the answer)"
        fix = "drop the trailing answer turn, or train on answers with a messages or preference row"
        out.append((f"prompt.{len(prompt) - 1}.role", message, fix))
    elif not str(last.get("content", "")).strip():
        out.append((f"prompt.{len(prompt) - 1}.content", "the last user turn is empty", "fill in the question"))
    return out
