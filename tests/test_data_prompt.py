"""A pair's prompt spelled as Axolotl's Bradley-Terry rows spell it (`system` + `input`) is read by every check."""

from __future__ import annotations

from ftkit.data.convert import convert_row
from ftkit.data.lengths import conversations
from ftkit.data.prompt import prompt_key, prompt_turns
from ftkit.data.text import row_text

BT_ROW = {"id": "rm-1", "system": "Be brief.", "input": "How do I boil an egg?", "chosen": "Six minutes.",
          "rejected": "Figure it out."}  # fmt: skip


def test_prompt_turns_read_prompt_text_turns_and_system_plus_input():
    assert prompt_turns({"prompt": "q", "chosen": "a", "rejected": "b"}) == [{"role": "user", "content": "q"}]
    turns = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]
    assert prompt_turns({"prompt": turns, "chosen": "a", "rejected": "b"}) == turns
    assert prompt_turns(BT_ROW) == [{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "How do I boil an egg?"}]  # fmt: skip
    assert prompt_turns({**BT_ROW, "system": ""})[0] == {"role": "user", "content": "How do I boil an egg?"}
    assert prompt_turns({"question": "q?", "chosen": "a", "rejected": "b"}) == [{"role": "user", "content": "q?"}]


def test_a_row_without_any_prompt_key_has_no_prompt():
    assert prompt_key({"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "x"}) is None
    assert prompt_turns({"chosen": "a", "rejected": "b"}) == []


def test_length_conversations_of_a_bradley_terry_row_include_the_user_turn():
    chosen, rejected = conversations(BT_ROW)
    assert [m["role"] for m in chosen] == ["system", "user", "assistant"]
    assert chosen[1]["content"] == "How do I boil an egg?" and chosen[2]["content"] == "Six minutes."
    assert rejected[2]["content"] == "Figure it out."


def test_duplicate_and_leakage_text_of_pairs_with_the_same_answers_differs_by_question():
    other = {**BT_ROW, "input": "How long do I poach an egg?"}
    assert "How do I boil an egg?" in row_text(BT_ROW)
    assert row_text(BT_ROW) != row_text(other)


def test_a_bradley_terry_row_converts_to_a_trl_preference_row():
    out = convert_row(BT_ROW, "preference")
    assert out["prompt"] == prompt_turns(BT_ROW)
    assert (out["chosen"], out["rejected"]) == ("Six minutes.", "Figure it out.")
