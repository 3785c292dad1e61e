"""The offline feature store: append-only Parquet in the object store, read with DuckDB.

Layout under `<prefix>/<group>/`:

    _group.json                                   record id and event time column names
    event_date=YYYY-MM-DD/<write-uuid>.parquet    immutable; one per append and event date

Every row carries `_write_time` (UTC, when appended) and `_deleted` (tombstones are rows with it
true), so history is never rewritten and any past state can be rebuilt; rows with the same record
id and event time are resolved by the tie rule of ties.py. Files on a `file://` store are read in
place; on any other store they are downloaded once into a local cache named by the store, key and
ETag, and reused by later queries.
"""

from __future__ import annotations

import hashlib
import io
import re
import tempfile
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from cairn.errors import Conflict, InvalidInput, NotFound, ObjectNotFound, PreconditionFailed
from cairn.store.base import ObjectInfo, ObjectStore
from pydantic import BaseModel, ConfigDict

from services.featurestore.offline.pit import (
    DELETED_COL,
    EVENT_TIME_TYPE,
    MAX_EVENT_TIME,
    MIN_EVENT_TIME,
    RESERVED_COLS,
    WRITE_TIME_COL,
    FeatureRef,
    GroupFiles,
    as_utc,
    as_utc_timestamps,
    connect,
    file_write_time,
    parquet_columns,
    point_in_time_join,
    state_as_of,
)
from services.featurestore.offline.ties import last_row_per_key, tie_ranks

_GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_PARTITION = re.compile(r"/event_date=(\d{4}-\d{2}-\d{2})/[^/]+\.parquet$")
# Fixed namespace so a batch id maps to the same file name in every process, forever.
_BATCH_NAMESPACE = uuid.UUID("6f1c2a9e-3d41-4b7a-9a58-0c4e1f6b2d17")


class GroupSpec(BaseModel):
    """What the store must know about a feature group to read it: its key columns.

    Stored as `<prefix>/<group>/_group.json`, written once.
    """

    model_config = ConfigDict(frozen=True)

    record_id_col: str
    event_time_col: str


@dataclass(frozen=True)
class _DataFile:
    key: str
    etag: str
    event_date: date


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Appended:
    """What one write stored: its keys, and the write time each event date's rows carry.

    A redelivered batch writes nothing again; its dates keep the write time of the first delivery.
    """

    keys: list[str]
    write_times: dict[date, datetime]

    def write_time_of(self, event_time: datetime) -> datetime | None:
        """The `_write_time` of the stored row with this event time (None if none was stored)."""
        return self.write_times.get(as_utc(event_time).date())


