"""Reading registered datasets and storing training sets as datasets (through `cairn.datasets`)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from cairn.datasets import download_dataset, resolve_dataset_uri, write_dataset_version
from cairn.store.base import ObjectStore


def read_dataset(store: ObjectStore, uri: str) -> pa.Table:
    """The whole dataset version as one Arrow table (an entity table fits in memory)."""
    version = resolve_dataset_uri(store, uri).version
    with tempfile.TemporaryDirectory(prefix="cairn-fs-entity-") as scratch:
        paths = download_dataset(store, version, Path(scratch))
        return pa.concat_tables([pq.read_table(path) for path in paths])


def iter_dataset_rows(
    store: ObjectStore, uri: str, batch_rows: int
) -> Iterator[list[dict[str, Any]]]:
    """The dataset's rows as dicts, `batch_rows` at a time, one part file on disk at a time."""
    version = resolve_dataset_uri(store, uri).version
    with tempfile.TemporaryDirectory(prefix="cairn-fs-bulk-") as scratch:
        for path in download_dataset(store, version, Path(scratch)):
            for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
                yield batch.to_pylist()
            path.unlink()


def store_training_set(store: ObjectStore, name: str, table: pa.Table) -> str:
    """Store the table as a version of dataset `name`; identical content reuses its version."""
    version, _ = write_dataset_version(store, name, table, source_uri=f"featurestore:{name}")
    return version.uri
