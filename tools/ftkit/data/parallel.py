"""Process the records of a dataset file in order, in chunks, optionally in worker processes.

A plain JSONL file is cut into byte ranges at line starts; each range is read and processed by a
worker (or in this process when workers == 1) and the results come back in file order, so a writer
can stream them out. Other files (compressed, JSON arrays, Parquet) are read sequentially. Record
numbers are the file's line numbers (row indexes for arrays and Parquet) in both cases.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from ftkit.data.readers import Record, iter_records, records_from_lines

T = TypeVar("T")
CHUNK_BYTES = 4 << 20
PLAIN_JSONL = (".jsonl", ".ndjson")


def range_lines(path: Path, start: int, end: int) -> Iterator[bytes]:
    """The lines of a file that begin in the byte range [start, end)."""
    with path.open("rb") as fh:
        if start:
            fh.seek(start - 1)
            fh.readline()  # finish the line that began before `start`
        while fh.tell() < end and (raw := fh.readline()):
            yield raw


class CountedLines:
    """The lines of a byte range (see `range_lines`), counting them as they are read."""

    def __init__(self, path: Path, start: int, end: int) -> None:
        self.path, self.start, self.end, self.count = path, start, end, 0

    def __iter__(self) -> Iterator[bytes]:
        for raw in range_lines(self.path, self.start, self.end):
            self.count += 1
            yield raw


def byte_ranges(size: int, chunk: int) -> list[tuple[int, int]]:
    return [(s, min(s + chunk, size)) for s in range(0, size, chunk)] or [(0, 0)]


def _run_range(work: Callable[[Record], T], path: str, span: tuple[int, int]) -> tuple[list[tuple[int, T]], int]:
    """One chunk: (record number within the chunk, result) for every record, and how many lines were read."""
    lines = CountedLines(Path(path), *span)
    results = [(rec.number, work(rec)) for rec in records_from_lines(lines, file_start=span[0] == 0)]
    return results, lines.count


def map_records(
    path: str | Path,
    work: Callable[[Record], T],
    *,
    workers: int = 1,
    chunk_bytes: int | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> Iterator[tuple[int, T]]:
    """Yield (record number, work(record)) in file order.

    `work` must be picklable (a module-level function or a functools.partial of one) when workers > 1.
    Chunks are `chunk_bytes` (default CHUNK_BYTES) long. `on_progress(done, total)` counts bytes for
    plain JSONL and records otherwise (total None)."""
    p = Path(path)
    if p.suffix not in PLAIN_JSONL or not p.is_file():
        for n, rec in enumerate(iter_records(p), start=1):
            yield rec.number, work(rec)
            if on_progress and n % 1000 == 0:
                on_progress(n, None)
        return
    size = p.stat().st_size
    spans = byte_ranges(size, chunk_bytes or CHUNK_BYTES)
    run = functools.partial(_run_range, work, str(p))
    if workers > 1 and len(spans) > 1:
        import multiprocessing

        pool = multiprocessing.get_context("fork").Pool(min(workers, len(spans)))
        chunks: Iterator[tuple[list[tuple[int, T]], int]] = pool.imap(run, spans)
    else:
        pool, chunks = None, map(run, spans)
    try:
        offset = 0
        for (_, end), (results, lines) in zip(spans, chunks, strict=True):
            for number, result in results:
                yield number + offset, result
            offset += lines
            if on_progress:
                on_progress(end, size)
    finally:
        if pool is not None:
            pool.terminate()
