"""The real public files in ../shared/data validate with correct counts, and injected faults are
reported at their lines. Skipped where ../shared is absent (the project's own tests never need it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT, json_shape
from ftkit.data.convert import convert_file
from ftkit.data.validate import validate_file

SHARED = ROOT.parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not beside this checkout")
DPO_SCHEMA = ROOT / "recipes/llama8b-qlora-dpo/dpo.schema.json"


def test_fastchat_sharegpt_sample_is_all_valid():
    report = validate_file(SHARED / "fastchat-dummy-conversation.sharegpt.json")
    assert (report.format, report.rows, report.valid) == ("sharegpt", 500, 500)


def test_hh_rlhf_converts_and_injected_faults_are_reported_at_their_lines(tmp_path: Path):
    pairs = tmp_path / "hh.jsonl"
    conv = convert_file(SHARED / "hh-rlhf-harmless-base-test.jsonl.gz", pairs, "preference")
    assert (conv.rows_in, conv.rows_out, conv.set_aside) == (2312, 2307, 5)
    clean = validate_file(pairs, DPO_SCHEMA)
    assert clean.rows == 2307 and clean.valid + clean.invalid == 2307
    natural = {p.line for p in clean.problems}

    lines = pairs.read_bytes().split(b"\n")
    injected = {}
    for line_no, how in [(10, "json"), (100, "missing"), (1000, "identical"), (2000, "utf8"), (2300, "role")]:
        if line_no in natural:
            continue
        row = json.loads(lines[line_no - 1])
        if how == "json":
            lines[line_no - 1] = lines[line_no - 1][:-5]
        elif how == "missing":
            del row["rejected"]
            lines[line_no - 1] = json.dumps(row).encode()
        elif how == "identical":
            row["rejected"] = row["chosen"]
            lines[line_no - 1] = json.dumps(row).encode()
        elif how == "utf8":
            lines[line_no - 1] = lines[line_no - 1].replace(b'"id"', b'"\xff"', 1)
        else:
            row["chosen"][-1]["role"] = "robot"
            lines[line_no - 1] = json.dumps(row).encode()
        injected[line_no] = how
    faulty = tmp_path / "faulty.jsonl"
    faulty.write_bytes(b"\n".join(lines))
    report = validate_file(faulty, DPO_SCHEMA)
    assert report.invalid == clean.invalid + len(injected)
    found = {p.line: p for p in report.problems}
    assert set(injected) <= set(found)
    expectations = {"json": "invalid JSON", "missing": "'rejected' is a required property",
                    "identical": "identical", "utf8": "not valid UTF-8", "role": "'robot' is not one of"}  # fmt: skip
    for line_no, how in injected.items():
        assert expectations[how] in found[line_no].message, (line_no, found[line_no].message)


@pytest.mark.parametrize(
    ("name", "out_name", "rows"),
    [("fastchat-dummy-conversation.sharegpt.json", "clean.json", 500),
     ("hh-rlhf-harmless-base-test.jsonl.gz", "clean.jsonl", 2312),
     ("mt-bench-questions.jsonl", "clean.jsonl", 80)],
)  # fmt: skip
def test_pii_scan_and_clean_keep_the_row_count_and_the_json_structure(name: str, out_name: str, rows: int, tmp_path):
    from ftkit.data.readers import iter_records
    from ftkit.pii.clean import clean_file
    from ftkit.pii.rows import ScanSettings
    from ftkit.pii.scan import scan_file

    settings = ScanSettings(ner="off")
    scan = scan_file(SHARED / name, settings)
    report = clean_file(SHARED / name, tmp_path / out_name, settings)
    assert scan.rows == report.rows_in == report.rows_out == rows and scan.unreadable == 0
    assert report.rows_changed == scan.rows_with_pii
    before = [r.row for r in iter_records(SHARED / name)]
    after = [r.row for r in iter_records(tmp_path / out_name)]
    assert [json_shape(r) for r in after] == [json_shape(r) for r in before]
    changed = sum(a != b for a, b in zip(after, before, strict=True))
    assert changed == report.rows_changed
    if name.startswith("hh-rlhf"):  # the transcripts carry real-looking phone numbers and emails
        assert scan.rows_by_entity["PHONE"] > 10 and scan.rows_by_entity["EMAIL"] > 3
        assert "[PHONE_1]" in json.dumps(after) and "[EMAIL_1]" in json.dumps(after)
