"""Files that are not what their format says are refused with a 400 naming the file and why.

Each case was a 500 (or a misleading message) before: empty files, a 50 MB single line, Latin-1 and
UTF-16 text, a header without rows, Parquet without rows or with a column of nulls only.
"""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cairn.contracts.events import ColumnSchema
from cairn.datasets import resolve_dataset_uri
from cairn.errors import InvalidInput
from cairn.store.memory import InMemoryObjectStore

from services.ingest.domain import NoRows, SourceFormat, UnreadableSource
from services.ingest.operations import ingest_upload

FIFTY_MB = 50 * 1024 * 1024


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def refused(
    tmp_path: Path,
    body: bytes,
    source_format: SourceFormat,
    declared: list[ColumnSchema] | None = None,
) -> InvalidInput:
    """Upload `body`; return the 400 it is refused with, after checking nothing was stored."""
    store = InMemoryObjectStore()
    path = tmp_path / f"upload.{source_format}"
    path.write_bytes(body)
    with pytest.raises(InvalidInput) as caught:
        ingest_upload(store, "ds", path, source_format, declared)
    assert caught.value.http_status == 400
    assert list(store.list("")) == []
    return caught.value


@pytest.mark.parametrize("source_format", ["csv", "parquet", "jsonl"])
def test_an_empty_file_is_refused_as_empty(tmp_path: Path, source_format: SourceFormat) -> None:
    error = refused(tmp_path, b"", source_format)
    assert isinstance(error, UnreadableSource)
    assert error.message == "upload is empty (0 bytes)"


def test_a_single_50_mb_line_of_csv_is_refused_as_no_header(tmp_path: Path) -> None:
    error = refused(tmp_path, b"x" * FIFTY_MB, "csv")
    assert isinstance(error, UnreadableSource)
    assert "first line of upload is longer than 1 MiB" in error.message


def test_a_single_50_mb_json_line_is_refused_by_its_length(tmp_path: Path) -> None:
    error = refused(tmp_path, b'{"blob": "' + b"x" * FIFTY_MB + b'"}\n', "jsonl")
    assert isinstance(error, UnreadableSource)
    assert "line 1 of upload is longer than 32 MiB" in error.message


def test_latin1_csv_is_refused_as_not_utf8_naming_the_line(tmp_path: Path) -> None:
    body = "name,city\nAnna,Oslo\nJosé,Zürich\n".encode("latin-1")
    error = refused(tmp_path, body, "csv")
    assert isinstance(error, UnreadableSource)
    assert error.message.startswith("upload is not UTF-8 text (line 3)")


def test_utf16_csv_is_refused_as_not_utf8(tmp_path: Path) -> None:
    error = refused(tmp_path, "name,city\nJosé,Zürich\n".encode("utf-16"), "csv")
    assert isinstance(error, UnreadableSource)
    assert "not UTF-8 text (it starts with a UTF-16 byte-order mark)" in error.message


def test_utf8_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    store = InMemoryObjectStore()
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffname,n\nJosé,1\n".encode())
    ingested = ingest_upload(store, "ds", path, "csv", None)
    assert ingested.row_count == 1 and [c.name for c in ingested.columns] == ["name", "n"]


def test_lines_ended_by_a_carriage_return_alone_are_rows(tmp_path: Path) -> None:
    store = InMemoryObjectStore()
    path = tmp_path / "mac.csv"
    path.write_bytes(b"id,name\r1,a\r2,b\r")
    assert ingest_upload(store, "ds", path, "csv", None).row_count == 2


def test_latin1_json_lines_are_an_encoding_error_not_a_bad_record(tmp_path: Path) -> None:
    error = refused(tmp_path, '{"name": "ok"}\n{"name": "José"}\n'.encode("latin-1"), "jsonl")
    assert isinstance(error, UnreadableSource)
    assert error.message.startswith("upload is not UTF-8 text (line 2)")
    assert "JSON object" not in error.message


@pytest.mark.parametrize("body", [b"id,name\n", b"id,name", b"id,name\n\n\n", b"id,name\r"])
def test_a_header_only_csv_has_no_rows_not_no_columns(tmp_path: Path, body: bytes) -> None:
    error = refused(tmp_path, body, "csv")
    assert isinstance(error, NoRows)
    assert error.message == "upload has a header but no rows: a dataset needs at least one row"
    declared = [ColumnSchema(name="id", dtype="int"), ColumnSchema(name="name", dtype="string")]
    assert isinstance(refused(tmp_path, body, "csv", declared), NoRows)


def test_parquet_with_zero_rows_has_no_rows(tmp_path: Path) -> None:
    empty = pa.table({"id": pa.array([], pa.int64()), "v": pa.array([], pa.float64())})
    error = refused(tmp_path, parquet_bytes(empty), "parquet")
    assert isinstance(error, NoRows) and error.message.startswith("upload has no rows")


def test_bytes_that_are_not_parquet_are_refused_as_such(tmp_path: Path) -> None:
    error = refused(tmp_path, b"id,v\n1,2\n", "parquet")
    assert isinstance(error, UnreadableSource)
    assert error.message.startswith("upload is not a readable Parquet file")


def test_parquet_with_an_all_null_numeric_column_is_stored_and_profiled(tmp_path: Path) -> None:
    store = InMemoryObjectStore()
    path = tmp_path / "nulls.parquet"
    table = pa.table(
        {
            "id": [1, 2, 3],
            "score": pa.array([None, None, None], pa.float64()),
            "count": pa.array([None, None, None], pa.int64()),
        }
    )
    pq.write_table(table, path)

    ingested = ingest_upload(store, "ds", path, "parquet", None)

    version = resolve_dataset_uri(store, ingested.uri).version
    profile = {column.name: column for column in version.profile}
    assert version.row_count == 3
    for name in ("score", "count"):
        assert (profile[name].missing, profile[name].missing_share) == (3, 1.0)
        assert profile[name].quantiles == {} and profile[name].mean is None
