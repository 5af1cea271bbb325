"""Format detection and checks, and the readers (JSONL, JSON array, .gz, .zst, Parquet)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from conftest import write_jsonl
from ftkit.cli import main
from ftkit.data.formats import check_format, detect_format
from ftkit.data.readers import iter_records
from ftkit.data.validate import validate_file
from ftkit.errors import FtkitError

ROWS = {
    "messages": {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
    "sharegpt": {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
    "alpaca": {"instruction": "q", "input": "", "output": "a"},
    "preference": {"prompt": "q", "chosen": "a", "rejected": "b"},
    "kto": {"prompt": "q", "completion": "a", "label": True},
    "completion": {"text": "some text"},
}


@pytest.mark.parametrize("fmt", list(ROWS))
def test_each_format_is_detected_and_its_good_row_passes(fmt: str):
    assert detect_format(ROWS[fmt]) == fmt
    assert check_format(ROWS[fmt], fmt) == []


def test_sharegpt_problems_name_the_sharegpt_fields():
    row = {"conversations": [{"from": "human", "value": "q"}, {"from": "human", "value": "again"}]}
    found = check_format(row, "sharegpt")
    assert [f for f, _, _ in found] == ["conversations.1.from", "conversations.1.from"]
    assert "alternate" in found[0][1] and "end with an assistant turn" in found[1][1]
    bad_speaker = {"conversations": [{"from": "bot", "value": "q"}]}
    assert "unknown speaker 'bot'" in check_format(bad_speaker, "sharegpt")[0][1]


def test_kto_label_must_be_boolean():
    [(field, message, _)] = check_format({"prompt": "q", "completion": "a", "label": "yes"}, "kto")
    assert field == "label" and "true or false" in message


def test_a_row_of_another_format_is_flagged_against_the_files_format(tmp_path: Path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [ROWS["alpaca"], ROWS["completion"], ROWS["alpaca"]])
    report = validate_file(path)
    assert report.format == "alpaca" and (report.valid, report.invalid) == (2, 1)
    assert report.problems[0].line == 2 and "looks like 'completion'" in report.problems[0].message


def test_gzip_zstd_json_array_and_parquet_read_the_same_rows(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    rows = [ROWS["alpaca"], {"instruction": "x", "input": "", "output": "y"}]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(text.encode()))
    (tmp_path / "a.json").write_text("  \n" + json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    for name in ("a.jsonl.gz", "a.jsonl.zst", "a.json", "a.parquet"):
        got = list(iter_records(tmp_path / name))
        assert [r.row for r in got] == rows, name
        assert [r.number for r in got] == [1, 2], name


def test_jsonl_line_numbers_count_blank_lines_and_bad_json_is_a_row_error(tmp_path: Path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROWS["alpaca"]) + "\n\n{oops\n")
    got = list(iter_records(path))
    assert [r.number for r in got] == [1, 3]
    assert got[1].error and got[1].raw == "{oops"


def test_unsupported_extension_names_the_supported_ones(tmp_path: Path):
    (tmp_path / "d.csv").write_text("a,b\n")
    with pytest.raises(FtkitError, match="unsupported file type"):
        list(iter_records(tmp_path / "d.csv"))


def test_data_validate_cli_exits_3_and_quarantines_bad_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    bad = {"instruction": "", "output": "a"}
    path = write_jsonl(tmp_path / "d.jsonl", [ROWS["alpaca"], bad, ROWS["alpaca"]])
    quarantine = tmp_path / "q.jsonl"
    assert main(["data", "validate", str(path), "--quarantine", str(quarantine), "--json"]) == 3
    report = json.loads(capsys.readouterr().out)
    assert (report["rows"], report["valid"], report["invalid"]) == (3, 2, 1)
    [kept] = [json.loads(x) for x in quarantine.read_text().splitlines()]
    assert kept["line"] == 2 and kept["row"] == bad
    assert main(["data", "validate", str(write_jsonl(tmp_path / "ok.jsonl", [ROWS["kto"]]))]) == 0


@pytest.mark.model
def test_lengths_use_the_chat_template_and_flag_rows_whose_answer_would_be_cut(tiny_llama: Path, tmp_path: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    short = {"messages": [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "A test."}]}
    long_prompt = {"messages": [{"role": "user", "content": "Who are you? " * 30},
                                {"role": "assistant", "content": "A test."}]}  # fmt: skip
    path = write_jsonl(tmp_path / "d.jsonl", [short, long_prompt, short])
    n_short = len(tok.apply_chat_template(short["messages"], tokenize=True, return_dict=True)["input_ids"])
    report = validate_file(path, tokenizer=tok, max_len=n_short + 5)
    assert (report.valid, report.invalid) == (2, 1)
    assert report.problems[0].line == 2 and "cut off entirely" in report.problems[0].message
    assert report.lengths["p50"] == n_short and report.lengths["over_max_len"] == 1
    assert report.lengths["max"] > n_short + 5
