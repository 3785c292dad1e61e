"""Reading one shard's records from its input file (ranged reads, or a local copy of a gzip file).

Text files are split on record boundaries by the "first byte" rule: a shard `[start, end)` owns
every record whose first byte lies in the range, so it skips the partial record it starts inside
and reads past `end` to finish its last one. Shards of one file thus hold each record once.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq


@dataclass(frozen=True)
class TextRecords:
    """A shard's records (without line ends), each with its byte offset in the file."""

    lines: list[bytes]
    offsets: list[int]
    header: list[str] | None


def read_text_shard(handle: BinaryIO, start: int, end: int, *, header: bool) -> TextRecords:
    """The records of `[start, end)` of a seekable text file; `header` skips and returns line 1."""
    names: list[str] | None = None
    header_end = 0
    if header:
        handle.seek(0)
        first = handle.readline()
        header_end = len(first)
        names = next(csv.reader([first.decode(errors="replace").rstrip("\r\n")]), [])
    begin = start
    if begin > 0:
        handle.seek(begin - 1)
        begin = begin - 1 + len(handle.readline())  # the partial record belongs to the shard before
    begin = max(begin, header_end)
    if begin >= end:
        return TextRecords([], [], names)
    handle.seek(begin)
    block = handle.read(end - begin)
    if not block.endswith(b"\n"):
        block += handle.readline()
    return _split(block, begin, names)


def _split(block: bytes, begin: int, names: list[str] | None) -> TextRecords:
    raw = block.split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    starts = itertools.accumulate((len(line) + 1 for line in raw[:-1]), initial=begin)
    lines: list[bytes] = []
    offsets: list[int] = []
    for line, offset in zip(raw, starts, strict=True):
        line = line.rstrip(b"\r")
        if line.strip():
            lines.append(line)
            offsets.append(offset)
    return TextRecords(lines, offsets, names)


def read_gzip_file(path: Path, *, header: bool) -> TextRecords:
    """Every record of a local gzip file: it cannot be split, so it is one shard, read whole."""
    with gzip.open(path, "rb") as packed:
        data = packed.read()
    return read_text_shard(io.BytesIO(data), 0, len(data), header=header)


def read_row_groups(source: BinaryIO, row_groups: list[int]) -> pa.Table:
    """The rows of some row groups of a Parquet file; only their column chunks are read."""
    return pq.ParquetFile(source).read_row_groups(row_groups, use_threads=False)


def row_group_layout(source: BinaryIO) -> list[tuple[int, int]]:
    """(rows, bytes) of each row group of a Parquet file, from its footer."""
    metadata = pq.ParquetFile(source).metadata
    return [
        (metadata.row_group(index).num_rows, metadata.row_group(index).total_byte_size)
        for index in range(metadata.num_row_groups)
    ]
