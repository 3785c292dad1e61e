"""Datasets in the object store: immutable, profiled, checksummed Parquet versions, and their URIs.

Layout (the ingest service writes it; the trainer, feature store and batch jobs read it):

    datasets/<name>/index.json                       committed versions, sha256 -> version
    datasets/<name>/<version>/data/part-00000.parquet
    datasets/<name>/<version>/dataset.json           DatasetVersion: schema, profile, checksums

A version becomes visible in two steps after its data files are stored: its `dataset.json` is
created, then the index lists it. Readers trust only versions that are both in the index and have a
`dataset.json`, so a writer that dies half-way leaves nothing a reader can see.
`dataset://name@version` (or `@latest`, or no version) names one version.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from cairn.contracts.events import ColumnSchema
from cairn.documents import DocumentStore
from cairn.errors import InvalidInput, NotFound
from cairn.store.base import ObjectStore

__all__ = [
    "DATASETS_PREFIX",
    "DATASET_NAME_PATTERN",
    "CategoryCount",
    "ColumnProfile",
    "DataFile",
    "DatasetIndex",
    "DatasetNotFound",
    "DatasetVersion",
    "DatasetVersionNotFound",
    "IndexEntry",
    "ParquetPartWriter",
    "ResolvedDataset",
    "arrow_schema",
    "column_schema_of",
    "conform_batch",
    "data_keys",
    "dataset_uri",
    "download_dataset",
    "get_dataset_index",
    "get_dataset_version",
    "list_datasets",
    "parse_dataset_uri",
    "profile_parquet",
    "resolve_dataset_uri",
    "write_dataset_version",
]

DATASETS_PREFIX = "datasets"
DATASET_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
URI_SCHEME = "dataset://"
ROWS_PER_PART = 1_000_000
TOP_CATEGORIES = 10
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)

_NAME_RE = re.compile(DATASET_NAME_PATTERN)
_URI_RE = re.compile(r"^dataset://(?P<name>[^@/]+)(?:@(?P<version>[^@/]+))?/?$")
_TIMESTAMP = pa.timestamp("us", tz="UTC")
ARROW_TYPES: dict[str, pa.DataType] = {
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "string": pa.string(),
    "timestamp": _TIMESTAMP,
}


class DatasetNotFound(NotFound):
    code = "dataset_not_found"


class DatasetVersionNotFound(NotFound):
    code = "dataset_version_not_found"


class CategoryCount(BaseModel):
    """One frequent value of a string or bool column."""

    value: str
    count: int = Field(ge=0)


class ColumnProfile(BaseModel):
    """What a column holds: missing share, range and quantiles, or its most frequent values."""

    name: str
    dtype: str
    count: int = Field(ge=0, description="Non-missing values.")
    missing: int = Field(ge=0)
    missing_share: float = Field(ge=0, le=1)
    distinct: int | None = Field(default=None, description="Approximate, strings only.")
    min: float | str | None = None
    max: float | str | None = None
    mean: float | None = None
    std: float | None = None
    quantiles: dict[str, float] = Field(default_factory=dict, description="p1 ... p99.")
    top_values: list[CategoryCount] = Field(default_factory=list)


class DataFile(BaseModel):
    """One Parquet part of a version, named relative to the version's data prefix."""

    name: str
    size: int = Field(ge=0)
    sha256: str
    row_count: int = Field(ge=0)


class DatasetVersion(BaseModel):
    """`dataset.json`: everything known about one immutable version of a dataset."""

    name: str
    version: int = Field(ge=1)
    sha256: str = Field(description="sha256 over the data files' bytes, in part order.")
    row_count: int = Field(ge=0)
    columns: list[ColumnSchema]
    profile: list[ColumnProfile]
    files: list[DataFile]
    created_at: datetime
    source: str = Field(default="", description="Where the rows came from (upload, store URI).")

    @property
    def uri(self) -> str:
        return dataset_uri(self.name, self.version)

    @property
    def location(self) -> str:
        """Store prefix of the Parquet files."""
        return f"{DATASETS_PREFIX}/{self.name}/{self.version}/data/"


