"""Validate a JSONL dataset row by row against a JSON Schema and the chat-format checks.

Streams the file (constant memory), names the line and field of every problem, and can
write rejected rows with their reasons to a quarantine file (rows in = valid + quarantined).
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from ftkit.data.checks import Finding
from ftkit.data.formats import check_format, detect_format
from ftkit.data.lengths import LengthStats, check_lengths
from ftkit.data.readers import iter_records
from ftkit.errors import FtkitError, Problem

MAX_PROBLEMS_KEPT = 50


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


def load_schema(path: str | Path) -> Draft202012Validator:
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
    return Draft202012Validator(schema)


def _schema_problems(row: Any, validator: Draft202012Validator) -> list[Finding]:
    found = []
    for err in sorted(validator.iter_errors(row), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in err.absolute_path)
        found.append((where, err.message, f"make '{where or 'the row'}' match the schema ({err.validator})"))
    return found


def validate_file(
    path: str | Path,
    schema_path: str | Path | None = None,
    quarantine: str | Path | None = None,
    fmt: str = "auto",
    tokenizer: Any = None,
    max_len: int | None = None,
) -> ValidationReport:
    """Check every row: JSON syntax, the JSON Schema (if given), then the format's own checks.

    fmt "auto" takes the format of the first row that parses; every row must then have it.
    With a tokenizer, token lengths after the chat template are measured and a row whose answer
    a max length would cut off entirely is invalid.
    """
    stats = LengthStats()
    p = Path(path)
    validator = load_schema(schema_path) if schema_path else None
    report = ValidationReport(path=str(p), quarantine=str(quarantine) if quarantine else None)
    report.format = None if fmt == "auto" else fmt
    with contextlib.ExitStack() as stack:
        qfh = stack.enter_context(Path(quarantine).open("w", encoding="utf-8")) if quarantine else None
        for rec in iter_records(p):
            report.rows += 1
            if rec.error:
                found: list[Finding] = [("", rec.error, "fix the JSON on this line")]
            else:
                if fmt == "auto":
                    fmt = detect_format(rec.row) or "auto"
                    report.format = None if fmt == "auto" else fmt
                found = _schema_problems(rec.row, validator) if validator else []
                if not found and fmt != "auto":
                    found = check_format(rec.row, fmt)
                elif not found and validator is None:
                    found = [("", "no known format (messages, sharegpt, alpaca, preference, kto, completion)",
                              "pass --format, or fix the row's keys")]  # fmt: skip
                if not found and tokenizer is not None:
                    found = check_lengths(tokenizer, rec.row, max_len, stats)
            if not found:
                report.valid += 1
                continue
            report.invalid += 1
            for where, message, fix in found:
                report.reasons[message.split(":")[0][:80]] += 1
                if len(report.problems) < MAX_PROBLEMS_KEPT:
                    report.problems.append(Problem(message, str(p), rec.number, where or None, fix))
            if qfh:
                reasons = [m for _, m, _ in found]
                row = rec.row if rec.error is None else rec.raw
                qfh.write(json.dumps({"line": rec.number, "reasons": reasons, "row": row}) + "\n")
    if report.rows == 0:
        report.problems.append(Problem("the dataset has no rows", str(p), None, None, "add rows"))
    if tokenizer is not None:
        report.lengths = stats.summary(max_len)
    return report
