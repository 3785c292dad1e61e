"""Reading one source file as batches of rows, refusing what is not its format with the reason.

CSV and JSON Lines must be UTF-8 text (a UTF-8 byte-order mark is fine); Latin-1, UTF-16 and other
encodings are refused with `UnreadableSource` rather than read as garbage. So are empty files, a CSV
whose first line is too long to be a header, a JSON line over the size limit and a file that is not
Parquet. Every refusal names the file (its store key, or `upload`) and is a 400.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from cairn.errors import InvalidInput

SourceFormat = Literal["csv", "parquet", "jsonl"]

BATCH_ROWS = 65_536
CSV_BLOCK_BYTES = 4 << 20
# Arrow needs the header inside the first block; a longer first line is not a header.
MAX_HEADER_BYTES = 1 << 20
MAX_JSON_LINE_BYTES = 32 << 20
_SNIFF_BYTES = 4096
_SCAN_BYTES = 1 << 20
_LINE_BREAK = re.compile(rb"[\r\n]")
# UTF-32 marks first: the UTF-32-LE mark starts with the UTF-16-LE one.
_WIDE_MARKS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


@dataclass(frozen=True)
class SourceFile:
    """A local copy of one input file and the name to report it by (store key or `upload`)."""

    path: Path
    label: str


class UnreadableSource(InvalidInput):
    """A file that cannot be read as its format: empty, not UTF-8, not Parquet, lines too long."""

    code = "unreadable_source"


class NoRows(InvalidInput):
    """The sources hold column names (or nothing) but not a single row."""

    code = "no_rows"


def _mib(size: int) -> str:
    return f"{size / (1 << 20):g} MiB"


def not_utf8(label: str, where: str) -> UnreadableSource:
    return UnreadableSource(
        f"{label} is not UTF-8 text ({where}); save it as UTF-8 (Latin-1, Windows-1252 and "
        "UTF-16 are not read) and send it again",
        file=label,
        encoding="not utf-8",
    )


def check_not_empty(source: SourceFile) -> None:
    if source.path.stat().st_size == 0:
        raise UnreadableSource(f"{source.label} is empty (0 bytes)", file=source.label)


def _check_text_start(source: SourceFile) -> None:
    """Refuse UTF-16/32 up front: read as UTF-8, its NUL bytes parse as one garbled column."""
    with source.path.open("rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    for mark, encoding in _WIDE_MARKS:
        if head.startswith(mark):
            raise not_utf8(source.label, f"it starts with a {encoding} byte-order mark")
    if b"\x00" in head:
        raise not_utf8(source.label, "it holds NUL bytes, as UTF-16 text does")


def first_bad_utf8_line(path: Path) -> int | None:
    """The 1-based line holding the first byte that is not UTF-8, or None (a refusal's detail)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines_before = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_SCAN_BYTES):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                return lines_before + chunk.count(b"\n", 0, max(exc.start, 0)) + 1
            lines_before += chunk.count(b"\n")
    return None


def _undecodable(source: SourceFile) -> UnreadableSource:
    line = first_bad_utf8_line(source.path)
    return not_utf8(source.label, f"line {line}" if line else "a value is not valid UTF-8")


# CSV -------------------------------------------------------------------------------------------


def _has_data_lines(source: SourceFile) -> bool:
    """False for a file that is one line: a header alone. Refuses a first line that is too long."""
    with source.path.open("rb") as handle:
        head = handle.read(MAX_HEADER_BYTES + 1)
    line_break = _LINE_BREAK.search(head)  # "\r" alone ends lines too (classic Mac exports)
    end = line_break.start() if line_break else -1
    if end < 0:
        if len(head) > MAX_HEADER_BYTES:
            raise UnreadableSource(
                f"the first line of {source.label} is longer than {_mib(MAX_HEADER_BYTES)}: a "
                "CSV file starts with one line of column names",
                file=source.label,
            )
        return False
    # Past the sniffed bytes there is more file: let the CSV reader look at it.
    return len(head) > MAX_HEADER_BYTES or bool(head[end + 1 :].strip())


def _csv_error(source: SourceFile, error: pa.ArrowInvalid) -> UnreadableSource:
    if "UTF8" in str(error) or "UTF-8" in str(error):
        return _undecodable(source)
    return UnreadableSource(f"{source.label} cannot be read as CSV: {error}", file=source.label)


def _csv_batches(source: SourceFile) -> Iterator[pa.RecordBatch]:
    """A CSV file as batches of string columns (the header names them)."""
    _check_text_start(source)
    if not _has_data_lines(source):
        return
    read_options = pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES)
    parse_options = pa_csv.ParseOptions(
        delimiter="\t" if ".tsv" in source.path.name.lower() else ","
    )
    try:
        probe = pa_csv.open_csv(source.path, read_options=read_options, parse_options=parse_options)
        names = probe.schema.names
        probe.close()
        convert = pa_csv.ConvertOptions(
            column_types={name: pa.string() for name in names},
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        )
        reader = pa_csv.open_csv(
            source.path,
            read_options=read_options,
            parse_options=parse_options,
            convert_options=convert,
        )
        yield from reader
    except UnicodeDecodeError:
        raise _undecodable(source) from None
    except pa.ArrowInvalid as exc:
        raise _csv_error(source, exc) from None


