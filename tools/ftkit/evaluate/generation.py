"""Generation check: greedy answers to a few chat prompts, and the chat template's round trip.

Per prompt: did the model stop at an end-of-turn token (the tokenizer's EOS or the generation
config's eos ids) or run into the length limit; does template text leak into the answer (special
tokens, and the template's own role markers found by rendering a conversation of sentinels); is the
answer empty; is it degenerate (the fraction of repeated n-grams of its tokens). The template check:
rendering a conversation and tokenizing/decoding it gives the text back, and the template writes
after an assistant answer an EOS the generation config stops at (else a tuned model never stops).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ftkit.evaluate.eos import generation_eos_ids, stop_token_ids
from ftkit.evaluate.prompts import Prompt, as_prompts
from ftkit.evaluate.spans import Message, SpanError, render

ROLES = ("system", "user", "assistant")
_SENTINEL = "FTKITSENTINEL{}X"
_TAG = re.compile(r"^[\[<#].{0,30}[\]>:]$")  # [INST], [/INST], <|user|>, ### Response:
ROUNDTRIP_CONVERSATION = (
    {"role": "user", "content": "Hello! Can you help me with a question?"},
    {"role": "assistant", "content": "Of course. What would you like to know?"},
    {"role": "user", "content": "Nothing else, thank you."},
)


@dataclass
class AnswerCheck:
    prompt: str
    answer: str  # decoded up to (not including) the first end-of-turn token, special tokens kept
    new_tokens: int
    stopped_at_eos: bool
    hit_length_limit: bool
    empty: bool
    leaks: list[str]
    repeated_ngram_fraction: float
    degenerate: bool

    @property
    def passed(self) -> bool:
        return self.stopped_at_eos and not self.leaks and not self.empty and not self.degenerate

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


@dataclass
class TemplateCheck:
    roundtrip_ok: bool
    renders_eos: bool
    eos_tokens: list[str]  # the generation config's end-of-turn tokens the template must write
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.roundtrip_ok and self.renders_eos

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


@dataclass
class GenerationResult:
    answers: list[AnswerCheck]
    template: TemplateCheck
    stop_token_ids: list[int]
    markers: list[str]
    max_new_tokens: int

    @property
    def passed(self) -> bool:
        return bool(self.answers) and all(a.passed for a in self.answers) and self.template.passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "max_new_tokens": self.max_new_tokens,
            "stop_token_ids": self.stop_token_ids,
            "markers": self.markers,
            "template": self.template.to_dict(),
            "answers": [a.to_dict() for a in self.answers],
        }


def special_token_texts(tokenizer: Any) -> list[str]:
    texts = list(getattr(tokenizer, "all_special_tokens", []) or [])
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    texts += [str(tok) for tok in decoder.values() if getattr(tok, "special", False)]
    return sorted({t for t in texts if t.strip()}, key=lambda t: (-len(t), t))


def _sentinel_render(tokenizer: Any) -> tuple[str, list[str]]:
    for roles in (("system", "user", "assistant", "user"), ("user", "assistant", "user")):
        messages = [{"role": r, "content": _SENTINEL.format(i)} for i, r in enumerate(roles)]
        try:
            return render(tokenizer, messages, add_generation_prompt=True), list(roles)
        except SpanError:
            continue
    return "", []


def template_markers(tokenizer: Any) -> tuple[list[str], list[str]]:
    """(markers, role header lines): text the template writes around turns, which an answer must not contain.

    Markers are the special tokens plus tag-like pieces of the template's markup ([INST], <|user|>);
    role header lines are role names the template writes on a line of their own ('assistant\\n')."""
    specials = special_token_texts(tokenizer)
    text, roles = _sentinel_render(tokenizer)
    markup = re.split(r"FTKITSENTINEL\d+X", text)
    if specials:
        markup = [p for piece in markup for p in re.split("|".join(map(re.escape, specials)), piece)]
    tags, headers = set(), set()
    for line in (ln.strip() for piece in markup for ln in piece.splitlines()):
        if line in roles:
            headers.add(line)
        elif _TAG.match(line):
            tags.add(line)
    return specials + sorted(tags - set(specials)), sorted(headers)


def find_leaks(answer: str, markers: Sequence[str], header_lines: Sequence[str]) -> list[str]:
    found = [m for m in markers if m in answer]
    lines = {ln.strip() for ln in answer.splitlines()}
    return found + [f"{h} (role header line)" for h in header_lines if h in lines]


def repeated_ngram_fraction(ids: Sequence[int], n: int = 4) -> float:
    """1 - distinct n-grams / n-grams: 0 for no repetition, near 1 for a loop."""
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def check_answer(
    prompt: str,
    new_ids: Sequence[int],
    tokenizer: Any,
    *,
    stop_ids: Sequence[int],
    max_new_tokens: int,
    markers: Sequence[str],
    header_lines: Sequence[str] = (),
    ngram: int = 4,
    repetition_threshold: float = 0.5,
) -> AnswerCheck:
    """Judge the tokens generated for one prompt."""
    new_ids = list(new_ids)
    stop = next((i for i, t in enumerate(new_ids) if t in stop_ids), None)
    body = new_ids if stop is None else new_ids[:stop]
    answer = tokenizer.decode(body, skip_special_tokens=False)
    fraction = repeated_ngram_fraction(body, ngram)
    return AnswerCheck(
        prompt=prompt,
        answer=answer,
        new_tokens=len(new_ids),
        stopped_at_eos=stop is not None,
        hit_length_limit=stop is None and len(new_ids) >= max_new_tokens,
        empty=not answer.strip(),
        leaks=find_leaks(answer, markers, header_lines),
        repeated_ngram_fraction=round(fraction, 4),
        degenerate=fraction > repetition_threshold,
    )


def template_check(
    tokenizer: Any, eos_ids: Sequence[int], conversation: Sequence[Message] = ROUNDTRIP_CONVERSATION
) -> TemplateCheck:
    """Round trip of a rendered conversation through tokenize/decode; the assistant turn ends with an EOS.

    `conversation` is user, assistant, ...: its second turn is the assistant answer checked for the EOS."""
    conversation = list(conversation)
    eos_tokens = [tokenizer.decode([i], skip_special_tokens=False) for i in eos_ids]
    problems = []
    try:
        text = render(tokenizer, conversation)
        head = render(tokenizer, conversation[:1], add_generation_prompt=True)
        turn = render(tokenizer, conversation[:2])
    except SpanError as exc:
        return TemplateCheck(False, False, eos_tokens, [str(exc)])
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    back = tokenizer.decode(ids, skip_special_tokens=False)
    roundtrip_ok = back == text
    if not roundtrip_ok:
        at = next((i for i, (a, b) in enumerate(zip(text, back, strict=False)) if a != b), min(len(text), len(back)))
        problems.append(
            f"decode(tokenize(text)) differs from the rendered text at character {at}: "
            f"{text[at : at + 30]!r} became {back[at : at + 30]!r}"
        )
    answer = conversation[1]["content"]
    region = turn[len(head) :] if turn.startswith(head) else turn
    after = region[region.find(answer) + len(answer) :] if answer in region else region
    renders_eos = any(e and e in after for e in eos_tokens)
    if not renders_eos:
        problems.append(
            f"after an assistant answer the template writes {after!r}, which has none of the "
            f"generation config's end-of-turn tokens {eos_tokens}: generation would not stop"
        )
    return TemplateCheck(roundtrip_ok, renders_eos, eos_tokens, problems)


def generation_check(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt | str | list[Message]],
    max_new_tokens: int = 64,
    *,
    ngram: int = 4,
    repetition_threshold: float = 0.5,
    progress: Callable[[int, int], None] | None = None,
) -> GenerationResult:
    """Greedy-generate an answer to each prompt (one at a time, no padding) and check it."""
    import torch

    stop_ids = stop_token_ids(model, tokenizer)
    markers, header_lines = template_markers(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0] if stop_ids else 0
    device = next(model.parameters()).device
    items = as_prompts(prompts)
    answers = []
    was_training = model.training
    model.eval()
    try:
        for done, item in enumerate(items, start=1):
            inputs = tokenizer.apply_chat_template(
                item.chat(), add_generation_prompt=True, return_tensors="pt", return_dict=True
            ).to(device)
            with torch.inference_mode():
                out = model.generate(
                    **inputs,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    eos_token_id=stop_ids or None,
                    pad_token_id=pad,
                )
            new = out[0, inputs["input_ids"].shape[1] :].tolist()
            answers.append(
                check_answer(
                    str(item.chat()[-1]["content"]),
                    new,
                    tokenizer,
                    stop_ids=stop_ids,
                    markers=markers,
                    header_lines=header_lines,
                    max_new_tokens=max_new_tokens,
                    ngram=ngram,
                    repetition_threshold=repetition_threshold,
                )
            )
            if progress:
                progress(done, len(items))
    finally:
        model.train(was_training)
    return GenerationResult(
        answers,
        template_check(tokenizer, generation_eos_ids(model, tokenizer)),
        stop_ids,
        markers + [f"{h} (role header line)" for h in header_lines],
        max_new_tokens,
    )
