"""Feature store operations: plain blocking functions over the stores, for handlers and tools.

Every write goes offline first (create-only files named by a batch id, so a redelivered batch adds
nothing), then online with the offline write time, so both stores resolve equal event times alike:
the later write wins, then the later record of a batch (offline/ties.py). Newer event times win, so
replays and out-of-order records are harmless.
These functions block on I/O; async callers run the heavy ones in a thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from cairn.contracts.events import (
    FeatureGroupCreationRequested,
    TrainingSetRequested,
)
from cairn.documents import DocumentStore
from cairn.errors import Conflict, InvalidInput, NotFound, PreconditionFailed
from cairn.store.base import ObjectStore
from pydantic import BaseModel, ConfigDict

from services.featurestore import datasets_io
from services.featurestore.domain import (
    MAX_REASONS,
    FeatureGroup,
    InvalidRecord,
    RecordValidator,
    Rejection,
    ValidRecord,
    check_feature_names,
    json_value,
    offline_table,
    parse_feature_refs,
)
from services.featurestore.offline import FeatureRef, OfflineStore
from services.featurestore.online import OnlineRecord, OnlineStore

GROUPS_PREFIX = "featurestore/groups"
TRAINING_SETS_PREFIX = "featurestore/training-sets"


class TrainingSetDoc(BaseModel):
    """A built training set, at `featurestore/training-sets/<name>.json`: request and result."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    request: TrainingSetRequested
    dataset_uri: str
    row_count: int
    built_at: datetime


@dataclass
class IngestResult:
    """What one batch did: records accepted (offline and/or online), stored online, refused."""

    records_written: int = 0
    records_stored_online: int = 0
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def records_rejected(self) -> int:
        return len(self.rejections)

    def reasons(self) -> list[str]:
        """The first few rejection reasons, each naming its record's position."""
        return [f"record {r.index}: {r.reason}" for r in self.rejections[:MAX_REASONS]]

    def add(self, other: IngestResult, index_offset: int) -> None:
        self.records_written += other.records_written
        self.records_stored_online += other.records_stored_online
        self.rejections += [Rejection(r.index + index_offset, r.reason) for r in other.rejections]


class FeatureStore:
    """The service's dependencies and its one in-memory cache (groups never change once made)."""

    def __init__(self, store: ObjectStore, online: OnlineStore, offline: OfflineStore) -> None:
        self.store = store
        self.online = online
        self.offline = offline
        self.groups = DocumentStore(store, FeatureGroup, GROUPS_PREFIX)
        self.training_sets = DocumentStore(store, TrainingSetDoc, TRAINING_SETS_PREFIX)
        self._validators: dict[str, RecordValidator] = {}
        self._lock = threading.Lock()

    def validator(self, name: str) -> RecordValidator:
        """The group's validator, read from the store once; `NotFound` if there is no group."""
        validator = self._validators.get(name)
        if validator is None:
            versioned = self.groups.get_or_none(f"{name}.json")
            if versioned is None:
                raise NotFound(f"no feature group {name!r}", feature_group_name=name)
            validator = RecordValidator(versioned.doc)
            with self._lock:
                self._validators[name] = validator
        return validator

    def has_cached_group(self, name: str) -> bool:
        """Whether `group(name)` answers without touching the object store."""
        return name in self._validators

    def group(self, name: str) -> FeatureGroup:
        return self.validator(name).group


# Groups ----------------------------------------------------------------------------------------


def create_group(
    fs: FeatureStore, request: FeatureGroupCreationRequested
) -> tuple[FeatureGroup, bool]:
    """Create a group, or accept the same definition again; returns (group, newly created).

    Raises:
        Conflict: a group of that name exists with another definition.
    """
    group = FeatureGroup.from_request(request)
    key = f"{group.feature_group_name}.json"
    created = True
    try:
        fs.groups.create(key, group)
    except PreconditionFailed:
        existing = fs.groups.get(key).doc
        if not existing.same_definition(group):
            raise Conflict(
                f"feature group {group.feature_group_name!r} exists with another definition",
                feature_group_name=group.feature_group_name,
            ) from None
        group, created = existing, False
    # Also on a repeat: a crash between the document and this line must not leave it half-made.
    if group.offline_enabled:
        fs.offline.create_group(
            group.feature_group_name,
            group.record_identifier_feature_name,
            group.event_time_feature_name,
        )
    return group, created


def list_groups(fs: FeatureStore) -> list[FeatureGroup]:
    return [versioned.doc for versioned in fs.groups.list()]