class IndexEntry(BaseModel):
    version: int = Field(ge=1)
    sha256: str
    row_count: int = Field(ge=0)
    created_at: datetime


class DatasetIndex(BaseModel):
    """`index.json`: the committed versions of one dataset; `next_version` hands out numbers."""

    name: str
    next_version: int = Field(default=1, ge=1)
    versions: list[IndexEntry] = Field(default_factory=list)
    by_sha256: dict[str, int] = Field(default_factory=dict)

    @property
    def latest(self) -> IndexEntry | None:
        return max(self.versions, key=lambda entry: entry.version, default=None)


class ResolvedDataset(NamedTuple):
    """A version and the store prefix of its Parquet files."""

    version: DatasetVersion
    prefix: str


# Schema ----------------------------------------------------------------------------------------


def arrow_schema(columns: Sequence[ColumnSchema]) -> pa.Schema:
    """The Arrow schema Cairn stores for these columns."""
    return pa.schema(
        [pa.field(column.name, ARROW_TYPES[column.dtype], column.nullable) for column in columns]
    )


def column_schema_of(field: pa.Field) -> ColumnSchema:
    """The Cairn column type of an Arrow field; InvalidInput for nested and binary types."""
    kind = field.type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    dtype: str
    if pa.types.is_boolean(kind):
        dtype = "bool"
    elif pa.types.is_integer(kind):
        dtype = "int"
    elif pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        dtype = "float"
    elif pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        dtype = "timestamp"
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        dtype = "string"
    else:
        raise InvalidInput(
            f"column {field.name!r} has type {field.type}, which datasets cannot hold",
            column=field.name,
        )
    return ColumnSchema(name=field.name, dtype=dtype)


def _to_canonical(array: pa.Array | pa.ChunkedArray, dtype: str) -> pa.Array | pa.ChunkedArray:
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    target = ARROW_TYPES[dtype]
    if dtype == "timestamp" and pa.types.is_timestamp(array.type) and array.type.tz is None:
        # Naive times are taken as UTC, so every stored timestamp compares with every other.
        array = pc.cast(array, pa.timestamp("us"))
    return pc.cast(array, target)


def conform_batch(
    batch: pa.RecordBatch | pa.Table, columns: Sequence[ColumnSchema]
) -> pa.RecordBatch | pa.Table:
    """Columns in schema order, cast to their stored types (int64, float64, UTC microseconds)."""
    arrays = [_to_canonical(batch.column(column.name), column.dtype) for column in columns]
    schema = arrow_schema(columns)
    if isinstance(batch, pa.Table):
        return pa.Table.from_arrays(arrays, schema=schema)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


# Writing ---------------------------------------------------------------------------------------


class ParquetPartWriter:
    """Writes batches to `part-NNNNN.parquet` files in a local folder, a new part per N rows.

    The output is a pure function of the batches, so identical content gives identical bytes and
    the same sha256.
    """

    def __init__(self, folder: Path, schema: pa.Schema, rows_per_part: int = ROWS_PER_PART) -> None:
        self.folder = folder
        self.schema = schema
        self.rows_per_part = rows_per_part
        self.paths: list[Path] = []
        self.row_count = 0
        self._writer: pq.ParquetWriter | None = None
        self._rows_in_part = 0

    def write(self, batch: pa.RecordBatch) -> None:
        offset = 0
        while offset < batch.num_rows:
            if self._writer is None or self._rows_in_part >= self.rows_per_part:
                self._open_next()
            assert self._writer is not None
            take = min(batch.num_rows - offset, self.rows_per_part - self._rows_in_part)
            self._writer.write_batch(batch.slice(offset, take))
            self._rows_in_part += take
            self.row_count += take
            offset += take

    def close(self) -> list[Path]:
        """Finish the last part; an empty input still gives one (empty) part with the schema."""
        if self._writer is None:
            self._open_next()
        assert self._writer is not None
        self._writer.close()
        self._writer = None
        return self.paths

    def _open_next(self) -> None:
        if self._writer is not None:
            self._writer.close()
        path = self.folder / f"part-{len(self.paths):05d}.parquet"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(path, self.schema, compression="zstd")
        self.paths.append(path)
        self._rows_in_part = 0


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _describe_files(paths: Sequence[Path]) -> tuple[str, list[DataFile]]:
    """The content sha256 (over every part's bytes, in order) and each part's own checksum."""
    overall = hashlib.sha256()
    files: list[DataFile] = []
    for path in paths:
        with path.open("rb") as handle:
            part_digest = hashlib.sha256()
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                overall.update(chunk)
                part_digest.update(chunk)
        rows = pq.ParquetFile(path).metadata.num_rows
        files.append(
            DataFile(
                name=path.name,
                size=path.stat().st_size,
                sha256=part_digest.hexdigest(),
                row_count=rows,
            )
        )
    return overall.hexdigest(), files


