"""Exact and near-duplicate detection: normalised hashes, and MinHash LSH (datasketch) over word shingles.

Rows are read in order and the first of a group is kept; every dropped row goes to a side file
with the id of the row it duplicates, the kind (exact or near) and the estimated similarity.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftkit.data.readers import iter_records
from ftkit.data.text import exact_key, row_text, shingles

NUM_PERM = 128


def row_id(row: Any, number: int) -> str:
    if isinstance(row, dict) and row.get("id") is not None:
        return str(row["id"])
    return f"line-{number}"


class NearIndex:
    """MinHash LSH over word 5-grams: `query` returns ids whose estimated Jaccard >= threshold."""

    def __init__(self, threshold: float = 0.8, num_perm: int = NUM_PERM) -> None:
        from datasketch import MinHashLSH

        self.threshold, self.num_perm = threshold, num_perm
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.hashes: dict[str, Any] = {}

    def minhash(self, text: str) -> Any:
        from datasketch import MinHash

        m = MinHash(num_perm=self.num_perm)
        m.update_batch([s.encode() for s in shingles(text)])
        return m

    def query(self, m: Any) -> tuple[str, float] | None:
        """The most similar indexed id at or above the threshold, with its estimated similarity."""
        best = None
        for key in self.lsh.query(m):
            sim = m.jaccard(self.hashes[key])
            if sim >= self.threshold and (best is None or sim > best[1]):
                best = (key, sim)
        return best

    def add(self, key: str, m: Any) -> None:
        if key not in self.hashes:
            self.lsh.insert(key, m)
            self.hashes[key] = m


@dataclass
class DedupReport:
    rows_in: int = 0
    kept: int = 0
    exact: int = 0
    near: int = 0
    unreadable: int = 0
    dropped_path: str | None = None
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def iter_unique(
    path: str | Path, *, near: bool = True, threshold: float = 0.8
) -> Iterator[tuple[int, Any, dict[str, Any] | None]]:
    """Yield (number, row, None) for kept rows and (number, row, why) for duplicates / unreadable rows."""
    seen: dict[str, str] = {}
    index = NearIndex(threshold) if near else None
    for rec in iter_records(path):
        if rec.error:
            yield rec.number, rec.raw, {"kind": "unreadable", "reason": rec.error}
            continue
        rid = row_id(rec.row, rec.number)
        text = row_text(rec.row)
        key = exact_key(text)
        if key in seen:
            yield rec.number, rec.row, {"kind": "exact", "duplicate_of": seen[key], "similarity": 1.0}
            continue
        if index is not None:
            m = index.minhash(text)
            if hit := index.query(m):
                yield rec.number, rec.row, {"kind": "near", "duplicate_of": hit[0], "similarity": round(hit[1], 3)}
                continue
            index.add(rid, m)
        seen[key] = rid
        yield rec.number, rec.row, None


def dedup_file(
    inp: str | Path, out: str | Path, dropped: str | Path | None = None, *, near: bool = True, threshold: float = 0.8
) -> DedupReport:
    dst = Path(out)
    dropped_path = Path(dropped) if dropped else dst.with_name(dst.name + ".dropped.jsonl")
    report = DedupReport(dropped_path=str(dropped_path))
    with dst.open("w", encoding="utf-8") as fh, dropped_path.open("w", encoding="utf-8") as dfh:
        for number, row, why in iter_unique(inp, near=near, threshold=threshold):
            report.rows_in += 1
            if why is None:
                report.kept += 1
                fh.write(json.dumps(row) + "\n")
                continue
            kind = why["kind"]
            setattr(report, kind, getattr(report, kind) + 1)
            entry = {"line": number, **why, "row": row}
            dfh.write(json.dumps(entry) + "\n")
            if len(report.examples) < 5:
                report.examples.append({"line": number, **why})
    if report.kept == report.rows_in:
        dropped_path.unlink()
        report.dropped_path = None
    return report
