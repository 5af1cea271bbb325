"""Conversions to messages and preference pairs keep ids and set aside what they cannot convert."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_jsonl
from ftkit.data.convert import ConversionError, convert_file, convert_row, hh_to_preference

HH = {
    "chosen": "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Can you help?\n\nAssistant: Of course.",
    "rejected": "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Can you help?\n\nAssistant: No.",
}


def test_hh_transcripts_split_into_a_shared_prompt_and_two_answers():
    pair = hh_to_preference(HH)
    assert [t["role"] for t in pair["prompt"]] == ["user", "assistant", "user"]
    assert pair["chosen"][:-1] == pair["rejected"][:-1] == pair["prompt"]
    assert pair["chosen"][-1] == {"role": "assistant", "content": "Of course."}
    assert pair["rejected"][-1]["content"] == "No."


def test_hh_pairs_with_different_prompts_are_refused():
    other = {**HH, "rejected": "\n\nHuman: Something else\n\nAssistant: No."}
    with pytest.raises(ConversionError, match="do not share"):
        hh_to_preference(other)


def test_alpaca_and_sharegpt_become_messages():
    alpaca = convert_row({"instruction": "Translate", "input": "bonjour", "output": "hello"}, "messages")
    assert alpaca["messages"][0] == {"role": "user", "content": "Translate\n\nbonjour"}
    share = convert_row({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}, "messages")
    assert [m["role"] for m in share["messages"]] == ["user", "assistant"]


def test_convert_file_keeps_ids_and_counts_rows_in_equal_out_plus_set_aside(tmp_path: Path):
    rows = [{"id": "keep-me", **HH}, {"chosen": "no transcript", "rejected": "x"}, HH]
    out = tmp_path / "pairs.jsonl"
    report = convert_file(write_jsonl(tmp_path / "hh.jsonl", rows), out, "preference")
    assert (report.rows_in, report.rows_out, report.set_aside) == (3, 2, 1)
    written = [json.loads(x) for x in out.read_text().splitlines()]
    assert [w["id"] for w in written] == ["keep-me", "hh-3"]
    [aside] = [json.loads(x) for x in Path(report.rejected_path).read_text().splitlines()]
    assert aside["line"] == 2 and "not an hh-rlhf transcript" in aside["reason"]