def _index_docs(store: ObjectStore) -> DocumentStore[DatasetIndex]:
    return DocumentStore(store, DatasetIndex, DATASETS_PREFIX)


def _version_docs(store: ObjectStore) -> DocumentStore[DatasetVersion]:
    return DocumentStore(store, DatasetVersion, DATASETS_PREFIX)


def _check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise InvalidInput(
            f"invalid dataset name {name!r}: letters, digits, '-' and '_', at most 63",
            pattern=DATASET_NAME_PATTERN,
        )
    return name


def write_dataset_version(
    store: ObjectStore,
    name: str,
    source: pa.Table | pa.RecordBatchReader | Sequence[Path],
    *,
    columns: Sequence[ColumnSchema] | None = None,
    source_uri: str = "",
    work_dir: Path | None = None,
) -> tuple[DatasetVersion, bool]:
    """Store rows as a new version of a dataset, or find the version that already holds them.

    Args:
        store: the platform object store.
        name: dataset name (letters, digits, `-`, `_`).
        source: an Arrow table or batch reader, or local Parquet parts already in the stored
            types (as `ParquetPartWriter` writes them after `conform_batch`).
        columns: the schema; default: derived from the Arrow schema.
        source_uri: where the rows came from, recorded in `dataset.json`.
        work_dir: folder for temporary files (default: the system's).

    Returns:
        The version and whether it was created (False: identical content was already stored).
    """
    _check_name(name)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="cairn-dataset-") as scratch:
        if isinstance(source, pa.Table | pa.RecordBatchReader):
            columns = list(columns or [column_schema_of(field) for field in source.schema])
            writer = ParquetPartWriter(Path(scratch), arrow_schema(columns))
            batches = source.to_batches() if isinstance(source, pa.Table) else source
            for batch in batches:
                writer.write(conform_batch(batch, columns))
            paths = writer.close()
        else:
            paths = list(source)
            if columns is None:
                schema = pq.read_schema(paths[0])
                columns = [column_schema_of(field) for field in schema]
        return _commit(store, name, paths, list(columns), source_uri)


def _commit(
    store: ObjectStore,
    name: str,
    paths: Sequence[Path],
    columns: list[ColumnSchema],
    source_uri: str,
) -> tuple[DatasetVersion, bool]:
    sha256, files = _describe_files(paths)
    existing = _existing_version(store, name, sha256)
    if existing is not None:
        return existing, False
    profile = profile_parquet(paths, columns)

    def reserve(index: DatasetIndex | None) -> DatasetIndex:
        index = index or DatasetIndex(name=name)
        return index.model_copy(update={"next_version": index.next_version + 1})

    # The number is taken before any byte is written, so two writers never share a folder.
    version_number = _index_docs(store).update(f"{name}/index.json", reserve).doc.next_version - 1
    version = DatasetVersion(
        name=name,
        version=version_number,
        sha256=sha256,
        row_count=sum(item.row_count for item in files),
        columns=columns,
        profile=profile,
        files=files,
        created_at=datetime.now(UTC),
        source=source_uri,
    )
    folder = f"{DATASETS_PREFIX}/{name}/{version_number}"
    try:
        for path in paths:
            store.put_file(f"{folder}/data/{path.name}", path, content_type="application/x-parquet")
        _version_docs(store).create(f"{name}/{version_number}/dataset.json", version)
        published = _index_docs(store).update(f"{name}/index.json", _publisher(version)).doc
    except BaseException:
        _remove_folder(store, folder)
        raise
    winner = published.by_sha256[sha256]
    if winner != version_number:
        # Another writer stored the same content first; ours was never listed, so drop it.
        _remove_folder(store, folder)
        return get_dataset_version(store, name, winner), False
    return version, True


