"""General prompts for the generation and forgetting checks, and a loader for prompt files.

A prompt file is JSONL (or a JSON array) in one of three shapes:
- MT-bench: {"question_id", "category", "turns": [user text, ...]}
- {"prompt": text or [messages], "category"?, "id"?}
- {"messages": [...], "category"?, "id"?} (a trailing assistant turn is dropped for generation)
`builtin:NAME` names a prompt set shipped in ftkit/evaluate/data (builtin:mt-bench: the 80 MT-bench questions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftkit.data.readers import iter_records
from ftkit.errors import ExitCode, FtkitError, Problem
from ftkit.evaluate.spans import Message

DEFAULT_CHAT_PROMPTS = (  # short answers: a model that works stops well within 128 new tokens
    "Who are you?",
    "Name three primary colours.",
    "Explain in two sentences why the sky is blue.",
    "Write a haiku about the sea.",
)


DATA_DIR = Path(__file__).parent / "data"
BUILTIN_PROMPTS = {"mt-bench": "mt-bench-questions.jsonl"}


class PromptRowError(ValueError):
    """A row with no usable prompt; `field` names the field at fault ("" for the row itself)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass
class Prompt:
    id: str
    turns: list[str]  # the user turns' texts
    category: str | None = None
    messages: list[Message] | None = None  # context for generation, ending with a user turn

    def chat(self) -> list[Message]:
        """The conversation to generate an answer for."""
        return list(self.messages) if self.messages else [{"role": "user", "content": self.turns[0]}]


def _user_texts(messages: list[Any]) -> list[str]:
    return [m["content"] for m in messages if isinstance(m, dict) and m.get("role") == "user"]


def prompt_from_row(row: Any, default_id: str) -> Prompt:
    """One prompt from a row; raises PromptRowError naming the field when the row has no usable prompt."""
    if not isinstance(row, dict):
        raise PromptRowError("", f"a prompt row must be a JSON object, got {type(row).__name__}")
    rid = str(row.get("question_id", row.get("id", default_id)))
    category = row.get("category")
    category = str(category) if category is not None else None
    if "turns" in row:
        turns = row["turns"]
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
            raise PromptRowError("turns", "'turns' must be a non-empty list of non-empty strings")
        return Prompt(rid, list(turns), category)
    if "prompt" in row:
        value = row["prompt"]
        if isinstance(value, str) and value.strip():
            return Prompt(rid, [value], category)
        if isinstance(value, list) and _user_texts(value):
            return Prompt(rid, _user_texts(value), category, list(value))
        raise PromptRowError("prompt", "'prompt' must be text or a list of messages with a user turn")
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not _user_texts(messages):
            raise PromptRowError("messages", "'messages' must be a list of messages with a user turn")
        last_user = max(i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user")
        return Prompt(rid, _user_texts(messages), category, list(messages[: last_user + 1]))
    raise PromptRowError("", "no 'turns', 'prompt' or 'messages' field")


def resolve_prompts(ref: str | Path) -> Path:
    """The file a prompt reference names: a path, or `builtin:NAME` for a set in ftkit/evaluate/data."""
    text = str(ref)
    if not text.startswith("builtin:"):
        return Path(ref)
    name = text.removeprefix("builtin:")
    if name not in BUILTIN_PROMPTS:
        known = ", ".join(f"builtin:{n}" for n in BUILTIN_PROMPTS)
        raise FtkitError.one(f"no built-in prompt set '{name}'", field="general_prompts", fix=f"use one of: {known}")
    return DATA_DIR / BUILTIN_PROMPTS[name]


def load_prompts(path: str | Path) -> list[Prompt]:
    """Read a prompt file (or `builtin:NAME`); every bad line is reported at once (file, line, field, fix)."""
    src = resolve_prompts(path)
    if not src.is_file():
        raise FtkitError.one(f"no prompt file at {src}", file=src, fix="give the path of a .jsonl prompt file")
    prompts, problems = [], []
    fix = 'write {"turns": ["..."]} (MT-bench), {"prompt": "..."} or {"messages": [...]}, one object per line'
    for rec in iter_records(src):
        if rec.error:
            problems.append(Problem(rec.error, str(src), rec.number, None, "write one JSON object per line"))
            continue
        try:
            prompts.append(prompt_from_row(rec.row, f"{src.stem}-{rec.number}"))
        except PromptRowError as exc:
            problems.append(Problem(exc.message, str(src), rec.number, exc.field or None, fix))
    if problems:
        raise FtkitError(f"{len(problems)} bad prompt row(s) in {src}", problems, ExitCode.DATA_INVALID)
    if not prompts:
        raise FtkitError.one(f"{src} has no prompts", file=src, fix=fix, code=ExitCode.DATA_INVALID)
    return prompts


def as_prompts(items: Sequence[Prompt | str | list[Message] | dict[str, Any]]) -> list[Prompt]:
    """Prompts from Prompt objects, plain strings, message lists or prompt rows."""
    out = []
    for i, item in enumerate(items):
        if isinstance(item, Prompt):
            out.append(item)
        elif isinstance(item, str):
            out.append(Prompt(str(i), [item]))
        elif isinstance(item, list):
            out.append(prompt_from_row({"messages": item}, str(i)))
        else:
            out.append(prompt_from_row(item, str(i)))
    return out
