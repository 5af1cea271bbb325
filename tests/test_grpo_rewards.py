"""The qwen2.5-1.5b-grpo recipe's reward functions (pure, verifiable) and the prompt-only row format."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from conftest import write_jsonl
from ftkit.data.formats import check_format, detect_format
from ftkit.data.validate import validate_file
from ftkit.pii.fields import text_fields

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "qwen2.5-1.5b-grpo"


def _load_rewards() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grpo_recipe_rewards", RECIPE / "rewards.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rewards = _load_rewards()


def _turn(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]  # TRL's conversational completion


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("3 + 4 = 7\n#### 7", 1.0),
        ("#### 7", 1.0),
        ("3 + 4 = 7\n####  7  \n", 1.0),
        ("#### 1,200", 1.0),
        ("#### -3.5", 1.0),
        ("3 + 4 = 7\n#### 7\nMia has 7 apples.", 0.5),  # the answer line, then more text
        ("so she has 7.#### 7", 0.5),  # not on its own line
        ("The answer is 7.", 0.0),
        ("#### seven", 0.0),
        ("", 0.0),
    ],
)
def test_format_score_rewards_a_final_answer_line_fully_and_a_buried_one_half(text: str, score: float):
    assert rewards.format_score(text) == score


def test_format_reward_reads_conversational_and_plain_completions_alike():
    completions = [_turn("x\n#### 7"), "x\n#### 7", _turn("no answer"), "#### 7 and more"]
    assert rewards.format_reward(prompts=[None] * 4, completions=completions) == [1.0, 1.0, 0.0, 0.5]


def test_correctness_compares_the_last_answer_number_with_the_reference():
    completions = [_turn("#### 7"), _turn("#### 8"), _turn("#### 3\n#### 7"), _turn("7"), _turn("#### 1,200")]
    answers = ["7", "7", "7", "7", "1200"]
    assert rewards.correctness_reward(prompts=[None] * 5, completions=completions, answer=answers) == [
        1.0,
        0.0,
        1.0,
        0.0,
        1.0,
    ]


def test_numbers_are_compared_by_value_not_by_spelling():
    assert rewards.extract_answer("#### 7.0") == rewards.parse_number("7")
    assert rewards.extract_answer("#### 1,200") == rewards.parse_number("1200")
    assert rewards.extract_answer("no answer") is None
    assert rewards.parse_number("n/a") is None


def test_reward_functions_are_pure_and_leave_their_inputs_unchanged():
    completions = [_turn("#### 7"), _turn("#### 9")]
    before = json.dumps(completions)
    first = rewards.correctness_reward(prompts=["p", "p"], completions=completions, answer=["7", "7"])
    second = rewards.correctness_reward(prompts=["p", "p"], completions=completions, answer=["7", "7"])
    assert first == second == [1.0, 0.0]
    assert json.dumps(completions) == before


def test_gsm8k_rows_become_prompt_only_rows_with_the_reference_number():
    row = rewards.gsm8k_row("Tom has 1,000 coins and finds 200. How many?", "1000 + 200 = 1200\n#### 1,200")
    assert row["answer"] == "1200"
    assert [t["role"] for t in row["prompt"]] == ["system", "user"]
    assert detect_format(row) == "prompt-only" and check_format(row, "prompt-only") == []
    transform, map_kwargs = rewards.gsm8k_prompts(cfg=None)
    assert transform({"question": "q?", "answer": "x\n#### 3"})["answer"] == "3"
    assert map_kwargs == {"remove_columns": ["question"]}


def test_every_sample_answer_earns_full_reward_when_the_model_writes_it():
    rows = [json.loads(line) for line in (RECIPE / "data" / "grpo.jsonl").read_text().splitlines()]
    assert len(rows) == 48
    completions = [_turn(f"Working it out.\n#### {r['answer']}") for r in rows]
    answers = [r["answer"] for r in rows]
    assert rewards.correctness_reward(prompts=None, completions=completions, answer=answers) == [1.0] * 48
    assert rewards.format_reward(prompts=None, completions=completions) == [1.0] * 48


# ---------------------------------------------------------------- the prompt-only format


def test_a_prompt_without_an_answer_is_detected_as_prompt_only_and_other_formats_keep_theirs():
    assert detect_format({"prompt": [{"role": "user", "content": "2+2?"}], "answer": "4"}) == "prompt-only"
    assert detect_format({"prompt": "2+2?"}) == "prompt-only"
    assert detect_format({"prompt": "q", "chosen": "a", "rejected": "b"}) == "preference"
    assert detect_format({"prompt": "q", "completion": "a", "label": True}) == "kto"
    assert detect_format({"prompt": "q", "completion": "a"}) is None  # prompt-completion: not a format here


@pytest.mark.parametrize(
    ("prompt", "field", "words"),
    [
        ("  ", "prompt", "empty"),
        ([], "prompt", "non-empty list"),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "prompt.1.role", "user's turn"),
        ([{"role": "user", "content": " "}], "prompt.0.content", "empty"),
        ([{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}], "prompt.0.role", "alternate"),
    ],
)
def test_a_bad_prompt_only_row_names_the_field_and_the_problem(prompt: object, field: str, words: str):
    found = check_format({"prompt": prompt, "answer": "4"}, "prompt-only")
    assert found and found[0][0] == field and words in found[0][1]


def test_prompt_only_files_validate_and_a_row_that_carries_an_answer_turn_is_quarantined(tmp_path: Path):
    good = {"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "2+2?"}], "answer": "4"}
    answered = {"prompt": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}], "answer": "4"}
    path = write_jsonl(tmp_path / "rl.jsonl", [good, good, answered])
    report = validate_file(path, quarantine=tmp_path / "q.jsonl")
    assert report.format == "prompt-only"
    assert (report.valid, report.invalid) == (2, 1)
    assert report.problems[0].line == 3 and report.problems[0].field == "prompt.1.role"


def test_the_recipe_sample_passes_its_schema_as_prompt_only_rows():
    report = validate_file(RECIPE / "data" / "grpo.jsonl", RECIPE / "grpo.schema.json")
    assert report.ok and report.rows == 48 and report.format == "prompt-only"


def test_pii_scanning_reads_the_prompt_turns_of_a_prompt_only_row():
    row = {"prompt": [{"role": "user", "content": "mail bob@example.com"}], "answer": "4"}
    assert [text for _, text in text_fields(row)] == ["mail bob@example.com"]


# ---------------------------------------------------------------- Axolotl resolves them


@pytest.mark.slow
def test_axolotl_resolves_the_reward_functions_by_dotted_path_from_the_recipe_folder(monkeypatch: pytest.MonkeyPatch):
    from axolotl.core.trainers.grpo import GRPOStrategy

    monkeypatch.syspath_prepend(str(RECIPE))  # what the runner's PYTHONPATH does for the training process
    monkeypatch.delitem(sys.modules, "rewards", raising=False)
    fn = GRPOStrategy.get_reward_func("rewards.format_reward")
    assert fn(prompts=["p"], completions=[_turn("#### 3")]) == [1.0]
    assert GRPOStrategy.get_reward_func("rewards.correctness_reward").__name__ == "correctness_reward"
