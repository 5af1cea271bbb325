"""Train/val/test splits (seeded, optionally stratified) and a leakage check between splits.

Two passes over the input: the first reads only each row's stratum, the second writes the rows.
Proportions are exact per stratum (rounded), so a rare class keeps its share in every split.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftkit.data.dedup import NearIndex, row_id
from ftkit.data.readers import iter_records
from ftkit.data.text import exact_key, row_text
from ftkit.errors import FtkitError, Problem


def _stratum(row: Any, field_path: str | None) -> str:
    if not field_path:
        return ""
    value: Any = row
    for part in field_path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return json.dumps(value, sort_keys=True)


def assign_splits(strata: list[str], fractions: dict[str, float], seed: int) -> list[str]:
    """Pure: the split name of each row, exact proportions within each stratum, seeded shuffle."""
    by_stratum: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(strata):
        by_stratum[s].append(i)
    out = ["train"] * len(strata)
    rng = random.Random(seed)
    for s in sorted(by_stratum):
        members = by_stratum[s]
        rng.shuffle(members)
        start = 0
        for name, frac in fractions.items():
            n = round(frac * len(members))
            for i in members[start : start + n]:
                out[i] = name
            start += n
    return out


@dataclass
class SplitReport:
    rows: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    unreadable: int = 0
    leakage: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def split_file(
    inp: str | Path,
    out_dir: str | Path | None = None,
    *,
    val: float = 0.1,
    test: float = 0.0,
    stratify: str | None = None,
    seed: int = 42,
) -> SplitReport:
    src = Path(inp)
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise FtkitError.one(
            f"--val {val} and --test {test} must be fractions that leave rows for training",
            field="--val/--test",
            fix="e.g. --val 0.1 --test 0.1",
        )
    strata = [_stratum(rec.row, stratify) for rec in iter_records(src) if not rec.error]
    fractions = {k: v for k, v in (("val", val), ("test", test)) if v > 0}
    labels = iter(assign_splits(strata, fractions, seed))
    stem = src.name.split(".")[0]
    directory = Path(out_dir) if out_dir else src.parent
    directory.mkdir(parents=True, exist_ok=True)
    names = ["train", *fractions]
    report = SplitReport(files={n: str(directory / f"{stem}.{n}.jsonl") for n in names})
    report.counts = dict.fromkeys(names, 0)
    with contextlib.ExitStack() as stack:
        handles = {n: stack.enter_context(Path(report.files[n]).open("w", encoding="utf-8")) for n in names}
        for rec in iter_records(src):
            report.rows += 1
            if rec.error:
                report.unreadable += 1
                continue
            name = next(labels)
            handles[name].write(json.dumps(rec.row) + "\n")
            report.counts[name] += 1
    report.leakage = {n: leakage(report.files["train"], report.files[n]) for n in fractions}
    return report


def leakage(train: str | Path, other: str | Path, *, threshold: float = 0.8, examples: int = 5) -> dict[str, Any]:
    """Rows of `other` whose text is in `train`, exactly (normalised) or nearly (MinHash LSH)."""
    exact: dict[str, str] = {}
    index = NearIndex(threshold)
    for rec in iter_records(train):
        if rec.error:
            continue
        text = row_text(rec.row)
        rid = row_id(rec.row, rec.number)
        exact.setdefault(exact_key(text), rid)
        index.add(rid, index.minhash(text))
    found = {"rows": 0, "exact": 0, "near": 0, "examples": []}
    for rec in iter_records(other):
        if rec.error:
            continue
        found["rows"] += 1
        text = row_text(rec.row)
        hit: tuple[str, str, float] | None = None
        if (key := exact_key(text)) in exact:
            hit = ("exact", exact[key], 1.0)
        elif near := index.query(index.minhash(text)):
            hit = ("near", near[0], round(near[1], 3))
        if hit:
            found[hit[0]] += 1
            if len(found["examples"]) < examples:
                found["examples"].append(
                    {"line": rec.number, "id": row_id(rec.row, rec.number), "kind": hit[0],
                     "train_id": hit[1], "similarity": hit[2]}
                )  # fmt: skip
    return found


def leak_problems(train: str | Path, heldout: str | Path, *, field: str, fix: str, shown: int = 10) -> list[Problem]:
    """One problem per held-out row (the first `shown`) that repeats a training row exactly or nearly (MinHash),
    then the count and `fix`; [] when none does."""
    leak = leakage(train, heldout, examples=shown)
    if not leak["exact"] + leak["near"]:
        return []
    problems = []
    for e in leak["examples"]:
        kind = "an exact" if e["kind"] == "exact" else f"a near (similarity {e['similarity']})"
        problems.append(Problem(f"held-out row (id {e['id']}) is {kind} copy of training row {e['train_id']} of "
                                f"{Path(train).name}", str(heldout), e["line"], field))  # fmt: skip
    problems.append(Problem(
        f"{leak['exact']} exact + {leak['near']} near of {leak['rows']} held-out rows are also rows of {train}: "
        "their scores would flatter the model", str(heldout), None, field, fix))  # fmt: skip
    return problems