def _publisher(version: DatasetVersion) -> Any:
    def publish(index: DatasetIndex | None) -> DatasetIndex:
        index = index or DatasetIndex(name=version.name, next_version=version.version + 1)
        if version.sha256 in index.by_sha256:
            return index
        entry = IndexEntry(
            version=version.version,
            sha256=version.sha256,
            row_count=version.row_count,
            created_at=version.created_at,
        )
        return index.model_copy(
            update={
                "versions": sorted([*index.versions, entry], key=lambda item: item.version),
                "by_sha256": {**index.by_sha256, version.sha256: version.version},
            }
        )

    return publish


def _remove_folder(store: ObjectStore, folder: str) -> None:
    for info in list(store.list(folder + "/")):
        with contextlib.suppress(Exception):
            store.delete(info.key)


def _existing_version(store: ObjectStore, name: str, sha256: str) -> DatasetVersion | None:
    index = _index_docs(store).get_or_none(f"{name}/index.json")
    if index is None or sha256 not in index.doc.by_sha256:
        return None
    return get_dataset_version(store, name, index.doc.by_sha256[sha256])


# Profiling -------------------------------------------------------------------------------------


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _iso_from_epoch_us(value: Any) -> str | None:
    if value is None:
        return None
    return datetime.fromtimestamp(int(value) / 1_000_000, UTC).isoformat()


def profile_parquet(paths: Sequence[Path], columns: Sequence[ColumnSchema]) -> list[ColumnProfile]:
    """Per-column profile of Parquet files, computed by DuckDB without loading them into Python."""
    connection = duckdb.connect()
    try:
        connection.read_parquet([str(path) for path in paths]).create_view("data")
        selects = ["count(*)"]
        for column in columns:
            ident = _quote(column.name)
            selects.append(f"count({ident})")
            if column.dtype in ("int", "float"):
                quantiles = ", ".join(str(q) for q in QUANTILES)
                selects += [
                    f"min({ident})::DOUBLE",
                    f"max({ident})::DOUBLE",
                    f"avg({ident})::DOUBLE",
                    f"stddev_samp({ident})::DOUBLE",
                    f"quantile_cont({ident}, [{quantiles}])",
                ]
            elif column.dtype == "timestamp":
                selects += [f"min(epoch_us({ident}))", f"max(epoch_us({ident}))"]
            elif column.dtype == "string":
                selects.append(f"approx_count_distinct({ident})")
        row = connection.execute(f"SELECT {', '.join(selects)} FROM data").fetchone()
        assert row is not None
        values = iter(row)
        total = int(next(values))
        profiles = [_column_profile(connection, column, total, values) for column in columns]
    finally:
        connection.close()
    return profiles


def _column_profile(
    connection: duckdb.DuckDBPyConnection,
    column: ColumnSchema,
    total: int,
    values: Iterator[Any],
) -> ColumnProfile:
    count = int(next(values))
    missing = total - count
    fields: dict[str, Any] = {}
    if column.dtype in ("int", "float"):
        fields["min"], fields["max"], fields["mean"], fields["std"] = (next(values) for _ in "1234")
        # DuckDB gives NULL, not a list, for a column with no values (all null, or no rows).
        quantiles = next(values) or [None] * len(QUANTILES)
        fields["quantiles"] = {
            f"p{round(q * 100)}": float(value)
            for q, value in zip(QUANTILES, quantiles, strict=True)
            if value is not None
        }
    elif column.dtype == "timestamp":
        fields["min"] = _iso_from_epoch_us(next(values))
        fields["max"] = _iso_from_epoch_us(next(values))
    if column.dtype == "string":
        fields["distinct"] = int(next(values))
    if column.dtype in ("string", "bool"):
        ident = _quote(column.name)
        top = connection.execute(
            f"SELECT {ident}::VARCHAR AS value, count(*) AS n FROM data WHERE {ident} IS NOT NULL "
            f"GROUP BY 1 ORDER BY n DESC, value LIMIT {TOP_CATEGORIES}"
        ).fetchall()
        fields["top_values"] = [CategoryCount(value=value, count=n) for value, n in top]
    return ColumnProfile(
        name=column.name,
        dtype=column.dtype,
        count=count,
        missing=missing,
        missing_share=missing / total if total else 0.0,
        **fields,
    )


