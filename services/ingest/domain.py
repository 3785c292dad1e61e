"""Turning CSV, JSON Lines and Parquet files into typed Parquet parts: infer or check the schema.

Text sources are read as strings in batches (readers.py) and each column is parsed into its type
with Arrow's vectorised casts; when a batch does not parse, bisection finds the offending rows, so a
rejection names the first bad rows and columns without a row-by-row pass over good data. Sources
that hold no row at all are refused with `NoRows`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from cairn.contracts.events import ColumnSchema
from cairn.datasets import ARROW_TYPES, ParquetPartWriter, arrow_schema, column_schema_of
from cairn.errors import InvalidInput

from services.ingest.readers import (
    NoRows,
    SourceFile,
    SourceFormat,
    UnreadableSource,
    parquet_schema,
    read_batches,
)

__all__ = [
    "ConvertedDataset",
    "DatasetSchemaViolation",
    "NoRows",
    "SourceFile",
    "SourceFormat",
    "UnreadableSource",
    "Violation",
    "convert_sources",
    "format_from_content_type",
    "format_from_name",
    "infer_columns",
]

MAX_VIOLATIONS = 10
# Text types tried in this order; the first that parses every value of a column wins.
_INFERRED_ORDER = ("int", "float", "bool", "timestamp")
_ZONE_SUFFIX = r"(?:[Zz]|[+-]\d{2}:?\d{2})$"

_CONTENT_TYPES: dict[str, SourceFormat] = {
    "text/csv": "csv",
    "application/csv": "csv",
    "application/x-parquet": "parquet",
    "application/vnd.apache.parquet": "parquet",
    "application/parquet": "parquet",
    "application/jsonlines": "jsonl",
    "application/jsonl": "jsonl",
    "application/x-ndjson": "jsonl",
    "application/x-jsonlines": "jsonl",
}
_SUFFIXES: dict[str, SourceFormat] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
_COMPRESSIONS = (".gz", ".bz2", ".zst", ".lz4")


@dataclass(frozen=True)
class Violation:
    """One value that breaks the declared schema (row is 1-based within its file; 0: the header)."""

    file: str
    row: int
    column: str
    value: str | None
    expected: str

    def describe(self) -> str:
        if self.expected == "present":
            return f"{self.file}: declared column {self.column!r} is not in the data"
        where = f"{self.file} row {self.row}"
        if self.expected == "declared":
            return f"{where}: column {self.column!r} is not in the declared schema"
        if self.value is None:
            return f"{where}, column {self.column!r}: missing, but the column is not nullable"
        return f"{where}, column {self.column!r}: {self.value!r} is not {self.expected}"


class DatasetSchemaViolation(InvalidInput):
    """Rows break the declared schema; `details.violations` lists the first offending values."""

    code = "schema_violation"

    def __init__(self, violations: Sequence[Violation]) -> None:
        first = list(violations)[:MAX_VIOLATIONS]
        super().__init__(
            "rows break the declared schema: " + "; ".join(item.describe() for item in first),
            violations=[item.__dict__ for item in first],
        )
        self.violations = first


@dataclass(frozen=True)
class ConvertedDataset:
    paths: list[Path]
    columns: list[ColumnSchema]
    row_count: int


def format_from_content_type(content_type: str | None) -> SourceFormat | None:
    """`text/csv; charset=utf-8` -> "csv"; None for types that name no format."""
    if not content_type:
        return None
    return _CONTENT_TYPES.get(content_type.split(";")[0].strip().lower())


def format_from_name(name: str) -> SourceFormat | None:
    """The format a file name's suffix names (`.csv.gz` counts as CSV)."""
    lowered = name.lower()
    for compression in _COMPRESSIONS:
        lowered = lowered.removesuffix(compression)
    return _SUFFIXES.get(Path(lowered).suffix)


# Parsing a column into its type ----------------------------------------------------------------


def _parse_timestamps(strings: pa.Array) -> pa.Array:
    """ISO-8601 strings with or without a zone; times without one are taken as UTC."""
    with_zone = pc.match_substring_regex(strings, _ZONE_SUFFIX)
    aware = pc.cast(pc.if_else(with_zone, strings, None), ARROW_TYPES["timestamp"])
    naive = pc.cast(pc.if_else(with_zone, None, strings), pa.timestamp("us"))
    return pc.if_else(with_zone, aware, pc.cast(naive, ARROW_TYPES["timestamp"]))


def cast_column(array: pa.Array, dtype: str) -> pa.Array:
    """A column in its stored type; Arrow raises ArrowInvalid when some value does not convert."""
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        if dtype == "timestamp" and pa.types.is_timestamp(array.type) and array.type.tz is None:
            array = pc.cast(array, pa.timestamp("us"))
        return pc.cast(array, ARROW_TYPES[dtype])
    if dtype == "string":
        return pc.cast(array, pa.string())
    trimmed = pc.utf8_trim_whitespace(array)
    if dtype == "timestamp":
        return _parse_timestamps(trimmed)
    if dtype == "bool":
        trimmed = pc.utf8_lower(trimmed)
    return pc.cast(trimmed, ARROW_TYPES[dtype])


def _converts(array: pa.Array, dtype: str) -> bool:
    try:
        cast_column(array, dtype)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return False
    return True


