"""Token ids of a conversation under the model's chat template, and which of those tokens to score.

Where the template marks assistant text with `{% generation %}`, transformers' assistant mask says
which tokens are the answer. Otherwise the answer's characters are found by rendering prefixes of the
conversation: the text of turn i starts where `messages[:i]` + generation prompt ends, and runs to the
end of the first end-of-turn text (the EOS) after the answer — the newline a template puts after the
EOS is not scored (the model stops before it). Characters map to tokens through the fast tokenizer's
offsets (or, for a slow tokenizer, through token prefixes that must agree with the full tokenization).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Message = dict[str, Any]
_GENERATION_TAG = re.compile(r"{%-?\s*generation\s*-?%}")


class SpanError(ValueError):
    """A row whose response tokens cannot be located; the message is the reason it is skipped."""


@dataclass(frozen=True)
class Encoded:
    """Token ids and, per token, whether it is scored (predicted from the tokens before it)."""

    input_ids: list[int]
    score_mask: list[bool]
    truncated: bool = False

    @property
    def scored(self) -> int:
        return sum(self.score_mask)


def render(tokenizer: Any, messages: Sequence[Message], *, add_generation_prompt: bool = False) -> str:
    try:
        return tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except Exception as exc:  # jinja raises TemplateError and friends for conversations it refuses
        raise SpanError(f"the chat template refused the conversation: {exc}") from exc


def has_generation_markers(tokenizer: Any) -> bool:
    template = getattr(tokenizer, "chat_template", None)
    return isinstance(template, str) and bool(_GENERATION_TAG.search(template))


def end_of_turn_texts(tokenizer: Any, stop_ids: Sequence[int] = ()) -> list[str]:
    """The texts that end an assistant turn: the tokenizer's EOS and the texts of `stop_ids`."""
    texts = [tokenizer.eos_token] if tokenizer.eos_token else []
    texts += [tokenizer.decode([i], skip_special_tokens=False) for i in stop_ids]
    return [t for t in dict.fromkeys(texts) if t]


def _answer_end(text: str, start: int, stop: int, content: str, eos_texts: Sequence[str]) -> int:
    """End of the scored answer within text[start:stop]: just after the first EOS text after the content."""
    found = text.find(content, start, stop) if content else -1
    after = found + len(content) if found >= 0 else start
    ends = [p + len(e) for e in eos_texts if (p := text.find(e, after, stop)) >= 0]
    return min(ends) if ends else stop


def assistant_char_spans(
    tokenizer: Any, messages: Sequence[Message], *, score_from: int = 0, stop_ids: Sequence[int] = ()
) -> list[tuple[int, int]]:
    """Character spans, in the rendered conversation, of the assistant turns at index >= score_from."""
    full = render(tokenizer, messages)
    eos_texts = end_of_turn_texts(tokenizer, stop_ids)
    spans = []
    for i in range(score_from, len(messages)):
        if messages[i].get("role") != "assistant":
            continue
        head = render(tokenizer, messages[:i], add_generation_prompt=True)
        turn = render(tokenizer, messages[: i + 1])
        if not (turn.startswith(head) and full.startswith(turn)):
            raise SpanError(
                f"the chat template does not render turn {i} as a continuation of the turns before it "
                "(not prefix-stable), so its answer tokens cannot be located"
            )
        spans.append(
            (len(head), _answer_end(turn, len(head), len(turn), str(messages[i].get("content", "")), eos_texts))
        )
    return spans


