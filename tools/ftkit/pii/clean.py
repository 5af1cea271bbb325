"""Clean a dataset file: replace PII inside the text fields of every row, or set rows with PII aside.

Rows in = rows out (+ rows set aside with `drop-row`, + unreadable lines, each in a side file).
Only text fields change (message contents, instruction/input/output, prompt/chosen/rejected); keys,
roles, ids and the JSON structure stay. Output is JSONL, or a JSON array when OUT ends in .json.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from ftkit.data.parallel import map_records
from ftkit.data.readers import Record
from ftkit.errors import FtkitError
from ftkit.pii.redact import SALT_ENV
from ftkit.pii.rows import MODES, ScanSettings, cleaned_row, row_hits
from ftkit.pii.scan import Progress, ner_status, own_id, scanned_entities

OUTPUT_SUFFIXES = (".jsonl", ".ndjson", ".json")


@dataclass
class RowClean:
    """A worker's answer for one row: where it goes, its serialised form, and what was replaced."""

    dest: str  # out | dropped | unreadable
    line: bytes
    counts: dict[str, int] = field(default_factory=dict)


def clean_record(settings: ScanSettings, mode: str, salt: str | None, rec: Record) -> RowClean:
    if rec.error:
        return RowClean("unreadable", orjson.dumps({"reason": rec.error, "raw": rec.raw}))
    hits = row_hits(rec.row, settings)
    counts: dict[str, int] = {}
    for hit in hits:
        for f in hit.findings:
            counts[f.entity] = counts.get(f.entity, 0) + 1
    if not hits:
        return RowClean("out", orjson.dumps(rec.row))
    if mode == "drop-row":
        return RowClean("dropped", orjson.dumps({"id": own_id(rec.row), "entities": counts, "row": rec.row}), counts)
    return RowClean("out", orjson.dumps(cleaned_row(rec.row, hits, mode, salt)), counts)


@dataclass
class CleanReport:
    input: str
    output: str
    mode: str
    rows_in: int = 0
    rows_out: int = 0
    rows_changed: int = 0
    dropped: int = 0
    unreadable: int = 0
    replaced: Counter[str] = field(default_factory=Counter)  # entity -> values replaced (or found, drop-row)
    dropped_path: str | None = None
    unreadable_path: str | None = None
    entities_scanned: list[str] = field(default_factory=list)
    ner: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "replaced": dict(self.replaced), "seconds": round(self.seconds, 3)}


def resolve_salt(mode: str, salt: str | None) -> str | None:
    if mode != "pseudonymize":
        return None
    salt = salt or os.environ.get(SALT_ENV)
    if not salt or len(salt) < 16:
        raise FtkitError.one(
            f"pseudonymize needs a secret salt of at least 16 characters in ${SALT_ENV}",
            field=SALT_ENV,
            fix=f"export {SALT_ENV}=$(openssl rand -hex 32) and keep it secret: with it, the same value "
            "gets the same pseudonym in every file you clean; without it, nobody can reverse a pseudonym",
        )
    return salt


class _Sink:
    """A JSONL file, or a JSON array file written one element at a time."""

    def __init__(self, fh: IO[bytes], array: bool) -> None:
        self.fh, self.array, self.n = fh, array, 0
        if array:
            fh.write(b"[\n")

    def write(self, line: bytes) -> None:
        if self.array and self.n:
            self.fh.write(b",\n")
        self.fh.write(line if self.array else line + b"\n")
        self.n += 1

    def close(self) -> None:
        if self.array:
            self.fh.write(b"\n]\n" if self.n else b"]\n")


def clean_file(
    inp: str | Path,
    out: str | Path,
    settings: ScanSettings | None = None,
    *,
    mode: str = "mask",
    salt: str | None = None,
    workers: int = 1,
    on_progress: Progress | None = None,
) -> CleanReport:
    settings = settings or ScanSettings()
    src, dst = Path(inp), Path(out)
    if mode not in MODES:
        raise FtkitError.one(f"unknown mode '{mode}'", field="--mode", fix=f"use one of: {', '.join(MODES)}")
    if dst.suffix not in OUTPUT_SUFFIXES:
        raise FtkitError.one(f"cannot write '{dst.suffix}' files", file=dst,
                             fix="name the output .jsonl (one row a line) or .json (an array)")  # fmt: skip
    if dst.resolve() == src.resolve():
        raise FtkitError.one("the output would overwrite the input", file=dst, fix="write to another file")
    salt = resolve_salt(mode, salt)
    started = time.perf_counter()
    report = CleanReport(str(src), str(dst), mode)
    report.ner = ner_status(settings)
    report.entities_scanned = scanned_entities(settings, report.ner)
    side = {"dropped": dst.with_name(dst.name + ".dropped.jsonl"),
            "unreadable": dst.with_name(dst.name + ".unreadable.jsonl")}  # fmt: skip
    work = functools.partial(clean_record, settings, mode, salt)
    with contextlib.ExitStack() as stack:
        sink = _Sink(stack.enter_context(dst.open("wb")), dst.suffix == ".json")
        side_fh: dict[str, IO[bytes]] = {}
        for number, result in map_records(src, work, workers=workers, on_progress=on_progress):
            report.rows_in += 1
            report.replaced.update(result.counts)
            if result.dest == "out":
                sink.write(result.line)
                report.rows_out += 1
                report.rows_changed += bool(result.counts)
                continue
            if result.dest not in side_fh:
                side_fh[result.dest] = stack.enter_context(side[result.dest].open("wb"))
            side_fh[result.dest].write(orjson.dumps({"line": number, **orjson.loads(result.line)}) + b"\n")
            setattr(report, result.dest, getattr(report, result.dest) + 1)
        sink.close()
    report.dropped_path = str(side["dropped"]) if report.dropped else None
    report.unreadable_path = str(side["unreadable"]) if report.unreadable else None
    report.seconds = time.perf_counter() - started
    return report