def bad_positions(array: pa.Array, dtype: str, limit: int = MAX_VIOLATIONS) -> list[int]:
    """Positions of the first `limit` values that do not convert, found by bisection."""
    if limit <= 0 or _converts(array, dtype):
        return []
    if len(array) == 1:
        return [0]
    half = len(array) // 2
    left = bad_positions(array.slice(0, half), dtype, limit)
    right = bad_positions(array.slice(half), dtype, limit - len(left))
    return left + [half + position for position in right]


# Inferring and checking ------------------------------------------------------------------------


def infer_columns(sources: Sequence[SourceFile], source_format: SourceFormat) -> list[ColumnSchema]:
    """The narrowest type every value of each column parses as (strings when nothing narrower).

    Raises:
        NoRows: text sources that hold no row (a header alone, blank lines).
    """
    if source_format == "parquet":
        return [column_schema_of(field) for field in parquet_schema(sources[0])]
    candidates: dict[str, list[str]] = {}
    seen_values: set[str] = set()
    rows = 0
    for source in sources:
        for batch in read_batches(source, source_format):
            rows += batch.num_rows
            for name, array in zip(batch.schema.names, batch.columns, strict=True):
                remaining = candidates.setdefault(name, list(_INFERRED_ORDER))
                if array.null_count == len(array):
                    continue
                seen_values.add(name)
                candidates[name] = [dtype for dtype in remaining if _converts(array, dtype)]
    if rows == 0:
        raise no_rows(sources, source_format)
    return [
        ColumnSchema(
            name=name,
            dtype=remaining[0] if remaining and name in seen_values else "string",
        )
        for name, remaining in candidates.items()
    ]


def no_rows(sources: Sequence[SourceFile], source_format: SourceFormat) -> NoRows:
    """The refusal of sources without a single row, in the words of their format."""
    holds = {"csv": "a header but no rows", "jsonl": "no rows (no records)", "parquet": "no rows"}
    where = sources[0].label if len(sources) == 1 else f"each of the {len(sources)} files"
    return NoRows(
        f"{where} has {holds[source_format]}: a dataset needs at least one row",
        files=[source.label for source in sources[:10]],
    )


def _batch_violations(
    batch: pa.RecordBatch, columns: Sequence[ColumnSchema], label: str, first_row: int
) -> list[Violation]:
    violations: list[Violation] = []
    present = set(batch.schema.names)
    declared = {column.name for column in columns}
    for name in batch.schema.names:
        if name not in declared:
            non_null = pc.indices_nonzero(pc.is_valid(batch.column(name))).to_pylist()
            row = first_row + non_null[0] if non_null else 0
            violations.append(Violation(label, row, name, None, "declared"))
    for column in columns:
        if column.name not in present:
            if not column.nullable:
                violations.append(Violation(label, 0, column.name, None, "present"))
            continue
        array = batch.column(column.name)
        positions = bad_positions(array, column.dtype)
        if not column.nullable:
            positions += pc.indices_nonzero(pc.is_null(array)).to_pylist()[:MAX_VIOLATIONS]
        for position in sorted(set(positions))[:MAX_VIOLATIONS]:
            value = array[position].as_py()
            expected = column.dtype if value is not None else "non-null"
            text = value if value is None or isinstance(value, str) else str(value)
            violations.append(Violation(label, first_row + position, column.name, text, expected))
    return violations


def _fill_missing(batch: pa.RecordBatch, columns: Sequence[ColumnSchema]) -> pa.RecordBatch:
    """Nullable columns a batch lacks (a JSON key seen only later) become all-null columns."""
    arrays = [
        batch.column(column.name)
        if column.name in batch.schema.names
        else pa.nulls(batch.num_rows, pa.string())
        for column in columns
    ]
    return pa.RecordBatch.from_arrays(arrays, names=[column.name for column in columns])


def convert_sources(
    sources: Sequence[SourceFile],
    source_format: SourceFormat,
    declared: Sequence[ColumnSchema] | None,
    out_dir: Path,
) -> ConvertedDataset:
    """Check (or infer, then apply) the schema and write the rows as typed Parquet parts.

    Raises:
        DatasetSchemaViolation: the first batch holding bad values, with up to 10 of them.
        UnreadableSource: a file is not what its format says (empty, not UTF-8, not Parquet).
        NoRows: no file holds a row.
    """
    if not sources:
        raise InvalidInput("no files to ingest")
    columns = list(declared) if declared else infer_columns(sources, source_format)
    if not columns:
        raise InvalidInput("the data has no columns")
    _check_unique(columns)
    writer = ParquetPartWriter(out_dir, arrow_schema(columns))
    for source in sources:
        first_row = 1
        for batch in read_batches(source, source_format):
            violations = _batch_violations(batch, columns, source.label, first_row)
            if violations:
                violations.sort(key=lambda item: item.row)
                raise DatasetSchemaViolation(violations)
            full = _fill_missing(batch, columns)
            arrays = [cast_column(full.column(column.name), column.dtype) for column in columns]
            writer.write(pa.RecordBatch.from_arrays(arrays, schema=writer.schema))
            first_row += batch.num_rows
    paths = writer.close()
    if writer.row_count == 0:
        raise no_rows(sources, source_format)
    return ConvertedDataset(paths, columns, writer.row_count)


def _check_unique(columns: Sequence[ColumnSchema]) -> None:
    names = [column.name for column in columns]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise InvalidInput(f"duplicate column names: {', '.join(duplicated)}", columns=duplicated)
