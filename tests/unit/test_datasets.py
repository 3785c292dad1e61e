"""Dataset layout: versions, checksums, no-op re-writes, the resolver and visibility rules."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cairn.contracts.events import ColumnSchema
from cairn.datasets import (
    DatasetNotFound,
    DatasetVersionNotFound,
    data_keys,
    download_dataset,
    list_datasets,
    parse_dataset_uri,
    resolve_dataset_uri,
    write_dataset_version,
)
from cairn.errors import InvalidInput
from cairn.store.memory import InMemoryObjectStore


def table(ids: list[int]) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(ids, pa.int32()),
            "score": [float(i) / 2 for i in ids],
            "city": ["paris" if i % 3 else "oslo" for i in ids],
        }
    )


def test_write_then_resolve_latest_and_pinned_versions(tmp_path: Path) -> None:
    store = InMemoryObjectStore()
    first, created_first = write_dataset_version(store, "sales", table([1, 2, 3]))
    second, created_second = write_dataset_version(store, "sales", table([4, 5]))

    assert (created_first, created_second) == (True, True)
    assert (first.version, second.version) == (1, 2)
    latest, prefix = resolve_dataset_uri(store, "dataset://sales@latest")
    assert latest.version == 2 and prefix == "datasets/sales/2/data/"
    assert resolve_dataset_uri(store, "dataset://sales").version.version == 2
    pinned, _ = resolve_dataset_uri(store, "dataset://sales@1")
    assert pinned.row_count == 3
    # Stored types are canonical (int32 became int64) and the rows round-trip.
    paths = download_dataset(store, pinned, tmp_path)
    read = pq.read_table(paths)
    assert read.schema.field("id").type == pa.int64()
    assert read.column("id").to_pylist() == [1, 2, 3]
    assert [c.dtype for c in pinned.columns] == ["int", "float", "string"]


def test_identical_content_is_a_no_op(tmp_path: Path) -> None:
    store = InMemoryObjectStore()
    original, _ = write_dataset_version(store, "sales", table([1, 2, 3]))
    keys_before = sorted(info.key for info in store.list(""))

    again, created = write_dataset_version(store, "sales", table([1, 2, 3]))

    assert created is False
    assert again.version == original.version and again.sha256 == original.sha256
    assert sorted(info.key for info in store.list("")) == keys_before


def test_profile_describes_numbers_strings_and_missing_values() -> None:
    store = InMemoryObjectStore()
    rows = pa.table({"x": [1.0, None, 3.0, 4.0], "tag": ["a", "b", "a", None]})
    version, _ = write_dataset_version(store, "prof", rows)
    x, tag = version.profile
    assert x.missing == 1 and x.missing_share == pytest.approx(0.25)
    assert (x.min, x.max, x.quantiles["p50"]) == (1.0, 4.0, 3.0)
    assert x.mean == pytest.approx(8 / 3)
    assert [(t.value, t.count) for t in tag.top_values] == [("a", 2), ("b", 1)]


def test_a_version_missing_from_the_index_is_not_visible() -> None:
    store = InMemoryObjectStore()
    write_dataset_version(store, "sales", table([1]))
    # A writer that died after its data files, before dataset.json and the index.
    store.put_bytes("datasets/sales/2/data/part-00000.parquet", b"half")
    with pytest.raises(DatasetVersionNotFound):
        resolve_dataset_uri(store, "dataset://sales@2")
    assert resolve_dataset_uri(store, "dataset://sales").version.version == 1


def test_resolver_errors_name_the_problem() -> None:
    store = InMemoryObjectStore()
    with pytest.raises(DatasetNotFound):
        resolve_dataset_uri(store, "dataset://nothing")
    for bad in ("s3://bucket/x", "dataset://sales@0", "dataset://sales@two", "dataset://../x"):
        with pytest.raises(InvalidInput):
            parse_dataset_uri(bad)


def test_list_and_keys_cover_committed_versions() -> None:
    store = InMemoryObjectStore()
    version, _ = write_dataset_version(
        store,
        "sales",
        table([1, 2]),
        columns=[
            ColumnSchema(name="id", dtype="int"),
            ColumnSchema(name="score", dtype="float"),
            ColumnSchema(name="city", dtype="string"),
        ],
    )
    write_dataset_version(store, "other", table([7]))
    assert [index.name for index in list_datasets(store)] == ["other", "sales"]
    assert all(store.exists(key) for key in data_keys(version))
