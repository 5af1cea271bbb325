from __future__ import annotations

import json
from pathlib import Path

from conftest import ROOT, write_jsonl
from ftkit.data.checks import check_conversation, check_preference
from ftkit.data.validate import validate_file

SFT_SCHEMA = ROOT / "recipes" / "llama8b-qlora-sft" / "sft.schema.json"
DPO_SCHEMA = ROOT / "recipes" / "llama8b-qlora-dpo" / "dpo.schema.json"


def msgs(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": r, "content": c} for r, c in pairs]


def test_conversation_must_end_with_a_non_empty_assistant_turn():
    assert check_conversation(msgs(("user", "hi"), ("assistant", "hello")), "messages") == []
    [(field, message, _)] = check_conversation(msgs(("user", "hi")), "messages")
    assert field == "messages.0.role" and "end with an assistant" in message
    [(field, message, _)] = check_conversation(msgs(("user", "hi"), ("assistant", " ")), "messages")
    assert field == "messages.1.content" and "empty" in message


def test_turns_must_alternate_after_an_optional_system_turn():
    ok = msgs(("system", "s"), ("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"))
    assert check_conversation(ok, "messages") == []
    bad = msgs(("user", "a"), ("user", "b"), ("assistant", "c"))
    assert check_conversation(bad, "messages")[0][0] == "messages.1.role"


def test_identical_chosen_and_rejected_is_flagged():
    p = msgs(("user", "q"))
    row = {"prompt": p, "chosen": p + msgs(("assistant", "same")), "rejected": p + msgs(("assistant", "same"))}
    assert any("identical" in m for _, m, _ in check_preference(row))


def test_validate_file_names_line_and_field_and_quarantines_bad_rows(tmp_path: Path):
    good = {"id": 1, "messages": msgs(("user", "hi"), ("assistant", "hello"))}
    rows_path = tmp_path / "d.jsonl"
    rows_path.write_text(
        json.dumps(good) + "\n"
        + json.dumps({"id": 2, "messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]})
        + "\n{not json\n"
        + json.dumps({"id": 4, "messages": msgs(("user", "hi"))}) + "\n"
    )  # fmt: skip
    quarantine = tmp_path / "q.jsonl"
    report = validate_file(rows_path, SFT_SCHEMA, quarantine)
    assert (report.rows, report.valid, report.invalid) == (4, 1, 3)
    lines = {p.line for p in report.problems}
    assert lines == {2, 3, 4}
    robot = next(p for p in report.problems if p.line == 2)
    assert robot.field == "messages.0.role" and robot.file == str(rows_path)
    kept = [json.loads(x) for x in quarantine.read_text().splitlines()]
    assert [q["line"] for q in kept] == [2, 3, 4]
    assert report.rows == report.valid + len(kept)


def test_preference_rows_follow_the_dpo_schema(tmp_path: Path):
    p = msgs(("user", "q"))
    good = {"prompt": p, "chosen": p + msgs(("assistant", "a")), "rejected": p + msgs(("assistant", "b"))}
    missing = {"prompt": "q", "chosen": p + msgs(("assistant", "a"))}
    report = validate_file(write_jsonl(tmp_path / "p.jsonl", [good, missing]), DPO_SCHEMA)
    assert report.valid == 1 and report.invalid == 1
    assert "rejected" in report.problems[0].message


def test_parallel_validation_reports_the_same_lines_as_sequential(tmp_path: Path, monkeypatch):  # type: ignore[no-untyped-def]
    import ftkit.data.validate as v

    good = json.dumps({"id": 1, "messages": msgs(("user", "hi"), ("assistant", "hello"))})
    bad = json.dumps({"id": 2, "messages": msgs(("user", "hi"))})
    lines = []
    for i in range(300):
        lines.append(bad if i % 37 == 5 else ("{broken" if i % 91 == 50 else good))
        if i % 53 == 0:
            lines.append("")  # blank lines still count for line numbers
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n")
    seq = validate_file(path, SFT_SCHEMA, tmp_path / "q1.jsonl")
    monkeypatch.setattr(v, "PARALLEL_MIN_BYTES", 0)
    par = validate_file(path, SFT_SCHEMA, tmp_path / "q2.jsonl", workers=3)
    assert (par.rows, par.valid, par.invalid) == (seq.rows, seq.valid, seq.invalid) and seq.invalid > 5
    assert [(p.line, p.field, p.message) for p in par.problems] == [(p.line, p.field, p.message) for p in seq.problems]
    assert (tmp_path / "q1.jsonl").read_text() == (tmp_path / "q2.jsonl").read_text()
    assert par.reasons == seq.reasons
