"""Validate a JSONL dataset row by row against a JSON Schema and the chat-format checks.

Streams the file (constant memory), names the line and field of every problem, and can
write rejected rows with their reasons to a quarantine file (rows in = valid + quarantined).
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from ftkit.data.checks import check_row
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


def iter_jsonl(path: Path) -> Iterator[tuple[int, str, Any, str | None]]:
    """Yield (line_number, raw_line, parsed_or_None, json_error) for each non-blank line."""
    with path.open("r", encoding="utf-8") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                yield number, raw, json.loads(raw), None
            except json.JSONDecodeError as exc:
                yield number, raw, None, f"invalid JSON at column {exc.colno}: {exc.msg}"


def _row_problems(row: Any, validator: Draft202012Validator) -> list[tuple[str, str, str]]:
    if not isinstance(row, dict):
        return [("", f"a row must be a JSON object, got {type(row).__name__}", "write one object per line")]
    found = []
    for err in sorted(validator.iter_errors(row), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in err.absolute_path)
        found.append((where, err.message, f"make '{where or 'the row'}' match the schema ({err.validator})"))
    if not found:
        found = check_row(row)
    return found


def validate_file(path: str | Path, schema_path: str | Path, quarantine: str | Path | None = None) -> ValidationReport:
    p = Path(path)
    if not p.is_file():
        raise FtkitError.one("dataset file not found", file=p, fix="fix the path or create the file")
    validator = load_schema(schema_path)
    report = ValidationReport(path=str(p), quarantine=str(quarantine) if quarantine else None)
    with contextlib.ExitStack() as stack:
        qfh = stack.enter_context(Path(quarantine).open("w", encoding="utf-8")) if quarantine else None
        for number, raw, row, json_error in iter_jsonl(p):
            report.rows += 1
            found = [("", json_error, "fix the JSON on this line")] if json_error else _row_problems(row, validator)
            if not found:
                report.valid += 1
                continue
            report.invalid += 1
            for where, message, fix in found:
                report.reasons[message.split(":")[0][:80]] += 1
                if len(report.problems) < MAX_PROBLEMS_KEPT:
                    report.problems.append(Problem(message, str(p), number, where or None, fix))
            if qfh:
                qfh.write(
                    json.dumps(
                        {"line": number, "reasons": [m for _, m, _ in found], "row": row if row is not None else raw}
                    )
                    + "\n"
                )
    if report.rows == 0:
        report.problems.append(Problem("the dataset has no rows", str(p), None, None, "add rows"))
    return report
