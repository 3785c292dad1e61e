"""Blocking ingest work: a file or a store prefix in, a committed dataset version out."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
from cairn.contracts.events import ColumnSchema, DatasetIngested, DatasetRegistrationRequested
from cairn.datasets import DatasetVersion, write_dataset_version
from cairn.errors import InvalidInput
from cairn.namespaces import confine
from cairn.store.base import ObjectStore

from services.ingest.domain import (
    SourceFile,
    SourceFormat,
    UnreadableSource,
    convert_sources,
    format_from_name,
)

UPLOAD_LABEL = "upload"


def ingested_event(version: DatasetVersion, created: bool) -> DatasetIngested:
    return DatasetIngested(
        dataset_name=version.name,
        version=version.version,
        uri=version.uri,
        location=version.location,
        sha256=version.sha256,
        row_count=version.row_count,
        columns=version.columns,
        created=created,
    )


def ingest_files(
    store: ObjectStore,
    dataset_name: str,
    sources: Sequence[SourceFile],
    source_format: SourceFormat,
    declared_schema: Sequence[ColumnSchema] | None,
    *,
    source_uri: str,
    work_dir: Path | None = None,
) -> DatasetIngested:
    """Convert local files to typed Parquet and commit them as a version (a no-op if stored)."""
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="cairn-ingest-") as scratch:
        try:
            converted = convert_sources(sources, source_format, declared_schema, Path(scratch))
        except pa.ArrowException as exc:
            # The readers name the usual problems; anything else Arrow refuses is the data's too.
            raise UnreadableSource(
                f"{source_uri}: cannot be read as {source_format}: {exc}"
            ) from exc
        version, created = write_dataset_version(
            store,
            dataset_name,
            converted.paths,
            columns=converted.columns,
            source_uri=source_uri,
            work_dir=work_dir,
        )
    return ingested_event(version, created)


def ingest_upload(
    store: ObjectStore,
    dataset_name: str,
    path: Path,
    source_format: SourceFormat,
    declared_schema: Sequence[ColumnSchema] | None,
    *,
    work_dir: Path | None = None,
) -> DatasetIngested:
    """An uploaded file, already spooled to `path`, as a dataset version."""
    return ingest_files(
        store,
        dataset_name,
        [SourceFile(path, UPLOAD_LABEL)],
        source_format,
        declared_schema,
        source_uri=UPLOAD_LABEL,
        work_dir=work_dir,
    )


def _source_keys(
    store: ObjectStore, prefix: str, source_format: SourceFormat | None
) -> tuple[list[str], SourceFormat]:
    if not prefix.endswith("/") and store.exists(prefix):
        keys = [prefix]
    else:
        folder = prefix.rstrip("/") + "/"
        keys = [
            info.key
            for info in store.list(folder)
            # Marker and hidden files (_SUCCESS, .crc) are not data.
            if not info.key.rsplit("/", 1)[-1].startswith(("_", "."))
        ]
    formats = {key: format_from_name(key) for key in keys}
    chosen = source_format or next((fmt for fmt in formats.values() if fmt), None)
    if chosen is None:
        raise InvalidInput(f"no CSV, Parquet or JSON Lines objects under {prefix!r}")
    keys = [key for key in keys if formats[key] in (chosen, None)]
    if not keys:
        raise InvalidInput(f"no {chosen} objects under {prefix!r}")
    return keys, chosen


def register_from_store(
    store: ObjectStore, request: DatasetRegistrationRequested, *, work_dir: Path | None = None
) -> DatasetIngested:
    """Ingest every data object under the request's store prefix (or the one key it names).

    Raises:
        InvalidInput: the source lies outside the user namespaces, holds no data, or breaks the
            declared schema.
    """
    prefix = confine(request.source_uri, field="source_uri", store=store)
    keys, source_format = _source_keys(store, prefix, request.format)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="cairn-register-") as scratch:
        sources: list[SourceFile] = []
        for number, key in enumerate(keys):
            path = Path(scratch) / f"{number:05d}-{key.rsplit('/', 1)[-1]}"
            store.get_file(key, path)
            sources.append(SourceFile(path, key))
        return ingest_files(
            store,
            request.dataset_name,
            sources,
            source_format,
            request.declared_schema,
            source_uri=request.source_uri,
            work_dir=work_dir,
        )
