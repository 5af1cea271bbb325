"""The text of a row (by format) and its normalised form, for duplicate and leakage checks."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Any

from ftkit.data.formats import detect_format
from ftkit.data.prompt import prompt_turns

_SPACE = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]")


def _conversation_text(turns: Any, role_key: str = "role", content_key: str = "content") -> list[str]:
    if isinstance(turns, str):
        return [turns]
    if not isinstance(turns, list):
        return []
    return [f"{t.get(role_key, '')}: {t.get(content_key, '')}" for t in turns if isinstance(t, dict)]


def row_text(row: Any) -> str:
    """All the text a model would see in a row, in order; keys, ids and labels excluded."""
    fmt = detect_format(row)
    if fmt == "messages":
        parts = _conversation_text(row["messages"])
    elif fmt == "sharegpt":
        parts = _conversation_text(row["conversations"], "from", "value")
    elif fmt == "alpaca":
        parts = [str(row.get(k) or "") for k in ("system", "instruction", "input", "output")]
    elif fmt == "preference":
        parts = [*_conversation_text(prompt_turns(row)), *_conversation_text(row["chosen"]),
                 *_conversation_text(row["rejected"])]  # fmt: skip
    elif fmt == "kto":
        parts = [*_conversation_text(prompt_turns(row)), *_conversation_text(row["completion"])]
    elif fmt == "completion":
        parts = [row["text"]]
    else:
        parts = [str(v) for k, v in sorted(row.items()) if k != "id"] if isinstance(row, dict) else [str(row)]
    return "\n".join(p for p in parts if p)


def normalize(text: str) -> str:
    """Case-folded, NFKC, punctuation dropped, whitespace collapsed: 'Hello,  World!' == 'hello world'."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", _PUNCT.sub(" ", text)).strip()


def exact_key(text: str) -> str:
    return hashlib.blake2b(normalize(text).encode(), digest_size=16).hexdigest()


def shingles(text: str, n: int = 5) -> set[str]:
    """Word n-grams of the normalised text (the whole text when shorter than n words)."""
    words = normalize(text).split()
    if len(words) <= n:
        return {" ".join(words)}
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}