# Ingestion -------------------------------------------------------------------------------------


def write_valid(
    fs: FeatureStore, group: FeatureGroup, records: Sequence[ValidRecord], batch_id: str | None
) -> int:
    """Offline append (idempotent per batch id), then online; returns how many were stored online.

    Online records carry the write time of their offline rows (a redelivered batch: the first
    delivery's), so a tie between equal event times goes the same way in both stores.
    """
    if not records:
        return 0
    appended = None
    if group.offline_enabled:
        table = offline_table(group, records)
        appended = fs.offline.write(group.feature_group_name, table, batch_id=batch_id)
    if not group.online_enabled:
        return 0
    return fs.online.put_many(
        group.feature_group_name,
        (
            OnlineRecord(
                r.record_id,
                r.event_time,
                r.values,
                appended.write_time_of(r.event_time) if appended else None,
            )
            for r in records
        ),
    )


def ingest_records(
    fs: FeatureStore, group_name: str, raws: Sequence[Any], batch_id: str
) -> IngestResult:
    """Validate a batch; write the valid records and report each invalid one with its reason."""
    validator = fs.validator(group_name)
    valid, rejected = validator.split(raws)
    stored = write_valid(fs, validator.group, valid, batch_id)
    return IngestResult(len(valid), stored, rejected)


def put_record(fs: FeatureStore, group_name: str, raw: dict[str, Any]) -> IngestResult:
    """PutRecord: one record, refused whole with its reason when invalid.

    Every PutRecord is a write of its own, even one repeating an earlier content: A, B, A at one
    event time leaves A, offline as online.
    """
    validator = fs.validator(group_name)
    record = validator.validate(raw)
    stored = write_valid(fs, validator.group, [record], None)
    return IngestResult(1, stored)


def ingest_dataset(
    fs: FeatureStore, group_name: str, dataset_uri: str, batch_id: str, batch_rows: int
) -> IngestResult:
    """Bulk-load a registered dataset in batches; rows that break the schema are counted, not fatal.

    Batch ids are derived from `batch_id` and the batch's position in the (immutable) dataset, so a
    redelivered request rewrites nothing offline.
    """
    validator = fs.validator(group_name)
    result = IngestResult()
    offset = 0
    for number, rows in enumerate(datasets_io.iter_dataset_rows(fs.store, dataset_uri, batch_rows)):
        valid, rejected = validator.split(rows)
        stored = write_valid(fs, validator.group, valid, f"{batch_id}-{number}")
        result.add(IngestResult(len(valid), stored, rejected), offset)
        offset += len(rows)
    return result


# Reads -----------------------------------------------------------------------------------------


def record_body(group_name: str, record: OnlineRecord) -> dict[str, Any]:
    return {
        "feature_group_name": group_name,
        "record_identifier": record.record_id,
        "event_time": record.event_time.isoformat(),
        "record": record.values,
    }


def get_record(
    fs: FeatureStore, group_name: str, record_id: str, features: Sequence[str] | None
) -> dict[str, Any]:
    """GetRecord from the online store; `NotFound` when missing, deleted or past the TTL."""
    group = fs.group(group_name)
    if not group.online_enabled:
        raise InvalidInput(f"feature group {group_name!r} has no online store")
    check_feature_names(group, features)
    record = fs.online.get(group_name, record_id, features=features, ttl_s=group.ttl_s)
    if record is None:
        raise NotFound(
            f"no live record {record_id!r} in {group_name!r}",
            feature_group_name=group_name,
            record_identifier=record_id,
        )
    return record_body(group_name, record)


@dataclass(frozen=True)
class BatchGetItem:
    """One group's part of a BatchGetRecord request."""

    feature_group_name: str
    record_identifiers: Sequence[str]
    feature_names: Sequence[str] | None = None


def batch_get(fs: FeatureStore, items: Iterable[BatchGetItem]) -> dict[str, Any]:
    """BatchGetRecord: found records, and the identifiers with no live record.

    Raises:
        InvalidInput: an item names a feature its group does not define.
    """
    found: list[dict[str, Any]] = []
    missing: list[dict[str, str]] = []
    for item in items:
        group = fs.group(item.feature_group_name)
        check_feature_names(group, item.feature_names)
        records = fs.online.get_many(
            group.feature_group_name,
            item.record_identifiers,
            features=item.feature_names,
            ttl_s=group.ttl_s,
        )
        for record_id, record in zip(item.record_identifiers, records, strict=True):
            if record is None:
                missing.append(
                    {"feature_group_name": group.feature_group_name, "record_identifier": record_id}
                )
            else:
                found.append(record_body(group.feature_group_name, record))
    return {"records": found, "not_found": missing}


