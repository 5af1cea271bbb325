"""Forgetting check: does fine-tuning make general text less likely?

With no reference answers, both models score the same general prompts: the per-token NLL of each user
turn's text, rendered under the chat template as a user turn. Perplexity rising by more than
`threshold` (relative) from base to tuned flags forgetting. Prompts with a category also get numbers
per category.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ftkit.evaluate.perplexity import SkippedRow
from ftkit.evaluate.prompts import Prompt, as_prompts
from ftkit.evaluate.scoring import Progress, SequenceScore, score_sequences
from ftkit.evaluate.spans import Encoded, Message, SpanError, encode_user_text


@dataclass(frozen=True)
class Comparison:
    base_perplexity: float
    tuned_perplexity: float
    relative_change: float  # tuned / base - 1: 0.05 = perplexity up 5 %
    prompts: int
    tokens: int
    forgetting: bool


@dataclass
class ForgettingResult:
    overall: Comparison | None  # None when no prompt could be scored
    threshold: float
    per_category: dict[str, Comparison] = field(default_factory=dict)
    skipped: list[SkippedRow] = field(default_factory=list)  # index = position of the prompt given

    @property
    def forgetting(self) -> bool:
        return self.overall is not None and self.overall.forgetting

    @property
    def passed(self) -> bool:
        return self.overall is not None and not self.overall.forgetting

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "forgetting": self.forgetting, "passed": self.passed}


def _ppl(scores: Sequence[SequenceScore]) -> tuple[float, int]:
    tokens = sum(s.tokens for s in scores)
    mean = sum(s.nll for s in scores) / tokens
    return (math.exp(mean) if mean < 700 else math.inf), tokens


def compare(
    base: Sequence[SequenceScore], tuned: Sequence[SequenceScore], prompts: int, threshold: float
) -> Comparison:
    base_ppl, tokens = _ppl(base)
    tuned_ppl, _ = _ppl(tuned)
    change = tuned_ppl / base_ppl - 1 if math.isfinite(tuned_ppl / base_ppl) else math.inf
    return Comparison(base_ppl, tuned_ppl, change, prompts, tokens, change > threshold)


def forgetting_check(
    base_model: Any,
    tuned_model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt | str | list[Message]],
    threshold: float = 0.05,
    *,
    max_len: int | None = 1024,
    batch_size: int = 4,
    progress: Progress | None = None,
) -> ForgettingResult:
    """Perplexity of the prompts' user text under base and tuned models; `forgetting` when it rises > threshold."""
    sequences: list[Encoded] = []
    owners: list[Prompt] = []  # the prompt each sequence came from
    skipped = []
    for index, prompt in enumerate(as_prompts(prompts)):
        try:
            encoded = [encode_user_text(tokenizer, turn, max_len=max_len) for turn in prompt.turns]
        except SpanError as exc:
            skipped.append(SkippedRow(index, str(exc)))
            continue
        sequences += encoded
        owners += [prompt] * len(encoded)
    if not sequences:
        return ForgettingResult(None, threshold, skipped=skipped)

    def stage(offset: int) -> Progress | None:
        return (lambda done, total: progress(offset + done, 2 * total)) if progress else None

    base = score_sequences(base_model, sequences, batch_size=batch_size, progress=stage(0))
    tuned = score_sequences(tuned_model, sequences, batch_size=batch_size, progress=stage(len(sequences)))
    result = ForgettingResult(compare(base, tuned, len({id(p) for p in owners}), threshold), threshold, skipped=skipped)
    for category in sorted({p.category for p in owners if p.category is not None}):
        picked = [i for i, p in enumerate(owners) if p.category == category]
        result.per_category[category] = compare(
            [base[i] for i in picked], [tuned[i] for i in picked], len({id(owners[i]) for i in picked}), threshold
        )
    return result
