"""Perplexity of a model on held-out rows, scoring only the response tokens under the chat template.

Rows are in any of our formats (ftkit.data.formats). Chat rows (messages, sharegpt, alpaca) score every
assistant turn; preference rows score the chosen answer and also give the chosen-minus-rejected
log-probability margin (summed over each answer's tokens, as DPO compares them); KTO rows with a
desirable completion score it; completion rows ({"text"}) score the whole text without a template.
Rows that cannot be scored are counted as skipped, each with its reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ftkit.data.convert import ConversionError, convert_row
from ftkit.data.formats import detect_format
from ftkit.evaluate.eos import stop_token_ids
from ftkit.evaluate.scoring import Progress, score_sequences
from ftkit.evaluate.spans import Encoded, Message, SpanError, encode_conversation, encode_plain_text


@dataclass(frozen=True)
class SkippedRow:
    index: int  # 0-based position in the rows given
    reason: str


@dataclass
class PerplexityResult:
    mean_nll: float | None  # nats per scored token, over all scored rows
    perplexity: float | None
    tokens_scored: int
    rows_scored: int
    rows_total: int
    rows_truncated: int = 0
    skipped: list[SkippedRow] = field(default_factory=list)
    preference_pairs: int = 0
    mean_margin: float | None = None  # mean of log p(chosen) - log p(rejected), nats per pair
    margin_accuracy: float | None = None  # fraction of pairs with a positive margin

    @property
    def rows_skipped(self) -> int:
        return len(self.skipped)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows_skipped": self.rows_skipped}


def _as_user(prompt: Any) -> list[Message]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt or [])


def _with_answer(prompt: list[Message], answer: Any) -> list[Message]:
    if isinstance(answer, str):
        return [*prompt, {"role": "assistant", "content": answer}]
    answer = list(answer)
    return answer if prompt and answer[: len(prompt)] == prompt else [*prompt, *answer]


def _implicit_prompt(row: dict[str, Any]) -> dict[str, Any] | None:
    """A conversational pair without a 'prompt' field: its prompt is the turns chosen and rejected share."""
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if "prompt" in row or not (isinstance(chosen, list) and isinstance(rejected, list)):
        return None
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    return {"prompt": chosen[:shared], "chosen": chosen, "rejected": rejected}


def _encode(
    tokenizer: Any, row: Any, fmt: str, max_len: int | None, stop_ids: Sequence[int]
) -> tuple[Encoded, Encoded | None]:
    """The sequence to score for a row and, for a preference pair, the rejected one."""
    if fmt in ("messages", "sharegpt", "alpaca"):
        return encode_conversation(
            tokenizer, convert_row(row, "messages")["messages"], max_len=max_len, stop_ids=stop_ids
        ), None
    if fmt == "preference":
        pair = _implicit_prompt(row) or convert_row(row, "preference")
        prompt = _as_user(pair["prompt"])
        chosen, rejected = (_with_answer(prompt, pair[side]) for side in ("chosen", "rejected"))
        return (
            encode_conversation(tokenizer, chosen, score_from=len(prompt), max_len=max_len, stop_ids=stop_ids),
            encode_conversation(tokenizer, rejected, score_from=len(prompt), max_len=max_len, stop_ids=stop_ids),
        )
    if fmt == "kto":
        if row.get("label") is not True:
            raise SpanError("an undesirable KTO completion (label false) is not scored")
        prompt = _as_user(row["prompt"])
        return encode_conversation(
            tokenizer,
            _with_answer(prompt, row["completion"]),
            score_from=len(prompt),
            max_len=max_len,
            stop_ids=stop_ids,
        ), None
    if fmt == "completion":
        return encode_plain_text(tokenizer, row["text"], max_len=max_len), None
    raise SpanError("not a row in a known format (messages, sharegpt, alpaca, preference, kto, completion)")


def _ppl(nll: float | None) -> float | None:
    if nll is None:
        return None
    return math.exp(nll) if nll < 700 else math.inf


def perplexity(
    model: Any,
    tokenizer: Any,
    rows: Sequence[Any],
    fmt: str | None = None,
    max_len: int | None = 2048,
    *,
    batch_size: int = 4,
    progress: Progress | None = None,
) -> PerplexityResult:
    """Perplexity over the response tokens of `rows`. `fmt` None detects each row's format; a named format
    skips rows of any other format."""
    stop_ids = stop_token_ids(model, tokenizer)
    chosen: list[Encoded] = []
    rejected: dict[int, Encoded] = {}  # position in `chosen` -> rejected sequence
    skipped: list[SkippedRow] = []
    for index, row in enumerate(rows):
        found = detect_format(row)
        if fmt is not None and found != fmt:
            skipped.append(SkippedRow(index, f"the row looks like '{found or 'no known format'}', not '{fmt}'"))
            continue
        try:
            main, other = _encode(tokenizer, row, found or "", max_len, stop_ids)
        except (SpanError, ConversionError) as exc:
            skipped.append(SkippedRow(index, str(exc)))
            continue
        except (KeyError, TypeError, AttributeError) as exc:
            skipped.append(SkippedRow(index, f"malformed row ({exc!r})"))
            continue
        if other is not None:
            rejected[len(chosen)] = other
        chosen.append(main)

    keys = list(rejected)
    scores = score_sequences(model, chosen + [rejected[k] for k in keys], batch_size=batch_size, progress=progress)
    main_scores, rejected_scores = scores[: len(chosen)], scores[len(chosen) :]
    tokens = sum(s.tokens for s in main_scores)
    mean_nll = sum(s.nll for s in main_scores) / tokens if tokens else None
    margins = [main_scores[k].logprob - r.logprob for k, r in zip(keys, rejected_scores, strict=True)]
    return PerplexityResult(
        mean_nll=mean_nll,
        perplexity=_ppl(mean_nll),
        tokens_scored=tokens,
        rows_scored=len(chosen),
        rows_total=len(rows),
        rows_truncated=sum(e.truncated for e in chosen),
        skipped=skipped,
        preference_pairs=len(margins),
        mean_margin=sum(margins) / len(margins) if margins else None,
        margin_accuracy=sum(m > 0 for m in margins) / len(margins) if margins else None,
    )
