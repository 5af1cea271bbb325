"""ftkit pii scan / clean: only text fields change, placeholders are consistent, nothing is lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import json_shape, write_jsonl
from ftkit.cli import main
from ftkit.errors import FtkitError
from ftkit.pii.clean import clean_file
from ftkit.pii.fields import parse_patterns, text_fields
from ftkit.pii.redact import SALT_ENV
from ftkit.pii.rows import ScanSettings
from ftkit.pii.scan import scan_file

OFF = ScanSettings(ner="off")
KEY = "AKIAQX4BZ7RW2M5TNV6P"
SALT = "0123456789abcdef0123"


def chat(i: int, user: str, answer: str) -> dict:
    return {"id": f"r{i}", "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


ROWS = [
    chat(0, "Mail jane@corp.com please", "I wrote to jane@corp.com and bob@corp.com."),
    chat(1, "What is 2+2?", "4"),
    chat(2, f"deploy with AWS_ACCESS_KEY_ID={KEY}", "Never paste keys."),
    chat(3, "call me on +1 415 555 2671", "Jane@Corp.com said +1 (415) 555-2671 is hers."),
]


# ------------------------------------------------------------------ which fields


def test_text_fields_are_contents_never_roles_keys_or_ids():
    fields = dict(text_fields(ROWS[0]))
    assert list(fields) == [("messages", 0, "content"), ("messages", 1, "content")]


@pytest.mark.parametrize(
    ("row", "paths"),
    [
        ({"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]},
         [("conversations", 0, "value"), ("conversations", 1, "value")]),
        ({"instruction": "a", "input": "b", "output": "c", "id": "x"}, [("instruction",), ("input",), ("output",)]),
        ({"prompt": [{"role": "user", "content": "p"}], "chosen": [{"role": "assistant", "content": "c"}],
          "rejected": "r"}, [("prompt", 0, "content"), ("chosen", 0, "content"), ("rejected",)]),
        ({"prompt": "p", "completion": "c", "label": True}, [("prompt",), ("completion",)]),
        ({"system": "s", "input": "q", "chosen": "c", "rejected": "r", "id": "x"},
         [("system",), ("input",), ("chosen",), ("rejected",)]),
        ({"text": "t", "id": "i"}, [("text",)]),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
         [("messages", 0, "content", 0, "text")]),
    ],
)  # fmt: skip
def test_each_format_has_its_own_text_fields(row: dict, paths: list):
    assert [p for p, _ in text_fields(row)] == paths


def test_field_patterns_select_with_wildcards():
    patterns = parse_patterns(["messages.*.content", "meta.note"])
    row = {**ROWS[0], "meta": {"note": "n", "other": "o"}}
    assert [p for p, _ in text_fields(row, patterns)] == [
        ("messages", 0, "content"), ("messages", 1, "content"), ("meta", "note")
    ]  # fmt: skip


# ------------------------------------------------------------------ clean


def test_mask_numbers_values_per_row_consistently_and_keeps_the_json_shape(tmp_path: Path):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    report = clean_file(src, tmp_path / "out.jsonl", OFF)
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert report.rows_in == report.rows_out == len(out) == 4 and report.rows_changed == 3
    assert [json_shape(r) for r in out] == [json_shape(r) for r in ROWS]
    assert [r["id"] for r in out] == ["r0", "r1", "r2", "r3"]
    assert [m["role"] for r in out for m in r["messages"]] == [m["role"] for r in ROWS for m in r["messages"]]
    assert out[0]["messages"][0]["content"] == "Mail [EMAIL_1] please"
    assert out[0]["messages"][1]["content"] == "I wrote to [EMAIL_1] and [EMAIL_2]."
    assert out[1] == ROWS[1]
    assert out[2]["messages"][0]["content"] == "deploy with AWS_ACCESS_KEY_ID=[SECRET_1]"
    # Another row starts its own numbering; case and formatting differences are the same value.
    assert out[3]["messages"][1]["content"] == "[EMAIL_1] said [PHONE_1] is hers."
    assert out[3]["messages"][0]["content"] == "call me on [PHONE_1]"
    assert report.replaced == {"EMAIL": 4, "SECRET": 1, "PHONE": 2}


def test_pseudonyms_are_the_same_across_rows_and_change_with_the_salt(tmp_path: Path):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    clean_file(src, tmp_path / "a.jsonl", OFF, mode="pseudonymize", salt=SALT)
    clean_file(src, tmp_path / "b.jsonl", OFF, mode="pseudonymize", salt=SALT[::-1])
    a = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    jane_in_0 = a[0]["messages"][0]["content"].split()[1]
    assert jane_in_0.startswith("[EMAIL_") and jane_in_0 != "[EMAIL_1]"
    assert a[3]["messages"][1]["content"].startswith(jane_in_0), "Jane@Corp.com in row 3 is jane@corp.com in row 0"
    assert b[0]["messages"][0]["content"].split()[1] != jane_in_0


def test_pseudonymize_refuses_to_run_without_a_salt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(SALT_ENV, raising=False)
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    with pytest.raises(FtkitError) as err:
        clean_file(src, tmp_path / "out.jsonl", OFF, mode="pseudonymize")
    assert SALT_ENV in str(err.value) and "openssl rand" in str(err.value)


def test_drop_row_sets_rows_with_pii_aside_and_counts_add_up(tmp_path: Path):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    report = clean_file(src, tmp_path / "out.jsonl", OFF, mode="drop-row")
    kept = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    dropped = [json.loads(line) for line in Path(report.dropped_path).read_text().splitlines()]  # type: ignore[arg-type]
    assert kept == [ROWS[1]]
    assert [d["line"] for d in dropped] == [1, 3, 4] and dropped[1]["entities"] == {"SECRET": 1}
    assert report.rows_in == report.rows_out + report.dropped == 4


def test_unreadable_lines_go_to_a_side_file_and_are_counted(tmp_path: Path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(ROWS[0]) + "\n{broken json\n" + json.dumps(ROWS[1]) + "\n")
    report = clean_file(src, tmp_path / "out.jsonl", OFF)
    assert (report.rows_in, report.rows_out, report.unreadable) == (3, 2, 1)
    [entry] = [json.loads(line) for line in Path(report.unreadable_path).read_text().splitlines()]  # type: ignore[arg-type]
    assert entry["line"] == 2 and entry["raw"] == "{broken json"


def test_a_json_array_output_is_written_for_a_json_name(tmp_path: Path):
    src = tmp_path / "in.json"
    src.write_text(json.dumps(ROWS))
    clean_file(src, tmp_path / "out.json", OFF)
    out = json.loads((tmp_path / "out.json").read_text())
    assert len(out) == 4 and out[1] == ROWS[1]


def test_workers_and_chunks_give_the_same_output_and_report_as_one_process(tmp_path: Path):
    rows = [dict(r, id=f"{r['id']}-{i}") for i in range(60) for r in ROWS]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    one = clean_file(src, tmp_path / "one.jsonl", OFF, mode="drop-row", workers=1)
    import ftkit.data.parallel as parallel

    old = parallel.CHUNK_BYTES
    parallel.CHUNK_BYTES = 1500  # many chunks, split mid-file
    try:
        two = clean_file(src, tmp_path / "two.jsonl", OFF, mode="drop-row", workers=2)
        scan_two = scan_file(src, OFF, workers=2)
    finally:
        parallel.CHUNK_BYTES = old
    scan_one = scan_file(src, OFF, workers=1)
    assert (tmp_path / "one.jsonl").read_bytes() == (tmp_path / "two.jsonl").read_bytes()
    assert Path(one.dropped_path).read_bytes() == Path(two.dropped_path).read_bytes()  # type: ignore[arg-type]
    assert one.replaced == two.replaced and one.rows_in == two.rows_in == 240
    assert scan_one.to_dict() | {"seconds": 0} == scan_two.to_dict() | {"seconds": 0}


# ------------------------------------------------------------------ scan


def test_scan_counts_entities_and_rows_and_masks_its_examples(tmp_path: Path):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    report = scan_file(src, OFF)
    assert report.rows == 4 and report.rows_with_pii == 3
    assert report.findings == {"EMAIL": 4, "SECRET": 1, "PHONE": 2}
    assert report.rows_by_entity == {"EMAIL": 2, "SECRET": 1, "PHONE": 1}
    [secret] = report.examples["SECRET"]
    assert secret["line"] == 3 and secret["row_id"] == "r2" and secret["field"] == "messages.0.content"
    assert KEY not in json.dumps(report.to_dict()), "no example may show a value"
    assert "[SECRET: AK" in secret["snippet"]
    assert not report.ner["available"] and "not scanned" in report.ner["reason"]


def test_cli_scan_exits_3_on_a_secret_unless_the_limit_is_lifted(tmp_path: Path, capsys: pytest.CaptureFixture):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    assert main(["pii", "scan", str(src), "--ner", "off", "--json"]) == 3
    report = json.loads(capsys.readouterr().out)
    assert report["gate"]["violations"] == [{"entity": "SECRET", "rows": 1, "max_rows": 0}]
    assert main(["pii", "scan", str(src), "--ner", "off", "--max-rows", "SECRET=none", "--json"]) == 0
    assert main(["pii", "scan", str(src), "--ner", "off", "--max-rows", "EMAIL=1"]) == 3
    assert main(["pii", "scan", str(src), "--max-rows", "EMAIL"]) == 2


def test_cli_clean_prints_that_rows_in_equal_rows_out(tmp_path: Path, capsys: pytest.CaptureFixture):
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    assert main(["pii", "clean", str(src), str(tmp_path / "out.jsonl"), "--ner", "off", "--entities", "EMAIL"]) == 0
    printed = capsys.readouterr().out
    assert "rows in 4 = out 4" in printed and "EMAIL 4" in printed
    assert KEY in (tmp_path / "out.jsonl").read_text(), "--entities EMAIL leaves secrets alone"
