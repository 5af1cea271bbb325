"""Duplicates (exact and near) are dropped with the kept row's id; splits are exact and leakage is found."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import write_jsonl
from ftkit.cli import main
from ftkit.data.dedup import dedup_file
from ftkit.data.split import assign_splits, leakage, split_file
from ftkit.data.text import normalize, row_text

STORY = (
    "The quick brown fox jumps over the lazy dog while the farmer watches from the porch and drinks "
    "a cup of tea before the long day of harvesting wheat in the golden fields begins again"
)


def chat(i: int, answer: str) -> dict:
    return {"id": f"r{i}", "messages": [{"role": "user", "content": "Tell me a story"},
                                        {"role": "assistant", "content": answer}]}  # fmt: skip


def test_normalisation_ignores_case_punctuation_and_spacing():
    assert normalize("Hello,   World!") == normalize("hello world")
    assert "assistant: a" in row_text(chat(0, "a"))


def test_dedup_keeps_the_first_and_names_it_for_exact_and_near_duplicates(tmp_path: Path):
    rows = [
        chat(0, STORY),
        chat(1, STORY.upper() + "!!"),  # exact after normalisation
        chat(2, STORY.replace("begins again", "begins anew")),  # one word changed: near
        chat(3, "Something entirely different about rockets and the moon and the stars tonight"),
    ]
    out = tmp_path / "out.jsonl"
    report = dedup_file(write_jsonl(tmp_path / "in.jsonl", rows), out)
    assert (report.rows_in, report.kept, report.exact, report.near) == (4, 2, 1, 1)
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["r0", "r3"]
    dropped = [json.loads(x) for x in Path(report.dropped_path).read_text().splitlines()]
    assert [(d["line"], d["kind"], d["duplicate_of"]) for d in dropped] == [(2, "exact", "r0"), (3, "near", "r0")]
    assert 0.8 <= dropped[1]["similarity"] < 1.0
    assert report.rows_in == report.kept + len(dropped)


def test_exact_only_keeps_near_duplicates(tmp_path: Path):
    rows = [chat(0, STORY), chat(1, STORY.replace("begins again", "begins anew"))]
    report = dedup_file(write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "o.jsonl", near=False)
    assert report.kept == 2 and report.dropped_path is None


def test_assign_splits_is_exact_per_stratum_and_seeded():
    strata = ["a"] * 90 + ["b"] * 10
    got = assign_splits(strata, {"val": 0.1, "test": 0.2}, seed=1)
    by = Counter(zip(strata, got, strict=True))
    assert (by["a", "val"], by["a", "test"], by["b", "val"], by["b", "test"]) == (9, 18, 1, 2)
    assert got == assign_splits(strata, {"val": 0.1, "test": 0.2}, seed=1)
    assert got != assign_splits(strata, {"val": 0.1, "test": 0.2}, seed=2)


def test_split_writes_files_and_reports_leakage_from_duplicated_rows(tmp_path: Path):
    rows = [chat(i, f"answer number {i} about topic {i * 7} with some more words") for i in range(40)]
    rows += [dict(chat(100 + i, rows[i]["messages"][1]["content"])) for i in range(10)]  # copies of 10 rows
    report = split_file(write_jsonl(tmp_path / "d.jsonl", rows), tmp_path / "s", val=0.2, seed=0)
    assert report.counts == {"train": 40, "val": 10} and report.rows == 50
    train_rows = [json.loads(x) for x in Path(report.files["train"]).read_text().splitlines()]
    val_rows = [json.loads(x) for x in Path(report.files["val"]).read_text().splitlines()]
    assert len(val_rows) == 10
    train_answers = {r["messages"][1]["content"] for r in train_rows}
    shared = sum(r["messages"][1]["content"] in train_answers for r in val_rows)
    assert shared >= 1, "seed 0 puts at least one copy across the split"
    leak = report.leakage["val"]
    assert leak["rows"] == 10 and leak["exact"] == shared


def test_leakage_cli_exits_3_when_rows_are_shared(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    train = write_jsonl(tmp_path / "t.jsonl", [chat(0, STORY), chat(1, "other words entirely here")])
    val = write_jsonl(tmp_path / "v.jsonl", [chat(2, STORY), chat(3, "brand new text nobody saw")])
    assert main(["data", "leakage", str(train), str(val), "--json"]) == 3
    leak = json.loads(capsys.readouterr().out)
    assert (leak["exact"], leak["near"]) == (1, 0) and leak["examples"][0]["train_id"] == "r0"
    assert leakage(train, write_jsonl(tmp_path / "n.jsonl", [chat(4, "unrelated")]))["exact"] == 0
