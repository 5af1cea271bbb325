"""Scan a dataset file for PII: counts per entity, rows affected, masked examples with row ids."""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftkit.data.formats import detect_format
from ftkit.data.parallel import map_records
from ftkit.data.readers import Record
from ftkit.pii.findings import ENTITIES, NER_ENTITIES, STRUCTURED
from ftkit.pii.rows import ScanSettings, example, ner_backend, row_hits

Progress = Callable[[int, int | None], None]


@dataclass
class RowScan:
    """What a worker sends back for one row: compact, picklable."""

    row_id: str | None = None  # the row's own "id" field, if any (line numbers are added by the reader)
    format: str | None = None
    error: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)


def own_id(row: Any) -> str | None:
    return str(row["id"]) if isinstance(row, dict) and row.get("id") is not None else None


def ner_status(settings: ScanSettings) -> dict[str, Any]:
    """Whether PERSON and ADDRESS were looked for, and if not, why: every report carries it."""
    if settings.ner == "off":
        return {"available": False, "model": None, "reason": "NER off: PERSON and ADDRESS were not scanned"}
    status = ner_backend(settings).status
    return {"available": status.available, "model": status.model, "reason": status.reason}


def scanned_entities(settings: ScanSettings, ner: dict[str, Any]) -> list[str]:
    wanted = settings.entities or ENTITIES
    return [e for e in wanted if e in STRUCTURED or (e in NER_ENTITIES and ner["available"])]


def scan_record(settings: ScanSettings, max_examples: int, rec: Record) -> RowScan:
    if rec.error:
        return RowScan(error=rec.error)
    out = RowScan(own_id(rec.row), detect_format(rec.row))
    for hit in row_hits(rec.row, settings):
        for f in hit.findings:
            out.counts[f.entity] = out.counts.get(f.entity, 0) + 1
            if sum(e["entity"] == f.entity for e in out.examples) < max_examples:
                out.examples.append({"entity": f.entity, **example(hit, f)})
    return out


@dataclass
class ScanReport:
    path: str
    rows: int = 0
    unreadable: int = 0
    rows_with_pii: int = 0
    format: str | None = None
    findings: Counter[str] = field(default_factory=Counter)  # entity -> findings
    rows_by_entity: Counter[str] = field(default_factory=Counter)  # entity -> rows with at least one
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    unreadable_lines: list[int] = field(default_factory=list)
    entities_scanned: list[str] = field(default_factory=list)
    fields: list[str] | None = None
    ner: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, number: int, scan: RowScan, max_examples: int) -> None:
        self.rows += 1
        if scan.error:
            self.unreadable += 1
            if len(self.unreadable_lines) < 20:
                self.unreadable_lines.append(number)
            return
        self.format = self.format or scan.format
        if scan.counts:
            self.rows_with_pii += 1
        self.findings.update(scan.counts)
        self.rows_by_entity.update(scan.counts.keys())
        for ex in scan.examples:
            kept = self.examples.setdefault(ex["entity"], [])
            if len(kept) < max_examples:
                kept.append({"line": number, "row_id": scan.row_id, **ex})

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "rows": self.rows,
            "unreadable": self.unreadable,
            "rows_with_pii": self.rows_with_pii,
            "format": self.format,
            "findings": dict(self.findings),
            "rows_by_entity": dict(self.rows_by_entity),
            "examples": self.examples,
            "unreadable_lines": self.unreadable_lines,
            "entities_scanned": self.entities_scanned,
            "fields": self.fields,
            "ner": self.ner,
            "seconds": round(self.seconds, 3),
        }


def scan_file(
    path: str | Path,
    settings: ScanSettings | None = None,
    *,
    max_examples: int = 3,
    workers: int = 1,
    on_progress: Progress | None = None,
) -> ScanReport:
    """Scan every row's text fields (streaming; plain JSONL in parallel with workers > 1)."""
    settings = settings or ScanSettings()
    started = time.perf_counter()
    report = ScanReport(path=str(path))
    report.ner = ner_status(settings)  # loads the NER model, if any, before workers fork
    report.entities_scanned = scanned_entities(settings, report.ner)
    report.fields = [".".join(p) for p in settings.patterns] if settings.patterns else None
    work = functools.partial(scan_record, settings, max_examples)
    for number, scan in map_records(path, work, workers=workers, on_progress=on_progress):
        report.add(number, scan, max_examples)
    report.seconds = time.perf_counter() - started
    return report
