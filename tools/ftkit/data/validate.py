"""Validate a JSONL dataset row by row against a JSON Schema and the chat-format checks.

Streams the file (constant memory), names the line and field of every problem, and can
write rejected rows with their reasons to a quarantine file (rows in = valid + quarantined).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from ftkit.data.checks import Finding
from ftkit.data.formats import check_format, detect_format
from ftkit.data.lengths import LengthStats, check_lengths
from ftkit.data.parallel import CountedLines
from ftkit.data.readers import Record, iter_records, records_from_lines
from ftkit.errors import FtkitError, Problem

MAX_PROBLEMS_KEPT = 50
_NUMBER = re.compile(r"\d+")


@dataclass
class ValidationReport:
    path: str
    rows: int = 0
    valid: int = 0
    invalid: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)
    quarantine: str | None = None
    format: str | None = None
    lengths: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.invalid == 0 and self.rows > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "rows": self.rows,
            "valid": self.valid,
            "invalid": self.invalid,
            "reasons": dict(self.reasons),
            "problems": [p.to_dict() for p in self.problems],
            "quarantine": self.quarantine,
            "format": self.format,
            "lengths": self.lengths,
        }


class SchemaValidator:
    """A compiled JSON Schema: jsonschema-rs answers valid/invalid fast; the reference implementation
    (python-jsonschema) explains the rare invalid row, so messages stay the same whichever is installed."""

    def __init__(self, schema: dict[str, Any]) -> None:
        import jsonschema_rs

        self.fast = jsonschema_rs.validator_for(schema)
        self.detail = Draft202012Validator(schema)

    def problems(self, row: Any) -> list[Finding]:
        if self.fast.is_valid(row):
            return []
        found = []
        for err in sorted(self.detail.iter_errors(row), key=lambda e: list(e.absolute_path)):
            where = ".".join(str(p) for p in err.absolute_path)
            found.append((where, err.message, f"make '{where or 'the row'}' match the schema ({err.validator})"))
        return found


def load_schema(path: str | Path) -> SchemaValidator:
    p = Path(path)
    if not p.is_file():
        raise FtkitError.one("schema file not found", file=p, fix="create it or fix the stage's 'schema' path")
    try:
        schema = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise FtkitError.one(f"not valid JSON: {exc.msg}", file=p, line=exc.lineno, fix="fix the JSON syntax") from exc
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = ".".join(str(x) for x in exc.absolute_path) or None
        raise FtkitError.one(
            f"not a valid JSON Schema: {exc.message}", file=p, field=where, fix="see json-schema.org draft 2020-12"
        ) from exc
    return SchemaValidator(schema)


def reason_key(message: str) -> str:
    """A problem's summary bucket: its text before any ':' with numbers as N ('turn N is ...')."""
    return _NUMBER.sub("N", message.split(":")[0])[:80]


def _check_records(
    records: Iterable[Record],
    report: ValidationReport,
    validator: SchemaValidator | None,
    fmt: str,
    qfh: IO[str] | None,
    tokenizer: Any = None,
    max_len: int | None = None,
    stats: LengthStats | None = None,
) -> str:
    """The per-row loop shared by the sequential and the parallel paths; returns the format it settled on."""
    for rec in records:
        report.rows += 1
        if rec.error:
            found: list[Finding] = [("", rec.error, "fix the JSON on this line")]
        else:
            if fmt == "auto":
                fmt = detect_format(rec.row) or "auto"
                report.format = None if fmt == "auto" else fmt
            found = validator.problems(rec.row) if validator else []
            if not found and fmt != "auto":
                found = check_format(rec.row, fmt)
            elif not found and validator is None:
                found = [("", "no known format (messages, sharegpt, alpaca, preference, kto, completion)",
                          "pass --format, or fix the row's keys")]  # fmt: skip
            if not found and tokenizer is not None and stats is not None:
                found = check_lengths(tokenizer, rec.row, max_len, stats)
        if not found:
            report.valid += 1
            continue
        report.invalid += 1
        for where, message, fix in found:
            report.reasons[reason_key(message)] += 1
            if len(report.problems) < MAX_PROBLEMS_KEPT:
                report.problems.append(Problem(message, report.path, rec.number, where or None, fix))
        if qfh:
            reasons = [m for _, m, _ in found]
            row = rec.row if rec.error is None else rec.raw
            qfh.write(json.dumps({"line": rec.number, "reasons": reasons, "row": row}) + "\n")
    return fmt


