"""The PII gate: how many rows may carry each entity before a run refuses to train on the data.

Thresholds count rows (a row with three emails counts once). The default allows no row with a secret;
an entity without a threshold is reported, never refused. A recipe sets its own in `recipe.yaml`
under `pii.max_rows`; `ftkit pii scan --max-rows ENTITY=N` does the same on the command line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftkit.errors import ExitCode, FtkitError, Problem
from ftkit.pii.findings import ENTITIES
from ftkit.pii.rows import ScanSettings
from ftkit.pii.scan import ScanReport, scan_file

DEFAULT_MAX_ROWS: dict[str, int | None] = {"SECRET": 0}


@dataclass(frozen=True)
class Violation:
    entity: str
    rows: int
    max_rows: int

    def to_dict(self) -> dict[str, Any]:
        return {"entity": self.entity, "rows": self.rows, "max_rows": self.max_rows}


def thresholds(overrides: dict[str, int | None] | None = None) -> dict[str, int | None]:
    """The defaults with `overrides` on top (None lifts a limit, e.g. SECRET: null)."""
    return {**DEFAULT_MAX_ROWS, **(overrides or {})}


def policy_settings(
    fields: list[str] | None, ner: str, max_rows: dict[str, int | None]
) -> tuple[ScanSettings, dict[str, int | None]]:
    """A recipe's `pii:` section (fields to scan, NER model, rows allowed per entity) as the scan settings and the
    gate's limits (the defaults under the recipe's own)."""
    from ftkit.pii.fields import parse_patterns

    patterns = parse_patterns(fields)
    return ScanSettings(tuple(patterns) if patterns else None, ner=ner), thresholds(max_rows)


def parse_max_rows(specs: list[str] | None) -> dict[str, int | None]:
    """`SECRET=0`, `EMAIL=10`, `SECRET=none` -> {entity: rows or None}."""
    out: dict[str, int | None] = {}
    for spec in specs or []:
        entity, sep, value = spec.partition("=")
        entity = entity.strip().upper()
        if not sep or entity not in ENTITIES or not (value.strip().isdigit() or value.strip().lower() == "none"):
            raise FtkitError.one(
                f"bad --max-rows '{spec}'", field="--max-rows",
                fix=f"write ENTITY=N (rows allowed) or ENTITY=none; entities: {', '.join(ENTITIES)}",
            )  # fmt: skip
        out[entity] = None if value.strip().lower() == "none" else int(value)
    return out


def violations(report: ScanReport, max_rows: dict[str, int | None]) -> list[Violation]:
    return [
        Violation(entity, report.rows_by_entity[entity], limit)
        for entity, limit in max_rows.items()
        if limit is not None and report.rows_by_entity.get(entity, 0) > limit
    ]


def describe_example(e: dict[str, Any]) -> str:
    """'line 12 (id abc) messages.1.content: …key [SECRET: AK****************LE] in…'"""
    row = f" (id {e['row_id']})" if e.get("row_id") else ""
    return f"line {e['line']}{row} {e['field']}: {e['snippet']}"


def gate_problems(report: ScanReport, found: list[Violation], policy_file: str | None = None) -> list[Problem]:
    """One problem per entity over its limit: where the first examples are, masked, and the ways out."""
    problems = []
    for v in found:
        examples = report.examples.get(v.entity, [])
        shown = "; ".join(describe_example(e) for e in examples)
        first = examples[0] if examples else {}
        where = f"pii.max_rows.{v.entity} in {policy_file}" if policy_file else f"--max-rows {v.entity}=N"
        problems.append(
            Problem(
                f"{v.rows} of {report.rows} rows carry {v.entity} (allowed: {v.max_rows}). {shown}",
                report.path,
                first.get("line"),
                first.get("field"),
                f"clean the data (ftkit pii clean {report.path} CLEAN.jsonl --mode mask), raise {where}, "
                "or pass --allow-pii (make recipe … ALLOW_PII=1) to train on it anyway",
            )
        )
    return problems


def gate_dataset(
    path: str | Path,
    settings: ScanSettings,
    max_rows: dict[str, int | None],
    *,
    allow: bool = False,
    policy_file: str | None = None,
    report_path: Path | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """Scan one dataset and apply the gate: raise (exit 3, with the masked report) when an entity is
    over its limit, unless `allow`. Returns the report with the gate's verdict; writes it to `report_path`."""
    report = scan_file(path, settings, workers=workers)
    found = violations(report, max_rows)
    verdict = "refused" if found and not allow else "overridden" if found else "passed"
    result = {**report.to_dict(), "gate": {"max_rows": max_rows, "verdict": verdict,
                                           "violations": [v.to_dict() for v in found]}}  # fmt: skip
    if report_path is not None:
        report_path.write_text(json.dumps(result, indent=2))
    if verdict == "refused":
        saved = f"; full report: {report_path}" if report_path else ""
        raise FtkitError(
            f"PII gate: {path} carries PII over the recipe's limits; training did not start{saved}",
            gate_problems(report, found, policy_file),
            ExitCode.DATA_INVALID,
        )
    return result