# JSON Lines ------------------------------------------------------------------------------------


def _json_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, separators=(",", ":"))


def _json_lines(source: SourceFile) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line, decoded as UTF-8; a leading byte-order mark dropped."""
    with source.path.open("rb") as handle:
        number = 0
        while line := handle.readline(MAX_JSON_LINE_BYTES + 1):
            number += 1
            if len(line.rstrip(b"\r\n")) > MAX_JSON_LINE_BYTES:
                raise UnreadableSource(
                    f"line {number} of {source.label} is longer than "
                    f"{_mib(MAX_JSON_LINE_BYTES)}: one JSON record per line",
                    file=source.label,
                )
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                raise not_utf8(source.label, f"line {number}") from None
            yield number, text.removeprefix("\ufeff") if number == 1 else text


def _jsonl_batches(source: SourceFile) -> Iterator[pa.RecordBatch]:
    """JSON Lines as batches of string columns; a key first seen late adds a column.

    Parsed line by line because Arrow's JSON reader fixes each column's type from the first
    block and cannot say which line broke it. Blank lines are skipped.
    """
    _check_text_start(source)
    rows: list[dict[str, str | None]] = []
    names: dict[str, None] = {}
    for number, line in _json_lines(source):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            raise UnreadableSource(
                f"line {number} of {source.label} is not a JSON object: {line.strip()[:80]!r}",
                file=source.label,
                line=number,
            )
        names.update(dict.fromkeys(record))
        rows.append({key: _json_text(value) for key, value in record.items()})
        if len(rows) >= BATCH_ROWS:
            yield _string_batch(rows, list(names))
            rows = []
    if rows:
        yield _string_batch(rows, list(names))


def _string_batch(rows: list[dict[str, str | None]], names: list[str]) -> pa.RecordBatch:
    arrays = [pa.array([row.get(name) for row in rows], pa.string()) for name in names]
    return pa.RecordBatch.from_arrays(arrays, names=names)


# Parquet ---------------------------------------------------------------------------------------


def _not_parquet(source: SourceFile, error: Exception) -> UnreadableSource:
    return UnreadableSource(
        f"{source.label} is not a readable Parquet file: {error}", file=source.label
    )


def parquet_schema(source: SourceFile) -> pa.Schema:
    check_not_empty(source)
    try:
        return pq.read_schema(source.path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise _not_parquet(source, exc) from None


def _parquet_batches(source: SourceFile) -> Iterator[pa.RecordBatch]:
    try:
        yield from pq.ParquetFile(source.path).iter_batches(BATCH_ROWS)
    except (pa.ArrowInvalid, OSError) as exc:
        raise _not_parquet(source, exc) from None


def read_batches(source: SourceFile, source_format: SourceFormat) -> Iterator[pa.RecordBatch]:
    """The file's rows in batches: strings for CSV / JSON Lines, native types for Parquet.

    Raises:
        UnreadableSource: as the batches are read, when the file is not what its format says.
    """
    check_not_empty(source)
    if source_format == "csv":
        return _csv_batches(source)
    if source_format == "jsonl":
        return _jsonl_batches(source)
    return _parquet_batches(source)
