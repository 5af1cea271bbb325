"""Read dataset files record by record: JSONL, JSON arrays, Parquet, optionally .gz/.zst compressed.

Each record keeps its position (the line of a JSONL file, the 1-based row of an array or a
Parquet file) so errors can name it. JSONL and Parquet stream in constant memory.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import io
import json
from collections.abc import Iterable, Iterator
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
def _open_binary(path: Path, compression: str | None) -> Iterator[IO[bytes]]:
    if compression == "gz":
        with gzip.open(path, "rb") as fh:
            yield fh  # type: ignore[misc]
    elif compression == "zst":
        import zstandard

        with path.open("rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as reader:
            yield io.BufferedReader(reader)  # type: ignore[arg-type]
    else:
        with path.open("rb") as fh:
            yield fh


def parse_line(number: int, raw: bytes) -> Record:
    """One JSONL line -> a Record; every failure becomes a classified error, never an exception."""
    try:
        return Record(number, orjson.loads(raw))
    except orjson.JSONDecodeError:
        pass
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        shown = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        return Record(number, None, shown, f"not valid UTF-8 (byte {exc.start} of the line)")
    try:  # the standard library accepts a little more (NaN, huge integers) and names the column
        return Record(number, json.loads(text))
    except json.JSONDecodeError as exc:
        return Record(number, None, text.rstrip("\r\n"), f"invalid JSON at column {exc.colno}: {exc.msg}")
    except RecursionError:
        return Record(number, None, text[:200], "JSON nested too deeply")


def records_from_lines(lines: Iterable[bytes], *, file_start: bool = True) -> Iterator[Record]:
    """JSONL lines -> Records numbered from 1 (blank lines count but yield nothing); a BOM is
    dropped from the first line when the lines begin at the start of the file."""
    for number, raw in enumerate(lines, start=1):
        if number == 1 and file_start and raw.startswith(BOM):
            raw = raw[len(BOM) :]
        if raw.strip():
            yield parse_line(number, raw)


BOM = b"\xef\xbb\xbf"
CHUNK = 1 << 20
MAX_ROW_CHARS = 256 << 20


def _json_array(fh: IO[bytes]) -> Iterator[Record]:
    """Stream the elements of a top-level JSON array, one decoded value at a time (constant memory).

    A syntax error ends the stream with one error record naming the row index and the line.
    """
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")()
    buf, pos, line, index, eof = "", 0, 1, 0, False

    def more() -> bool:
        nonlocal buf, pos, eof
        if eof:
            return False
        chunk = fh.read(CHUNK)
        eof = not chunk
        buf = buf[pos:] + utf8.decode(chunk, final=eof)
        pos = 0
        return bool(chunk) or bool(buf)

    def skip_ws() -> str:
        nonlocal pos, line
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n\ufeff":
                line += buf[pos] == "\n"
                pos += 1
            if pos < len(buf) or not more():
                return buf[pos] if pos < len(buf) else ""

    def error(message: str) -> Record:
        return Record(index + 1, None, buf[pos : pos + 200], f"{message} (line {line} of the file)")

    try:
        if skip_ws() != "[":
            yield error("a JSON array file must start with '['")
            return
        pos += 1
        if skip_ws() == "]":
            return
        while True:
            skip_ws()
            while True:
                try:
                    value, end = decoder.raw_decode(buf, pos)
                    break
                except json.JSONDecodeError as exc:
                    if len(buf) - pos > MAX_ROW_CHARS or not more():
                        yield error(f"invalid JSON in row {index + 1}: {exc.msg}")
                        return
            line += buf.count("\n", pos, end)
            pos = end
            index += 1
            yield Record(index, value)
            sep = skip_ws()
            if sep == "]":
                return
            if sep != ",":
                yield error(f"expected ',' or ']' after row {index}, found {sep or 'the end of the file'!r}")
                return
            pos += 1
    except UnicodeDecodeError as exc:
        yield Record(index + 1, None, None, f"not valid UTF-8 near row {index + 1} ({exc.reason})")
    except RecursionError:
        yield Record(index + 1, None, None, f"JSON nested too deeply in row {index + 1}")


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
    with _open_binary(p, compression) as fh:
        if base == ".json" and _first_byte(p, compression) == b"[":
            yield from _json_array(fh)
        else:
            yield from records_from_lines(fh)


def _first_byte(path: Path, compression: str | None) -> bytes:
    with _open_binary(path, compression) as fh:
        head = fh.read(4096).lstrip(b" \t\r\n")
        return head.removeprefix(BOM).lstrip()[:1]
