"""Token counts of a dataset file as a trainer sees its rows: the chat template applied, then tokenized.

A file is streamed twice: once to count its rows, once to tokenize a deterministic sample of at most `sample`
rows spread evenly over it (every row when it has no more). The lengths are kept per row and before any limit,
so one reading serves every sequence length and over-length rule a caller asks about (`FileLengths.totals`).

What a row trains on: a conversation (messages, alpaca, sharegpt) is one sequence; a preference pair is two
(prompt + chosen, prompt + rejected); a KTO row is its prompt + completion; a completion row (`text`) is its text
without a template; a prompt-only row (GRPO) is its prompt with the generation prompt, to which the caller adds
the completion length.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ftkit.data.formats import detect_format
from ftkit.data.lengths import conversations, template_length
from ftkit.data.prompt import prompt_turns
from ftkit.data.readers import iter_records

DEFAULT_SAMPLE = 2000  # rows tokenized per file at most: the mean of 2,000 rows is within a few % of the file's
OverLength = Literal["truncate", "drop"]
_SLICE = re.compile(r"\[\s*(-?\d+%?)?\s*:\s*(-?\d+%?)?\s*\]\s*$")


def split_rows(split: str | None, rows: int) -> tuple[int, int]:
    """The [start, stop) rows of a `rows`-row file that a datasets-style split selects: `train[:16]`,
    `train[100:]`, `train[10%:50%]`; the whole file for a split without a slice (or one we cannot read)."""
    m = _SLICE.search(split or "")
    if not m:
        return 0, rows

    def bound(text: str | None, default: int) -> int:
        if text is None:
            return default
        value = round(rows * int(text[:-1]) / 100) if text.endswith("%") else int(text)
        return max(0, min(rows, value + rows if value < 0 else value))

    start, stop = bound(m.group(1), 0), bound(m.group(2), rows)
    return start, max(start, stop)


def sample_positions(n: int, k: int) -> Sequence[int]:
    """`k` row positions of `n`, one drawn in each of k equal parts of the file (all n when k <= 0 or k >= n): spread
    over the whole file like a fixed stride, without a stride's blind spot for data that repeats with its period
    (files concatenated from templated sources). Seeded: the same file always gives the same sample."""
    if k <= 0 or k >= n:
        return range(n)
    rng = random.Random(0)
    return [rng.randrange(i * n // k, (i + 1) * n // k) for i in range(k)]


def _kto_turns(row: dict[str, Any]) -> list[dict[str, str]]:
    completion = row["completion"]
    answer = completion if isinstance(completion, list) else [{"role": "assistant", "content": str(completion)}]
    return prompt_turns(row) + [t for t in answer if isinstance(t, dict)]


def row_lengths(tokenizer: Any, row: Any) -> tuple[int, ...] | None:
    """Token lengths of the sequences one row trains on, before truncation; None for a row we cannot read (no
    known format). Exceptions from the chat template (a conversation it refuses) propagate."""
    fmt = detect_format(row)
    if fmt == "kto":
        return (template_length(tokenizer, _kto_turns(row)),)
    if fmt == "completion":
        return (len(tokenizer(row["text"])["input_ids"]),)
    if fmt == "prompt-only":
        turns = prompt_turns(row)
        return (template_length(tokenizer, turns, prompt_only=True),) if turns else None
    convs = conversations(row)
    return tuple(template_length(tokenizer, c) for c in convs) if convs else None


@dataclass
class Totals:
    """A file's tokens under one sequence length and over-length rule, per row of the file."""

    tokens_per_row: float  # mean tokens a row gives (a dropped row gives 0)
    sequences_per_row: float  # mean sequences of a readable row
    kept_fraction: float  # rows not dropped for their length
    over_max_rows: int  # counted rows with a sequence over the limit (truncated or dropped)


@dataclass
class FileLengths:
    """The rows of a file (or of its split's slice) and the token lengths of the rows counted."""

    path: str
    rows: int  # rows the split selects from the file
    counted: int  # rows tokenized: all of them, or an even sample
    lengths: list[tuple[int, ...]] = field(default_factory=list)  # one entry per counted row we could read
    skipped: int = 0  # counted rows we could not read (invalid JSON, unknown format, refused by the template)
    skip_reason: str | None = None  # the first such reason
    formats: Counter[str] = field(default_factory=Counter)

    @property
    def sampled(self) -> bool:
        return self.counted < self.rows

    def totals(self, max_len: int | None, over_length: OverLength = "truncate", extra: int = 0) -> Totals:
        """Tokens per row with each sequence `extra` tokens longer (a GRPO completion), then cut at `max_len`
        (`truncate`) or its whole row left out when any of its sequences is longer (`drop`, as Axolotl does)."""
        if not self.lengths:
            return Totals(0.0, 0.0, 0.0, 0)
        tokens, sequences, kept, over = 0, 0, 0, 0
        for row in self.lengths:
            seqs = [n + extra for n in row]
            sequences += len(seqs)
            long = max_len is not None and max(seqs) > max_len
            over += long
            if long and over_length == "drop":
                continue
            kept += 1
            tokens += sum(min(n, max_len) if max_len is not None else n for n in seqs)
        n = len(self.lengths)
        return Totals(tokens / n, sequences / n, kept / n, over)


def count_rows(path: str | Path) -> int:
    """Rows of a dataset file (a JSONL line that does not parse is a row too), streamed."""
    return sum(1 for _ in iter_records(path))


def measure_file(path: str | Path, tokenizer: Any, *, split: str | None = None,
                 sample: int = DEFAULT_SAMPLE) -> FileLengths:  # fmt: skip
    """Count the rows the split selects and tokenize an even sample of at most `sample` of them (all: 0)."""
    start, stop = split_rows(split, count_rows(path))
    positions = sample_positions(stop - start, sample)  # ascending, within the slice
    out = FileLengths(str(path), stop - start, len(positions))
    wanted = iter(positions)
    next_wanted = next(wanted, None)
    for index, rec in enumerate(iter_records(path)):
        if next_wanted is None:
            break
        if index - start != next_wanted:
            continue
        next_wanted = next(wanted, None)
        reason = rec.error
        if reason is None:
            out.formats[detect_format(rec.row) or "unknown"] += 1
            try:
                found = row_lengths(tokenizer, rec.row)
            except Exception as exc:  # jinja raises TemplateError and friends for conversations it refuses
                found, reason = None, f"the chat template refused it: {exc}"
            if found:
                out.lengths.append(found)
                continue
            reason = reason or "no format ftkit can tokenize (messages, alpaca, sharegpt, preference, KTO, text)"
        out.skipped += 1
        out.skip_reason = out.skip_reason or f"row {rec.number}: {reason}"
    return out