def validate_file(
    path: str | Path,
    schema_path: str | Path | None = None,
    quarantine: str | Path | None = None,
    fmt: str = "auto",
    tokenizer: Any = None,
    max_len: int | None = None,
    workers: int = 1,
) -> ValidationReport:
    """Check every row: JSON syntax, the JSON Schema (if given), then the format's own checks.

    fmt "auto" takes the format of the first row that parses; every row must then have it.
    With a tokenizer, token lengths after the chat template are measured and a row whose answer
    a max length would cut off entirely is invalid. With workers > 1, a plain (uncompressed) JSONL
    file is split into byte ranges checked in parallel processes; the report is the same.
    """
    p = Path(path)
    validator = load_schema(schema_path) if schema_path else None
    if (
        workers > 1
        and tokenizer is None
        and p.suffix in (".jsonl", ".ndjson")
        and p.stat().st_size > PARALLEL_MIN_BYTES
    ):
        return _validate_parallel(p, schema_path, quarantine, fmt, workers)
    report = ValidationReport(path=str(p), quarantine=str(quarantine) if quarantine else None)
    report.format = None if fmt == "auto" else fmt
    stats = LengthStats()
    with contextlib.ExitStack() as stack:
        qfh = stack.enter_context(Path(quarantine).open("w", encoding="utf-8")) if quarantine else None
        _check_records(iter_records(p), report, validator, fmt, qfh, tokenizer, max_len, stats)
    if report.rows == 0:
        report.problems.append(Problem("the dataset has no rows", str(p), None, None, "add rows"))
    if tokenizer is not None:
        report.lengths = stats.summary(max_len)
    return report


# ------------------------------------------------------------------ parallel path

PARALLEL_MIN_BYTES = 4 << 20


def _validate_range(args: tuple[str, str | None, str, int, int, str | None]) -> tuple[ValidationReport, int]:
    """One worker: check the lines that begin in [start, end); return its report and how many lines it read."""
    path, schema_path, fmt, start, end, qpart = args
    validator = load_schema(schema_path) if schema_path else None
    report = ValidationReport(path=path)
    lines = CountedLines(Path(path), start, end)
    with contextlib.ExitStack() as stack:
        qfh = stack.enter_context(Path(qpart).open("w", encoding="utf-8")) if qpart else None
        _check_records(records_from_lines(lines, file_start=start == 0), report, validator, fmt, qfh)
    return report, lines.count


def _validate_parallel(
    path: Path, schema_path: str | Path | None, quarantine: str | Path | None, fmt: str, workers: int
) -> ValidationReport:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if fmt == "auto":  # settle the format once, from the first row, so every worker checks the same one
        fmt = next((f for r in iter_records(path) if r.error is None and (f := detect_format(r.row))), "auto")
    size = path.stat().st_size
    bounds = [size * i // workers for i in range(workers + 1)]
    parts = [f"{quarantine}.part{i}" if quarantine else None for i in range(workers)]
    jobs = [(str(path), str(schema_path) if schema_path else None, fmt, bounds[i], bounds[i + 1], parts[i])
            for i in range(workers)]  # fmt: skip
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        results = list(pool.map(_validate_range, jobs))
    report = ValidationReport(path=str(path), quarantine=str(quarantine) if quarantine else None)
    report.format = None if fmt == "auto" else fmt
    offset = 0
    for part, lines in results:
        report.rows += part.rows
        report.valid += part.valid
        report.invalid += part.invalid
        report.reasons.update(part.reasons)
        for prob in part.problems:
            if len(report.problems) < MAX_PROBLEMS_KEPT:
                prob.line = (prob.line or 0) + offset
                report.problems.append(prob)
        offset += lines
    if quarantine:
        _merge_quarantine(Path(quarantine), parts, [lines for _, lines in results])
    if report.rows == 0:
        report.problems.append(Problem("the dataset has no rows", str(path), None, None, "add rows"))
    return report


def _merge_quarantine(target: Path, parts: list[str | None], line_counts: list[int]) -> None:
    offset = 0
    with target.open("w", encoding="utf-8") as out:
        for part, lines in zip(parts, line_counts, strict=True):
            assert part is not None
            with open(part, encoding="utf-8") as fh:
                for line in fh:
                    entry = json.loads(line)
                    entry["line"] += offset
                    out.write(json.dumps(entry) + "\n")
            Path(part).unlink()
            offset += lines