class OfflineStore:
    """Append-only feature history per group, with point-in-time training sets and time travel."""

    def __init__(
        self,
        store: ObjectStore,
        prefix: str = "offline",
        *,
        cache_dir: Path | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.store = store
        self.prefix = prefix.strip("/")
        self.cache_dir = cache_dir or Path(tempfile.gettempdir()) / "cairn-offline-cache"
        self._clock = clock
        self._specs: dict[str, GroupSpec] = {}
        self._last_write_time = datetime.min.replace(tzinfo=UTC)
        self._lock = threading.Lock()
        scheme = urlsplit(store.url).scheme
        self._reads_in_place = scheme == "file"

    # Groups ------------------------------------------------------------------------------------

    def _group_root(self, group: str) -> str:
        if not _GROUP_NAME.match(group):
            raise InvalidInput(f"invalid feature group name {group!r}")
        return f"{self.prefix}/{group}"

    def create_group(self, group: str, record_id_col: str, event_time_col: str) -> GroupSpec:
        """Register a group's key columns; repeating the same definition is a no-op.

        Raises:
            Conflict: the group exists with other key columns.
        """
        if record_id_col == event_time_col or {record_id_col, event_time_col} & RESERVED_COLS:
            raise InvalidInput(
                "record id and event time must be two distinct, non-reserved columns"
            )
        spec = GroupSpec(record_id_col=record_id_col, event_time_col=event_time_col)
        key = f"{self._group_root(group)}/_group.json"
        body = spec.model_dump_json().encode()
        try:
            self.store.put_bytes(key, body, content_type="application/json", if_none_match=True)
        except PreconditionFailed:
            existing = self.group_spec(group)
            if existing != spec:
                raise Conflict(
                    f"feature group {group!r} exists with other key columns", existing=str(existing)
                ) from None
        self._specs[group] = spec
        return spec

    def group_spec(self, group: str) -> GroupSpec:
        """The group's key columns (cached: they never change once written)."""
        if group in self._specs:
            return self._specs[group]
        try:
            body = self.store.get_bytes(f"{self._group_root(group)}/_group.json")
        except ObjectNotFound:
            raise NotFound(f"no offline feature group {group!r}", group=group) from None
        spec = GroupSpec.model_validate_json(body)
        self._specs[group] = spec
        return spec

    # Writes ------------------------------------------------------------------------------------

    def _next_write_time(self) -> datetime:
        """The clock, forced strictly increasing so later appends always win ties."""
        with self._lock:
            now = as_utc(self._clock())
            if now <= self._last_write_time:
                now = self._last_write_time + timedelta(microseconds=1)
            self._last_write_time = now
            return now

    def append(self, group: str, table: pa.Table, *, batch_id: str | None = None) -> list[str]:
        """Write `table` as new immutable files, one per event date; returns the keys written.

        Args:
            group: a group made with `create_group`.
            table: rows holding the group's record id and event time columns plus features.
            batch_id: makes the append idempotent: a batch id already written writes nothing again.
        """
        return self.write(group, table, batch_id=batch_id).keys

    def write(self, group: str, table: pa.Table, *, batch_id: str | None = None) -> Appended:
        """`append`, also saying which write time the rows carry (for the online store's ties).

        Of rows with the same record id and event time only the last is written (ties.py).
        """
        spec = self.group_spec(group)
        for name in (spec.record_id_col, spec.event_time_col):
            if name not in table.column_names:
                raise InvalidInput(f"rows for {group!r} lack the column {name!r}")
            if table.column(name).null_count:
                raise InvalidInput(f"column {name!r} of {group!r} has nulls")
        if reserved := RESERVED_COLS & set(table.column_names):
            raise InvalidInput(f"columns {sorted(reserved)} are reserved", group=group)
        if table.num_rows == 0:
            return Appended([], {})
        event_times = as_utc_timestamps(table.column(spec.event_time_col), "event time")
        bounds = pc.min_max(event_times)
        if bounds["min"].as_py() < MIN_EVENT_TIME or bounds["max"].as_py() >= MAX_EVENT_TIME:
            raise InvalidInput(
                f"event times must lie in [{MIN_EVENT_TIME.year}, {MAX_EVENT_TIME.year})",
                group=group,
            )
        table = table.set_column(
            table.column_names.index(spec.event_time_col), spec.event_time_col, event_times
        )
        table = last_row_per_key(table, spec.record_id_col, spec.event_time_col)
        write_time = self._next_write_time()
        table = table.append_column(
            WRITE_TIME_COL, pa.nulls(table.num_rows, EVENT_TIME_TYPE).fill_null(write_time)
        ).append_column(DELETED_COL, pa.nulls(table.num_rows, pa.bool_()).fill_null(False))
        return self._write_partitions(group, table, spec.event_time_col, batch_id, write_time)

    def delete(
        self, group: str, record_id: Any, event_time: datetime, *, batch_id: str | None = None
    ) -> list[str]:
        """Append a tombstone: from `event_time` on, the record has no feature values."""
        return self.write_tombstone(group, record_id, event_time, batch_id=batch_id).keys

    def write_tombstone(
        self, group: str, record_id: Any, event_time: datetime, *, batch_id: str | None = None
    ) -> Appended:
        """`delete`, also saying which write time the tombstone carries."""
        spec = self.group_spec(group)
        event_time = as_utc(event_time)
        if not MIN_EVENT_TIME <= event_time < MAX_EVENT_TIME:
            raise InvalidInput(f"event time {event_time} is out of range", group=group)
        write_time = self._next_write_time()
        tombstone = pa.table(
            {
                spec.record_id_col: [record_id],
                spec.event_time_col: pa.array([event_time], EVENT_TIME_TYPE),
                WRITE_TIME_COL: pa.array([write_time], EVENT_TIME_TYPE),
                DELETED_COL: [True],
            }
        )
        return self._write_partitions(group, tombstone, spec.event_time_col, batch_id, write_time)

    def _write_partitions(
        self,
        group: str,
        table: pa.Table,
        event_time_col: str,
        batch_id: str | None,
        write_time: datetime,
    ) -> Appended:
        """Create-only puts under deterministic keys, so a retried batch never doubles rows."""
        name = uuid.uuid5(_BATCH_NAMESPACE, f"{group}/{batch_id}") if batch_id else uuid.uuid4()
        dates = pc.cast(table.column(event_time_col), pa.date32())
        written: list[str] = []
        write_times: dict[date, datetime] = {}
        for day in pc.unique(dates).to_pylist():
            part = table.filter(pc.equal(dates, pa.scalar(day, pa.date32())))
            key = f"{self._group_root(group)}/event_date={day.isoformat()}/{name}.parquet"
            sink = io.BytesIO()
            pq.write_table(part, sink, compression="zstd")
            try:
                self.store.put_bytes(key, sink.getvalue(), if_none_match=True)
            except PreconditionFailed:
                # This batch's file for that date is already there, with its own write time.
                write_times[day] = self._stored_write_time(key, day)
                continue
            written.append(key)
            write_times[day] = write_time
        return Appended(written, write_times)

    def _stored_write_time(self, key: str, event_date: date) -> datetime:
        info = self.store.stat(key)
        return file_write_time(self._local_path(_DataFile(key, info.etag, event_date)))

    # Reads -------------------------------------------------------------------------------------

    def _data_files(self, group: str) -> list[_DataFile]:
        files = []
        for info in self.store.list(f"{self._group_root(group)}/event_date="):
            if match := _PARTITION.search(info.key):
                files.append(_DataFile(info.key, info.etag, date.fromisoformat(match.group(1))))
        return files

    def _local_path(self, info: _DataFile) -> Path:
        """A local file holding the object: in place for `file://`, else an ETag-named copy."""
        if self._reads_in_place:
            return Path(url2pathname(urlsplit(self.store.uri(info.key)).path))
        digest = hashlib.sha256(f"{self.store.url}\n{info.key}\n{info.etag}".encode()).hexdigest()
        path = self.cache_dir / digest[:2] / f"{digest}.parquet"
        if not path.exists():
            self.store.get_file(info.key, path)
        return path

    def _group_files(
        self, group: str, features: Sequence[str] | None, first: date | None, last: date | None
    ) -> GroupFiles:
        """The group's files whose event dates can matter in [first, last], as local paths."""
        spec = self.group_spec(group)
        every_file = self._data_files(group)
        selected = [
            info
            for info in every_file
            if (first is None or info.event_date >= first)
            and (last is None or info.event_date <= last)
        ]
        paths = tuple(self._local_path(info) for info in selected)
        dated = [(info.event_date, path) for info, path in zip(selected, paths, strict=True)]
        ranks = tie_ranks(dated)
        # With nothing in the window, the newest file still tells which features the group has.
        schema_paths = paths or tuple(self._local_path(info) for info in every_file[-1:])
        if not schema_paths:
            if features is None:
                raise InvalidInput(f"feature group {group!r} has no data to take features from")
            return GroupFiles(spec.record_id_col, spec.event_time_col, tuple(features), ())
        con = connect()
        try:
            names = parquet_columns(con, schema_paths)
        finally:
            con.close()
        if features is None:
            skip = {spec.record_id_col, spec.event_time_col, *RESERVED_COLS}
            features = [name for name in names if name not in skip]
        # Names the service did not define are its to refuse; here they are simply never written.
        absent = frozenset(features) - set(names)
        return GroupFiles(
            spec.record_id_col,
            spec.event_time_col,
            tuple(features),
            paths,
            absent_cols=absent,
            tie_ranks=ranks,
        )

    def build_training_set(
        self,
        entity: pa.Table,
        entity_id_col: str,
        entity_time_col: str,
        groups: Sequence[FeatureRef],
        *,
        as_of_known_time: bool = False,
    ) -> pa.Table:
        """A point-in-time correct training set: entity rows in order, plus each group's features.

        Args:
            entity: ids, timestamps and any other columns (labels), all kept.
            entity_id_col: the column matched against each group's record id.
            entity_time_col: for each row, only feature rows with event time <= this are used.
            groups: the feature groups and features to take, with per-group TTL and names.
            as_of_known_time: also ignore rows written after the entity timestamp (late data).
        """
        if entity_time_col not in entity.column_names:
            raise InvalidInput(f"entity table has no column {entity_time_col!r}")
        times = as_utc_timestamps(entity.column(entity_time_col), "entity time")
        bounds = pc.min_max(times)
        lowest, highest = bounds["min"].as_py(), bounds["max"].as_py()
        resolved: list[tuple[FeatureRef, GroupFiles]] = []
        for ref in groups:
            first = None
            if ref.ttl_s is not None and lowest is not None:
                first = (lowest - timedelta(seconds=ref.ttl_s)).date()
            last = highest.date() if highest is not None else date.min
            resolved.append((ref, self._group_files(ref.group, ref.features, first, last)))
        names = list(entity.column_names)
        names += [ref.output_name(f) for ref, files in resolved for f in files.feature_cols]
        if duplicated := sorted({name for name in names if names.count(name) > 1}):
            raise InvalidInput(f"training set would repeat the columns {duplicated}")
        return point_in_time_join(
            entity, entity_id_col, entity_time_col, resolved, as_of_known_time=as_of_known_time
        )

    def state_as_of(
        self, group: str, as_of: datetime, *, as_of_known_time: bool = False
    ) -> pa.Table:
        """Time travel: per record id, the latest live row with event time <= `as_of`.

        With `as_of_known_time`, rows written after `as_of` are ignored too: what the store knew.
        """
        moment = as_utc(as_of)
        return state_as_of(
            self._group_files(group, (), None, moment.date()),
            moment,
            as_of_known_time=as_of_known_time,
        )

    def files(self, group: str) -> list[ObjectInfo]:
        """The group's data files, in key order (for inspection and tests)."""
        return [
            info
            for info in self.store.list(f"{self._group_root(group)}/event_date=")
            if _PARTITION.search(info.key)
        ]
