"""The data of a fork (`ftkit recipe new --dataset STAGE=PATH [--heldout STAGE=PATH]`).

The full profile trains on the user's rows; the smoke profile on a small, evenly spread slice of them (as many
rows as the source's smoke run trained on, so it stays a few-minute CPU run); the held-out rows the evaluation
scores are the user's too: given with `--heldout` (and refused when they overlap the training rows), or split
off the user's file, with held-out rows that near-duplicate a training row moved back into training. Every
file the run reads is written into the fork's `data/`, so `recipe validate` and the PII gate see exactly it.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ftkit.data.readers import iter_records
from ftkit.data.split import leakage
from ftkit.data.tokens import split_rows
from ftkit.errors import ExitCode, FtkitError

HELDOUT_FRACTION = 0.1  # of the user's rows, when recipe new splits them
HELDOUT_MAX = 200  # the evaluation scores at most export.eval.max_rows (default 200) rows
MIN_ROWS_TO_SPLIT = 10  # fewer rows than this: ask for --heldout instead of holding rows out
SPLIT_SEED = 42


@dataclass
class StageData:
    """What the fork trains one stage on, per profile, and where it came from."""

    stage: str
    source_file: str  # the file given with --dataset
    rows: int  # rows of that file
    train: str  # the full profile's file, relative to the fork
    train_rows: int
    smoke: str  # the smoke profile's slice, relative to the fork
    smoke_rows: int
    heldout: str | None = None  # export.eval.heldout, when this stage is the evaluated one
    heldout_rows: int = 0
    heldout_from: str | None = None  # "--heldout FILE", or "split off the dataset (seed 42)"
    moved_to_train: int = 0  # held-out rows split off that near-duplicated a training row

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rows_in_split(split: str | None, rows: int) -> int:
    """Rows a `datasets` split such as `train[:16]`, `train[10:20]` or `train[:25%]` keeps of `rows` (all rows
    when it names no slice)."""
    start, stop = split_rows(split, rows)
    return stop - start


def spread(n: int, k: int) -> list[int]:
    """`k` row indices spread evenly over `n` rows (every row when k >= n): deterministic, and not just the head
    of a file that may be sorted by topic or date."""
    if k >= n:
        return list(range(n))
    return [i * n // k for i in range(k)]


def heldout_size(n: int) -> int:
    """How many of `n` rows recipe new holds out: 10 %, at least 1, at most what the evaluation scores."""
    return max(1, min(HELDOUT_MAX, round(n * HELDOUT_FRACTION)))


def _write_lines(src: Path, keep: set[int], *outs: tuple[Path, bool]) -> list[int]:
    """Write each row of `src` (JSONL, JSON or Parquet; unreadable rows skipped: the file was validated) as a
    JSONL line to the first output whose flag equals `index in keep`; rows written to each output."""
    counts = [0] * len(outs)
    handles = [path.open("w", encoding="utf-8") for path, _ in outs]
    try:
        index = 0
        for rec in iter_records(src):
            if rec.error is not None:
                continue
            for i, (_, wanted) in enumerate(outs):
                if (index in keep) == wanted:
                    handles[i].write(json.dumps(rec.row, ensure_ascii=False) + "\n")
                    counts[i] += 1
                    break
            index += 1
    finally:
        for h in handles:
            h.close()
    return counts


def write_slice(src: Path, dest: Path, k: int, n: int) -> int:
    """The smoke slice: `k` of the `n` rows of `src`, spread evenly, in file order; rows written."""
    return _write_lines(src, set(spread(n, k)), (dest, True))[0]


def split_heldout(src: Path, train: Path, heldout: Path, n: int, seed: int = SPLIT_SEED) -> tuple[int, int, int]:
    """Split `src` (n rows) into training and held-out rows (seeded); held-out rows that exactly or nearly
    repeat a training row go back to training (nothing is dropped). (train rows, held-out rows, moved)."""
    if n < MIN_ROWS_TO_SPLIT:
        raise FtkitError.one(
            f"{src} has {n} rows: too few to hold some out for the evaluation", file=src, field="--dataset",
            fix="give held-out rows of the same format with --heldout STAGE=PATH (ftkit data split makes them)",
            code=ExitCode.DATA_INVALID,
        )  # fmt: skip
    held = set(random.Random(seed).sample(range(n), heldout_size(n)))
    train_rows, held_rows = _write_lines(src, held, (train, False), (heldout, True))
    moved = 0
    for _ in range(5):  # a row moved back can nearly repeat another held-out row: check again
        leak = leakage(train, heldout, examples=held_rows)
        lines = {e["line"] for e in leak["examples"]}
        if not lines:
            break
        if len(lines) >= held_rows:
            raise FtkitError.one(
                f"every row held out of {src} repeats a training row: the file is mostly duplicates", file=src,
                field="--dataset", fix=f"deduplicate it first: ftkit data dedup {src}", code=ExitCode.DATA_INVALID,
            )  # fmt: skip
        kept_tmp, back_tmp = heldout.with_suffix(".kept"), train.with_suffix(".back")
        kept, back = _write_lines(heldout, {line - 1 for line in lines}, (kept_tmp, False), (back_tmp, True))
        with train.open("a", encoding="utf-8") as out:
            out.write(back_tmp.read_text(encoding="utf-8"))
        back_tmp.unlink()
        kept_tmp.replace(heldout)
        train_rows, held_rows, moved = train_rows + back, kept, moved + back
    return train_rows, held_rows, moved


def copy_into(path: Path, data_dir: Path, name: str) -> Path:
    """`path` copied to `data_dir/name`, or a numbered name beside it when that file exists."""
    data_dir.mkdir(parents=True, exist_ok=True)
    target, n = data_dir / name, 2
    while target.exists():
        stem, _, ext = name.partition(".")
        target, n = data_dir / f"{stem}-{n}.{ext}", n + 1
    shutil.copyfile(path, target)
    return target


def free_name(data_dir: Path, stem: str, kind: str) -> Path:
    """data/<stem>.<kind>.jsonl, or <stem>-2.<kind>.jsonl… when taken."""
    target, n = data_dir / f"{stem}.{kind}.jsonl", 2
    while target.exists():
        target, n = data_dir / f"{stem}-{n}.{kind}.jsonl", n + 1
    return target