def delete_record(fs: FeatureStore, group_name: str, record_id: str, event_time: datetime) -> bool:
    """DeleteRecord: a tombstone offline (history kept) and online; True if online took it.

    A tombstone is a write like a PutRecord: it wins over records written before it at its event
    time, and a record written after it at that time wins over it.
    """
    group = fs.group(group_name)
    written_at = None
    if group.offline_enabled:
        typed_id = fs.validator(group_name).typed_id(record_id)
        written_at = fs.offline.write_tombstone(group_name, typed_id, event_time).write_time_of(
            event_time
        )
    if group.online_enabled:
        return fs.online.delete(group_name, record_id, event_time=event_time, written_at=written_at)
    return False


def state_as_of(
    fs: FeatureStore, group_name: str, as_of: datetime, as_of_known_time: bool, limit: int
) -> dict[str, Any]:
    """Time travel: each record's latest live values with event time <= `as_of`."""
    group = fs.group(group_name)
    if not group.offline_enabled:
        raise InvalidInput(f"feature group {group_name!r} has no offline store to travel in")
    table = fs.offline.state_as_of(group_name, as_of, as_of_known_time=as_of_known_time)
    rows = table.slice(0, limit).to_pylist()
    return {
        "feature_group_name": group_name,
        "as_of": as_of.isoformat(),
        "record_count": table.num_rows,
        "records": [{name: json_value(value) for name, value in row.items()} for row in rows],
        "truncated": table.num_rows > limit,
    }


# Training sets ---------------------------------------------------------------------------------


def build_training_set(fs: FeatureStore, request: TrainingSetRequested) -> TrainingSetDoc:
    """A point-in-time correct training set, stored as a dataset; repeating a request reuses it.

    Raises:
        Conflict: a training set of that name was built from another request.
    """
    key = f"{request.training_set_name}.json"
    existing = fs.training_sets.get_or_none(key)
    if existing is not None:
        if existing.doc.request != request:
            raise Conflict(
                f"training set {request.training_set_name!r} exists from another request",
                training_set_name=request.training_set_name,
            )
        return existing.doc
    groups = {}
    for reference in request.features:
        name = reference.partition(":")[0]
        if name not in groups:
            groups[name] = fs.group(name)
            if not groups[name].offline_enabled:
                raise InvalidInput(f"feature group {name!r} has no offline store")
    refs = parse_feature_refs(request.features, groups)
    entity = datasets_io.read_dataset(fs.store, request.entity_dataset_uri)
    table = fs.offline.build_training_set(
        entity,
        request.entity_id_column,
        request.entity_time_column,
        refs,
        as_of_known_time=request.as_of_known_time,
    )
    table = typed_feature_columns(table, refs, groups)
    uri = datasets_io.store_training_set(fs.store, request.training_set_name, table)
    doc = TrainingSetDoc(
        request=request,
        dataset_uri=uri,
        row_count=table.num_rows,
        built_at=datetime.now(UTC),
    )
    try:
        fs.training_sets.create(key, doc)
    except PreconditionFailed:
        # A concurrent build of the same request won; the dataset it points to is the same.
        return fs.training_sets.get(key).doc
    return doc


def typed_feature_columns(
    table: pa.Table, refs: Sequence[FeatureRef], groups: dict[str, FeatureGroup]
) -> pa.Table:
    """Give all-null feature columns (no history yet) their declared type, so they can be stored."""
    for ref in refs:
        schema = groups[ref.group].arrow_schema()
        for feature in ref.features or ():
            name = ref.output_name(feature)
            index = table.column_names.index(name)
            if pa.types.is_null(table.column(index).type):
                column = pa.nulls(table.num_rows, schema.field(feature).type)
                table = table.set_column(index, name, column)
    return table


def describe_training_set(fs: FeatureStore, name: str) -> TrainingSetDoc:
    versioned = fs.training_sets.get_or_none(f"{name}.json")
    if versioned is None:
        raise NotFound(f"no training set {name!r}", training_set_name=name)
    return versioned.doc


__all__ = [
    "BatchGetItem",
    "FeatureStore",
    "IngestResult",
    "InvalidRecord",
    "TrainingSetDoc",
    "batch_get",
    "build_training_set",
    "create_group",
    "delete_record",
    "describe_training_set",
    "get_record",
    "ingest_dataset",
    "ingest_records",
    "list_groups",
    "put_record",
    "state_as_of",
]
