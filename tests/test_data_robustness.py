"""Arbitrary bytes and arbitrary JSON never raise, every row is accounted for, and the awkward
cases (non-UTF-8, BOM, CRLF, blank lines, truncated last line, a 50 MB line, deep nesting, a JSON
array broken in the middle) give classified errors at the right line."""

from __future__ import annotations

import json
from pathlib import Path

import ftkit.data.validate as v
import pytest
from ftkit.data.readers import BOM, iter_records
from ftkit.data.validate import validate_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
GOOD = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}


def non_blank_lines(data: bytes) -> int:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if lines and lines[0].startswith(BOM):
        lines[0] = lines[0][len(BOM) :]
    return sum(1 for ln in lines if ln.strip())


@SETTINGS
@given(data=st.binary(max_size=400))
def test_arbitrary_bytes_never_raise_and_every_line_is_a_row(tmp_path_factory: pytest.TempPathFactory, data: bytes):
    path = tmp_path_factory.mktemp("bytes") / "d.jsonl"
    path.write_bytes(data)
    report = validate_file(path)
    assert report.rows == report.valid + report.invalid == non_blank_lines(data)


@SETTINGS
@given(rows=st.lists(JSON_VALUES, max_size=8))
def test_arbitrary_json_rows_never_raise_and_are_counted(tmp_path_factory: pytest.TempPathFactory, rows: list):
    path = tmp_path_factory.mktemp("json") / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = validate_file(path, Path(__file__).parents[1] / "recipes/llama8b-qlora-sft/sft.schema.json")
    assert report.rows == len(rows) == report.valid + report.invalid


@SETTINGS
@given(rows=st.lists(JSON_VALUES, max_size=6), cut=st.integers(min_value=0, max_value=400))
def test_arbitrary_json_arrays_cut_anywhere_never_raise(tmp_path_factory: pytest.TempPathFactory, rows: list, cut: int):
    text = json.dumps(rows)
    path = tmp_path_factory.mktemp("arr") / "d.json"
    path.write_text(text[: cut or len(text)])
    got = list(iter_records(path))
    if cut == 0 or cut >= len(text):
        assert [r.row for r in got] == rows
    else:
        assert all(r.error is None for r in got[:-1])


def test_awkward_jsonl_lines_are_classified_at_their_lines(tmp_path: Path):
    good = json.dumps(GOOD).encode()
    data = (
        BOM + good + b"\r\n"  # 1: BOM and CRLF are fine
        + b"\n"  # 2: blank
        + b'{"messages": "\xff\xfe"}\n'  # 3: not UTF-8
        + b"[" * 5000 + b"]" * 5000 + b"\n"  # 4: nested too deeply
        + good + b"\n"  # 5: fine
        + b'{"messages": [{"role": "user", "con'  # 6: truncated last line
    )  # fmt: skip
    path = tmp_path / "d.jsonl"
    path.write_bytes(data)
    report = validate_file(path)
    assert (report.rows, report.valid, report.invalid) == (5, 2, 3)
    by_line = {p.line: p.message for p in report.problems}
    assert set(by_line) == {3, 4, 6}
    assert "not valid UTF-8" in by_line[3]
    assert "nested too deeply" in by_line[4] or "invalid JSON" in by_line[4]
    assert "invalid JSON" in by_line[6]


def test_a_50_mb_line_is_read_like_any_other(tmp_path: Path):
    big = {"messages": [{"role": "user", "content": "x" * (50 << 20)}, {"role": "assistant", "content": "ok"}]}
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(big) + "\n")
    report = validate_file(path)
    assert (report.rows, report.valid) == (2, 2)


def test_a_json_array_broken_in_the_middle_names_the_row_and_line(tmp_path: Path):
    rows = [json.dumps(GOOD)] * 3
    path = tmp_path / "d.json"
    path.write_text("[\n" + ",\n".join(rows) + ",\n{oops},\n" + json.dumps(GOOD) + "\n]")
    got = list(iter_records(path))
    assert [r.error is None for r in got] == [True, True, True, False]
    assert got[-1].number == 4 and "row 4" in got[-1].error and "line 5" in got[-1].error


def test_json_arrays_stream_in_chunks_smaller_than_a_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import ftkit.data.readers as readers

    monkeypatch.setattr(readers, "CHUNK", 7)
    rows = [GOOD, {"text": "é" * 50}, GOOD]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=2))
    assert [r.row for r in iter_records(path)] == rows


@SETTINGS
@given(data=st.binary(max_size=600))
def test_parallel_and_sequential_agree_on_arbitrary_bytes(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, data: bytes
):
    path = tmp_path_factory.mktemp("par") / "d.jsonl"
    path.write_bytes(data)
    seq = validate_file(path)
    monkeypatch.setattr(v, "PARALLEL_MIN_BYTES", -1)
    par = validate_file(path, workers=2)
    assert (par.rows, par.valid, par.invalid) == (seq.rows, seq.valid, seq.invalid)
    assert [p.line for p in par.problems] == [p.line for p in seq.problems]