# Reading ---------------------------------------------------------------------------------------


def dataset_uri(name: str, version: int) -> str:
    return f"{URI_SCHEME}{name}@{version}"


def parse_dataset_uri(uri: str) -> tuple[str, int | None]:
    """`dataset://name@3` -> ("name", 3); `@latest` or no version -> ("name", None)."""
    match = _URI_RE.match(uri.strip())
    if match is None:
        raise InvalidInput(f"not a dataset URI: {uri!r} (expected dataset://name[@version])")
    name, version = match["name"], match["version"]
    _check_name(name)
    if version is None or version == "latest":
        return name, None
    if not version.isdigit() or int(version) < 1:
        raise InvalidInput(
            f"dataset version must be a positive number or 'latest', got {version!r}"
        )
    return name, int(version)


def get_dataset_index(store: ObjectStore, name: str) -> DatasetIndex:
    """The committed versions of a dataset; DatasetNotFound when none was ever committed."""
    index = _index_docs(store).get_or_none(f"{_check_name(name)}/index.json")
    if index is None or not index.doc.versions:
        raise DatasetNotFound(f"no dataset named {name!r}", dataset=name)
    return index.doc


def get_dataset_version(
    store: ObjectStore, name: str, version: int | None = None
) -> DatasetVersion:
    """One committed version (None: the newest); DatasetVersionNotFound if it is not committed."""
    index = get_dataset_index(store, name)
    if version is None:
        latest = index.latest
        assert latest is not None
        version = latest.version
    if all(entry.version != version for entry in index.versions):
        raise DatasetVersionNotFound(
            f"dataset {name!r} has no version {version}", dataset=name, version=version
        )
    found = _version_docs(store).get_or_none(f"{name}/{version}/dataset.json")
    if found is None:
        raise DatasetVersionNotFound(
            f"dataset {name!r} version {version} has no dataset.json", dataset=name, version=version
        )
    return found.doc


def resolve_dataset_uri(store: ObjectStore, uri: str) -> ResolvedDataset:
    """`dataset://name@version` -> the version's metadata and the store prefix of its Parquet."""
    name, version = parse_dataset_uri(uri)
    found = get_dataset_version(store, name, version)
    return ResolvedDataset(found, found.location)


def data_keys(version: DatasetVersion) -> list[str]:
    """Store keys of a version's Parquet parts, in order."""
    return [version.location + item.name for item in version.files]


def list_datasets(store: ObjectStore) -> list[DatasetIndex]:
    """Every dataset with at least one committed version, by name."""
    names: list[str] = []
    for info in store.list(f"{DATASETS_PREFIX}/"):
        parts = info.key.split("/")
        if len(parts) == 3 and parts[2] == "index.json":
            names.append(parts[1])
    found: list[DatasetIndex] = []
    for name in names:
        with contextlib.suppress(DatasetNotFound):
            found.append(get_dataset_index(store, name))
    return found


def download_dataset(store: ObjectStore, version: DatasetVersion, folder: Path) -> list[Path]:
    """Copy a version's Parquet parts into `folder`, checking each against its sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for item, key in zip(version.files, data_keys(version), strict=True):
        path = folder / item.name
        store.get_file(key, path)
        if _file_sha256(path) != item.sha256:
            raise InvalidInput(f"{key} does not match its sha256 in dataset.json", key=key)
        paths.append(path)
    return paths
