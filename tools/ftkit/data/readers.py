"""Read dataset files record by record: JSONL, JSON arrays, Parquet, optionally .gz/.zst compressed.

Each record keeps its position (the line of a JSONL file, the 1-based row of an array or a
Parquet file) so errors can name it. JSONL and Parquet stream in constant memory.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from ftkit.errors import FtkitError

SUPPORTED = ".jsonl, .ndjson, .json, .parquet (JSON files optionally .gz or .zst compressed)"


@dataclass
class Record:
    number: int  # JSONL: line number; JSON array / Parquet: 1-based row index
    row: Any
    raw: str | None = None  # the text of a JSONL line that did not parse
    error: str | None = None


def _kind(path: Path) -> tuple[str, str | None]:
    suffixes = [s.lower() for s in path.suffixes]
    compression = suffixes[-1][1:] if suffixes and suffixes[-1] in (".gz", ".zst") else None
    base = suffixes[-2] if compression and len(suffixes) > 1 else (suffixes[-1] if suffixes else "")
    return base, compression


@contextlib.contextmanager
def _open_text(path: Path, compression: str | None) -> Iterator[IO[str]]:
    if compression == "gz":
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            yield fh
    elif compression == "zst":
        import zstandard

        with path.open("rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as reader:
            yield io.TextIOWrapper(reader, encoding="utf-8")
    else:
        with path.open("r", encoding="utf-8") as fh:
            yield fh


def _json_lines(fh: IO[str]) -> Iterator[Record]:
    for number, raw in enumerate(fh, start=1):
        if not raw.strip():
            continue
        try:
            yield Record(number, orjson.loads(raw))
        except orjson.JSONDecodeError:
            # The standard library accepts a little more (NaN, integers over 64 bits) and names the column.
            try:
                yield Record(number, json.loads(raw))
            except json.JSONDecodeError as exc:
                yield Record(number, None, raw.rstrip("\n"), f"invalid JSON at column {exc.colno}: {exc.msg}")


def iter_records(path: str | Path) -> Iterator[Record]:
    p = Path(path)
    if not p.is_file():
        raise FtkitError.one("dataset file not found", file=p, fix="fix the path or create the file")
    base, compression = _kind(p)
    if base == ".parquet":
        import pyarrow.parquet as pq

        number = 0
        for batch in pq.ParquetFile(p).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                number += 1
                yield Record(number, row)
        return
    if base not in (".jsonl", ".ndjson", ".json"):
        raise FtkitError.one(f"unsupported file type '{''.join(p.suffixes)}'", file=p, fix=f"use one of: {SUPPORTED}")
    if base == ".json" and _first_char(p, compression) == "[":
        # A JSON array is parsed whole (not streamed): convert large ones to JSONL first.
        with _open_text(p, compression) as fh:
            try:
                rows = json.load(fh)
            except json.JSONDecodeError as exc:
                raise FtkitError.one(
                    f"not valid JSON: {exc.msg}", file=p, line=exc.lineno, fix="fix the JSON, or write JSONL"
                ) from exc
        for i, row in enumerate(rows, start=1):
            yield Record(i, row)
        return
    with _open_text(p, compression) as fh:
        yield from _json_lines(fh)


def _first_char(path: Path, compression: str | None) -> str:
    with _open_text(path, compression) as fh:
        while (ch := fh.read(1)) and ch.isspace():
            pass
        return ch