def _mask_from_offsets(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[bool]:
    return [end > start and any(start < e and end > s for s, e in spans) for start, end in offsets]


def _mask_from_prefixes(tokenizer: Any, text: str, ids: list[int], spans: Sequence[tuple[int, int]]) -> list[bool]:
    mask = [False] * len(ids)
    for s, e in spans:
        bounds = []
        for cut in (s, e):
            prefix = tokenizer(text[:cut], add_special_tokens=False)["input_ids"]
            if ids[: len(prefix)] != prefix:
                raise SpanError(
                    "the tokenizer splits the text differently at a turn boundary; cannot locate the answer"
                )
            bounds.append(len(prefix))
        for t in range(*bounds):
            mask[t] = True
    return mask


def encode_spans(tokenizer: Any, text: str, spans: Sequence[tuple[int, int]]) -> tuple[list[int], list[bool]]:
    """Tokenize `text` as the chat template does (no added special tokens) and mark tokens inside `spans`."""
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), _mask_from_offsets(enc["offset_mapping"], spans)
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return ids, _mask_from_prefixes(tokenizer, text, ids, spans)


def _generation_mask(
    tokenizer: Any, messages: Sequence[Message], text: str, ids: list[int], score_from: int
) -> list[bool]:
    out = tokenizer.apply_chat_template(
        list(messages), tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    if list(out["input_ids"]) != ids:
        raise SpanError("the chat template tokenizes differently with its assistant mask; cannot locate the answer")
    mask = [bool(m) for m in out["assistant_masks"]]
    if score_from > 0:
        head = render(tokenizer, messages[:score_from])
        if not text.startswith(head):
            raise SpanError("the chat template does not render the prompt as a prefix of the conversation")
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        mask = [m and start >= len(head) for m, (start, _) in zip(mask, offsets, strict=True)]
    return mask


def finish(ids: list[int], mask: list[bool], max_len: int | None, what: str) -> Encoded:
    """Truncate to max_len, never score the first token, and refuse a sequence with nothing left to score."""
    truncated = max_len is not None and len(ids) > max_len
    if truncated:
        ids, mask = ids[:max_len], mask[:max_len]
    mask = [False, *mask[1:]] if mask else mask
    if not any(mask):
        if truncated:
            raise SpanError(f"no {what} token within max_len={max_len} (the prompt alone fills it)")
        raise SpanError(f"no {what} token to score")
    return Encoded(ids, mask, truncated)


def encode_conversation(
    tokenizer: Any,
    messages: Sequence[Message],
    *,
    score_from: int = 0,
    max_len: int | None = None,
    stop_ids: Sequence[int] = (),
) -> Encoded:
    """The conversation under the chat template, scoring the assistant turns at index >= score_from.

    An answer is scored up to and including the first end-of-turn text after it (the tokenizer's EOS or
    a `stop_ids` token, e.g. the generation config's eos ids)."""
    if not any(m.get("role") == "assistant" for m in messages[score_from:]):
        raise SpanError("the conversation has no assistant turn to score")
    text = render(tokenizer, messages)
    if getattr(tokenizer, "is_fast", False) and has_generation_markers(tokenizer):
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        mask = _generation_mask(tokenizer, messages, text, ids, score_from)
    else:
        spans = assistant_char_spans(tokenizer, messages, score_from=score_from, stop_ids=stop_ids)
        ids, mask = encode_spans(tokenizer, text, spans)
    return finish(ids, mask, max_len, "response")


def encode_user_text(tokenizer: Any, content: str, *, max_len: int | None = None) -> Encoded:
    """A single user turn under the chat template, scoring only the tokens of its content."""
    text = render(tokenizer, [{"role": "user", "content": content}])
    for needle in (content, content.strip()):
        start = text.rfind(needle) if needle else -1
        if start >= 0:
            ids, mask = encode_spans(tokenizer, text, [(start, start + len(needle))])
            return finish(ids, mask, max_len, "prompt")
    raise SpanError("the chat template does not render the prompt's text verbatim")


def encode_plain_text(tokenizer: Any, text: str, *, max_len: int | None = None) -> Encoded:
    """Plain text (completion rows), tokenized as a language model sees it (with BOS if the tokenizer adds one)."""
    ids = list(tokenizer(text)["input_ids"])
    return finish(ids, [True] * len(ids), max_len, "text")
