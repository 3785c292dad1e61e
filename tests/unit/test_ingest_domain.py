"""Schema inference and checking of CSV, JSON Lines and Parquet sources, and the ingest handlers."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cairn.contracts.events import ColumnSchema, DatasetRegistrationRequested
from cairn.datasets import resolve_dataset_uri
from cairn.store.memory import InMemoryObjectStore

from services.ingest import readers
from services.ingest.domain import (
    DatasetSchemaViolation,
    SourceFile,
    UnreadableSource,
    convert_sources,
)
from services.ingest.operations import ingest_upload, register_from_store


def write(path: Path, text: str) -> SourceFile:
    path.write_text(text)
    return SourceFile(path, path.name)


def schema(**dtypes: str) -> list[ColumnSchema]:
    return [ColumnSchema(name=name, dtype=dtype) for name, dtype in dtypes.items()]  # type: ignore[arg-type]


def test_csv_types_are_inferred_over_the_whole_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small blocks: the float and the bad timestamp arrive in later batches than the first.
    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", 64)
    lines = ["id,amount,when,ok,label"]
    lines += [f"{i},{i},2024-01-{i % 28 + 1:02d}T00:00:00,true,x{i}" for i in range(200)]
    lines += ["200,2.5,not a time,false,"]
    source = write(tmp_path / "a.csv", "\n".join(lines) + "\n")

    converted = convert_sources([source], "csv", None, tmp_path / "out")

    dtypes = {c.name: c.dtype for c in converted.columns}
    assert dtypes == {
        "id": "int",
        "amount": "float",
        "when": "string",
        "ok": "bool",
        "label": "string",
    }
    table = pq.read_table(converted.paths)
    assert table.num_rows == 201 and table.column("amount").to_pylist()[-1] == 2.5


def test_declared_schema_rejects_with_the_first_bad_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", 64)
    lines = ["id,age"] + [f"{i},{20 + i}" for i in range(100)]
    lines[51] = "50,fifty"  # data row 51
    lines[80] = "79,"  # a missing age further down: the report stops at the first bad batch
    source = write(tmp_path / "people.csv", "\n".join(lines) + "\n")
    declared = [
        ColumnSchema(name="id", dtype="int"),
        ColumnSchema(name="age", dtype="int", nullable=False),
    ]

    with pytest.raises(DatasetSchemaViolation) as caught:
        convert_sources([source], "csv", declared, tmp_path / "out")

    first = caught.value.violations[0]
    assert (first.row, first.column, first.value, first.expected) == (51, "age", "fifty", "int")
    assert "people.csv row 51, column 'age': 'fifty' is not int" in caught.value.message


def test_declared_schema_reports_unknown_and_missing_columns(tmp_path: Path) -> None:
    source = write(tmp_path / "a.csv", "id,extra\n1,x\n")
    declared = [
        ColumnSchema(name="id", dtype="int"),
        ColumnSchema(name="age", dtype="int", nullable=False),
    ]
    with pytest.raises(DatasetSchemaViolation) as caught:
        convert_sources([source], "csv", declared, tmp_path / "out")
    text = caught.value.message
    assert "column 'extra' is not in the declared schema" in text
    assert "declared column 'age' is not in the data" in text


def test_jsonl_keys_and_types_and_bad_lines(tmp_path: Path) -> None:
    rows = [{"id": 1, "tags": ["a"]}, {"id": 2, "price": 9.5}, {"id": 3, "price": 1}]
    good = write(tmp_path / "a.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    converted = convert_sources([good], "jsonl", None, tmp_path / "out")
    assert {c.name: c.dtype for c in converted.columns} == {
        "id": "int",
        "tags": "string",
        "price": "float",
    }
    assert pq.read_table(converted.paths).column("price").to_pylist() == [None, 9.5, 1.0]

    bad = write(tmp_path / "b.jsonl", '{"id": 1}\n[1, 2]\n')
    with pytest.raises(UnreadableSource, match=r"line 2 of b\.jsonl is not a JSON object"):
        convert_sources([bad], "jsonl", None, tmp_path / "out2")


def test_timestamps_with_and_without_zone_become_utc(tmp_path: Path) -> None:
    source = write(tmp_path / "t.csv", "t\n2024-01-01T10:00:00+02:00\n2024-01-01 09:00:00\n")
    converted = convert_sources([source], "csv", schema(t="timestamp"), tmp_path / "out")
    values = pq.read_table(converted.paths).column("t").to_pylist()
    assert [v.hour for v in values] == [8, 9] and all(v.tzinfo is not None for v in values)


def test_parquet_is_checked_against_a_declared_schema(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"id": [1, 2], "v": [1.5, 2.0]}), path)
    source = SourceFile(path, "p.parquet")
    converted = convert_sources([source], "parquet", None, tmp_path / "out")
    assert [c.dtype for c in converted.columns] == ["int", "float"]
    with pytest.raises(DatasetSchemaViolation) as caught:
        convert_sources([source], "parquet", schema(id="int", v="int"), tmp_path / "out2")
    assert (caught.value.violations[0].row, caught.value.violations[0].column) == (1, "v")


def test_reupload_of_identical_file_is_a_no_op(tmp_path: Path) -> None:
    store = InMemoryObjectStore()
    path = tmp_path / "a.csv"
    path.write_text("id,name\n1,a\n2,b\n")
    first = ingest_upload(store, "ds", path, "csv", None)
    again = ingest_upload(store, "ds", path, "csv", None)
    assert (first.created, again.created) == (True, False)
    assert again.uri == first.uri == "dataset://ds@1" and again.sha256 == first.sha256


def test_rejected_upload_leaves_nothing_in_the_store(tmp_path: Path) -> None:
    store = InMemoryObjectStore()
    path = tmp_path / "a.csv"
    path.write_text("id\n1\nx\n")
    with pytest.raises(DatasetSchemaViolation):
        ingest_upload(store, "ds", path, "csv", schema(id="int"))
    assert list(store.list("")) == []


def test_register_from_a_prefix_of_several_files(tmp_path: Path) -> None:
    store = InMemoryObjectStore()
    store.put_bytes("data/raw/clicks/part-1.jsonl", b'{"user": "a", "n": 1}\n')
    store.put_bytes(
        "data/raw/clicks/part-2.jsonl", b'{"user": "b", "n": 2}\n{"user": "c", "n": 3}\n'
    )
    store.put_bytes("data/raw/clicks/_SUCCESS", b"")
    request = DatasetRegistrationRequested(dataset_name="clicks", source_uri="data/raw/clicks")
    ingested = register_from_store(store, request)
    version, _ = resolve_dataset_uri(store, ingested.uri)
    assert version.row_count == 3 and version.source == "data/raw/clicks"
    assert {c.name: c.dtype for c in version.columns} == {"user": "string", "n": "int"}
