"""In-process online store (`memory://`): the reference adapter for unit tests, lost on exit."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from datetime import datetime
from itertools import islice
from typing import Any, NamedTuple

from services.featurestore.online import (
    OnlineRecord,
    OnlineStore,
    check_group,
    check_record,
    from_epoch_us,
    is_expired,
    now_us,
    project,
    supersedes,
    to_epoch_us,
    ttl_us,
)

# Records applied per lock hold in put_many, so readers get the lock between chunks.
_CHUNK = 1000


class _Row(NamedTuple):
    event_us: int
    written_us: int
    deleted: bool
    values: dict[str, Any]


class MemoryOnlineStore(OnlineStore):
    """Dict of rows behind one lock; each write compares event times under that lock."""

    def __init__(self) -> None:
        self.url = "memory://"
        self._rows: dict[tuple[str, str], _Row] = {}
        self._lock = threading.Lock()

    def put(
        self,
        group: str,
        record_id: str,
        event_time: datetime,
        values: dict[str, Any],
        *,
        written_at: datetime | None = None,
    ) -> bool:
        check_group(group)
        check_record(record_id, values)
        row = _Row(to_epoch_us(event_time), now_us(written_at), False, dict(values))
        with self._lock:
            return self._apply(group, record_id, row)

    def put_many(self, group: str, records: Iterable[OnlineRecord]) -> int:
        check_group(group)
        stored = 0
        iterator = iter(records)
        while chunk := list(islice(iterator, _CHUNK)):
            rows = []
            for record in chunk:
                check_record(record.record_id, record.values)
                row = _Row(
                    to_epoch_us(record.event_time),
                    now_us(record.written_at),
                    False,
                    dict(record.values),
                )
                rows.append((record.record_id, row))
            with self._lock:
                stored += sum(self._apply(group, record_id, row) for record_id, row in rows)
        return stored

    def _apply(self, group: str, record_id: str, row: _Row) -> bool:
        """Store `row` unless the current one is later; the caller holds the lock."""
        current = self._rows.get((group, record_id))
        if current is not None:
            if not supersedes(
                (row.event_us, row.written_us), (current.event_us, current.written_us)
            ):
                return False
            if row.deleted and current.deleted and row.event_us == current.event_us:
                return False  # already deleted at that event time: nothing changes
        self._rows[(group, record_id)] = row
        return True

    def get(
        self,
        group: str,
        record_id: str,
        *,
        features: Sequence[str] | None = None,
        ttl_s: float | None = None,
        now: datetime | None = None,
    ) -> OnlineRecord | None:
        return self.get_many(group, [record_id], features=features, ttl_s=ttl_s, now=now)[0]

    def get_many(
        self,
        group: str,
        record_ids: Sequence[str],
        *,
        features: Sequence[str] | None = None,
        ttl_s: float | None = None,
        now: datetime | None = None,
    ) -> list[OnlineRecord | None]:
        check_group(group)
        ttl, at_us = ttl_us(ttl_s), now_us(now)
        with self._lock:
            rows = [self._rows.get((group, record_id)) for record_id in record_ids]
        found: list[OnlineRecord | None] = []
        for record_id, row in zip(record_ids, rows, strict=True):
            if row is None or row.deleted or is_expired(row.event_us, ttl, at_us):
                found.append(None)
                continue
            found.append(
                OnlineRecord(
                    record_id=record_id,
                    event_time=from_epoch_us(row.event_us),
                    values=dict(project(row.values, features)),
                    written_at=from_epoch_us(row.written_us),
                )
            )
        return found

    def delete(
        self,
        group: str,
        record_id: str,
        *,
        event_time: datetime,
        written_at: datetime | None = None,
    ) -> bool:
        check_group(group)
        check_record(record_id, {})
        row = _Row(to_epoch_us(event_time), now_us(written_at), True, {})
        with self._lock:
            return self._apply(group, record_id, row)

    def drop_group(self, group: str) -> None:
        check_group(group)
        with self._lock:
            for key in [key for key in self._rows if key[0] == group]:
                del self._rows[key]

    def close(self) -> None:
        with self._lock:
            self._rows.clear()
