"""Token lengths of rows after the model's chat template, and rows a max length would ruin.

A row over `max_len` is truncated by the engine (counted, not invalid). A row whose prompt alone
reaches `max_len` loses its whole assistant answer: nothing is learned from it (invalid).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ftkit.data.convert import ConversionError, convert_row
from ftkit.data.formats import detect_format
from ftkit.data.prompt import prompt_turns


@dataclass
class LengthStats:
    lengths: list[int] = field(default_factory=list)
    over_max: int = 0

    def summary(self, max_len: int | None) -> dict[str, Any]:
        if not self.lengths:
            return {"rows": 0}
        ordered = sorted(self.lengths)

        def pct(p: float) -> int:
            return ordered[min(len(ordered) - 1, int(p * (len(ordered) - 1) + 0.5))]

        return {"rows": len(ordered), "p50": pct(0.5), "p95": pct(0.95), "max": ordered[-1],
                "max_len": max_len, "over_max_len": self.over_max}  # fmt: skip


def conversations(row: Any) -> list[list[dict[str, str]]]:
    """The chat conversations a row trains on (preference rows: prompt + chosen, prompt + rejected)."""
    fmt = detect_format(row)
    if fmt == "preference":
        prompt = prompt_turns(row)
        out = []
        for side in ("chosen", "rejected"):
            conv = row[side]
            answer = [{"role": "assistant", "content": conv}] if isinstance(conv, str) else conv[len(prompt) :]
            out.append(prompt + (answer or conv[-1:]))
        return out
    try:
        return [convert_row(row, "messages")["messages"]]
    except (ConversionError, KeyError, TypeError):
        return []


def template_length(tokenizer: Any, messages: list[dict[str, str]], *, prompt_only: bool = False) -> int:
    if prompt_only:
        first_answer = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), len(messages))
        messages = messages[:first_answer]
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=prompt_only)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return len(ids)


def check_lengths(tokenizer: Any, row: Any, max_len: int | None, stats: LengthStats) -> list[tuple[str, str, str]]:
    found = []
    for conv in conversations(row):
        n = template_length(tokenizer, conv)
        stats.lengths.append(n)
        if max_len is None or n <= max_len:
            continue
        stats.over_max += 1
        prompt = template_length(tokenizer, conv, prompt_only=True)
        if prompt >= max_len:
            finding = (
                "",
                f"the prompt alone is {prompt} tokens (max length {max_len}): the assistant answer would be "
                "cut off entirely",
                "shorten the prompt, raise sequence_len, or drop the row",
            )
            if finding not in found:  # a pair shares its prompt: say it once
                found.append(finding)
    return found
