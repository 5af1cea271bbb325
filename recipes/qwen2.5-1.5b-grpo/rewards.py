"""Reward functions (and the GSM8K dataset transform) for the qwen2.5-1.5b-grpo recipe.

Axolotl imports them by dotted path from `grpo.axolotl.yaml` (`trl.reward_funcs: [rewards.format_reward, ...]`,
`datasets[].type: rewards.gsm8k_prompts`), so this folder must be on PYTHONPATH when the trainer starts.
TRL calls each reward function with keyword arguments: `prompts`, `completions` (chat turns for
conversational prompts, strings otherwise) and every other dataset column, here `answer` (the reference
number as a string). Each returns one float per completion. Pure functions, no model calls: the rewards
are verifiable (tests/test_grpo_rewards.py).

The task: short arithmetic word problems; the answer goes on the last line as `#### <number>`
(the GSM8K convention).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

SYSTEM_PROMPT = "Solve the problem. Put the final answer on the last line as: #### <number>"
# '#### 42', '####  -3.5', '#### 1,200' (thousands separators allowed)
_ANSWER = re.compile(r"####\s*(-?\d[\d,]*(?:\.\d+)?)")


def completion_text(completion: Any) -> str:
    """The generated text: a conversational completion is a list of turns (the assistant's content);
    a standard one is a string."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(str(turn.get("content", "")) for turn in completion if isinstance(turn, dict))
    return ""


def parse_number(text: str) -> Decimal | None:
    """'1,200' -> 1200, '7.50' -> 7.5; None if it is not a number."""
    try:
        return Decimal(text.replace(",", "").strip())
    except (InvalidOperation, AttributeError):
        return None


def extract_answer(text: str) -> Decimal | None:
    """The number after the last '####' in the text, or None when there is none."""
    matches = _ANSWER.findall(text)
    return parse_number(matches[-1]) if matches else None


def format_score(text: str) -> float:
    """1.0: the text ends with a '#### <number>' line (the answer, then nothing);
    0.5: a '#### <number>' appears but more text follows it; 0.0: no '#### <number>' at all."""
    matches = list(_ANSWER.finditer(text))
    if not matches:
        return 0.0
    last = matches[-1]
    line_start = text.rfind("\n", 0, last.start()) + 1
    ends_there = not text[last.end() :].strip()
    own_line = not text[line_start : last.start()].strip()
    return 1.0 if ends_there and own_line else 0.5


def format_reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
    """Reward the answer format: a final '#### <number>' line."""
    return [format_score(completion_text(c)) for c in completions]


def correctness_reward(prompts: list[Any], completions: list[Any], answer: list[Any], **kwargs: Any) -> list[float]:
    """1.0 when the number after the last '####' equals the reference answer, else 0.0."""
    out = []
    for completion, reference in zip(completions, answer, strict=True):
        got, want = extract_answer(completion_text(completion)), parse_number(str(reference))
        out.append(1.0 if got is not None and want is not None and got == want else 0.0)
    return out


def gsm8k_row(question: str, solution: str) -> dict[str, Any]:
    """A GSM8K row ({question, answer: '<reasoning> #### 72'}) as a prompt-only row: the chat prompt
    and the reference number."""
    reference = solution.split("####")[-1].strip().replace(",", "")
    prompt = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]
    return {"prompt": prompt, "answer": reference}


def gsm8k_prompts(cfg: Any, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """Axolotl dataset transform (`type: rewards.gsm8k_prompts`) for openai/gsm8k 'main': Axolotl calls this
    with its config and maps the returned function over the rows, dropping the original columns."""

    def transform(example: dict[str, Any], tokenizer: Any = None) -> dict[str, Any]:
        return gsm8k_row(example["question"], example["answer"])

    return transform, {"remove_columns": ["question"]}
