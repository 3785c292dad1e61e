"""SQLite online store (`sqlite:///path.db`), the embedded default.

One WITHOUT ROWID table keyed by (group, record id). Writes are single upsert statements whose
`WHERE (event_us, written_us) >= ...` makes the ordering rule atomic even across processes; WAL mode
lets readers go on while a bulk load writes, and `put_many` commits in short chunks so other writers
interleave. Each thread gets its own connection (sqlite3 connections must not be shared mid-query),
kept until `close()`: use the store from a bounded pool of threads, not one new thread per call.
`synchronous=NORMAL` is enough here: WAL stays consistent on a crash, only the last commits before a
power loss may be lost, and those are re-sent by the at-least-once ingest path.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from cairn.errors import CairnError, ConfigError

from services.featurestore.online import (
    OnlineRecord,
    OnlineStore,
    check_group,
    check_record,
    from_epoch_us,
    is_expired,
    now_us,
    project,
    to_epoch_us,
    ttl_us,
)

# Rows per put_many transaction: big enough to amortise the commit, small enough that a concurrent
# writer waits milliseconds, not the whole load.
_WRITE_CHUNK = 2000
# Ids per `IN (...)` of get_many; well under SQLite's bound-parameter limit.
_READ_CHUNK = 500
_BUSY_TIMEOUT_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS online_records (
    group_name TEXT NOT NULL,
    record_id TEXT NOT NULL,
    event_us INTEGER NOT NULL,
    written_us INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (group_name, record_id)
) WITHOUT ROWID
"""

_UPSERT = """
INSERT INTO online_records (group_name, record_id, event_us, written_us, deleted, payload)
VALUES (?, ?, ?, ?, 0, ?)
ON CONFLICT (group_name, record_id) DO UPDATE SET
    event_us = excluded.event_us, written_us = excluded.written_us,
    deleted = 0, payload = excluded.payload
WHERE (excluded.event_us, excluded.written_us)
   >= (online_records.event_us, online_records.written_us)
"""

_TOMBSTONE = """
INSERT INTO online_records (group_name, record_id, event_us, written_us, deleted, payload)
VALUES (?, ?, ?, ?, 1, '{}')
ON CONFLICT (group_name, record_id) DO UPDATE SET
    event_us = excluded.event_us, written_us = excluded.written_us,
    deleted = 1, payload = '{}'
WHERE (excluded.event_us, excluded.written_us)
   >= (online_records.event_us, online_records.written_us)
  AND NOT (online_records.deleted = 1 AND online_records.event_us = excluded.event_us)
"""

_SELECT = (
    "SELECT record_id, event_us, written_us, deleted, payload FROM online_records"
    " WHERE group_name = ? AND record_id"
)

_SELECT_ONE = f"{_SELECT} = ?"

_Row = tuple[str, int, int, int, str]


def _encode(values: dict[str, Any]) -> str:
    return json.dumps(values, separators=(",", ":"))


class SqliteOnlineStore(OnlineStore):
    """Online store in one SQLite file in WAL mode, a connection per thread."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._closed = False
        connection = self._connection()
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(_SCHEMA)

    @classmethod
    def from_url(cls, url: str) -> SqliteOnlineStore:
        """`sqlite:///relative.db` or `sqlite:////absolute.db` (SQLAlchemy's convention)."""
        parts = urlsplit(url)
        path = unquote(parts.path)[1:]
        if parts.scheme != "sqlite" or parts.netloc or not path:
            raise ConfigError(
                f"bad SQLite URL {url!r}; use sqlite:///relative.db or sqlite:////abs"
            )
        return cls(path)

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            return connection
        if self._closed:
            raise CairnError(f"online store {self.url} is closed")
        # Autocommit (isolation_level=None): single statements commit at once; put_many opens
        # its own short transactions. check_same_thread=False only so close() can close them all.
        connection = sqlite3.connect(
            self.path,
            timeout=_BUSY_TIMEOUT_S,
            isolation_level=None,
            check_same_thread=False,
        )
        connection.execute("PRAGMA synchronous=NORMAL")
        self._local.connection = connection
        with self._connections_lock:
            self._connections.append(connection)
        return connection

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
        cursor = self._connection().execute(
            _UPSERT,
            (group, record_id, to_epoch_us(event_time), now_us(written_at), _encode(values)),
        )
        return cursor.rowcount == 1

    def put_many(self, group: str, records: Iterable[OnlineRecord]) -> int:
        check_group(group)
        connection = self._connection()
        stored = 0
        for chunk in _chunks(records, _WRITE_CHUNK):
            default_written_us = now_us(None)
            rows = []
            for record in chunk:
                check_record(record.record_id, record.values)
                written_us = (
                    default_written_us if record.written_at is None else now_us(record.written_at)
                )
                rows.append(
                    (
                        group,
                        record.record_id,
                        to_epoch_us(record.event_time),
                        written_us,
                        _encode(record.values),
                    )
                )
            # IMMEDIATE takes the write lock up front, so the chunk never fails half-way on a
            # read-to-write lock upgrade; busy_timeout makes competing writers wait their turn.
            connection.execute("BEGIN IMMEDIATE")
            try:
                stored += connection.executemany(_UPSERT, rows).rowcount
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        return stored

    def get(
        self,
        group: str,
        record_id: str,
        *,
        features: Sequence[str] | None = None,
        ttl_s: float | None = None,
        now: datetime | None = None,
    ) -> OnlineRecord | None:
        check_group(group)
        ttl = ttl_us(ttl_s)
        row: _Row | None = self._connection().execute(_SELECT_ONE, (group, record_id)).fetchone()
        if row is None:
            return None
        return _to_record(row, features, ttl, now_us(now) if ttl is not None else 0)

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
        connection = self._connection()
        by_id: dict[str, _Row] = {}
        for chunk in _chunks(dict.fromkeys(record_ids), _READ_CHUNK):
            marks = ",".join("?" * len(chunk))
            for row in connection.execute(f"{_SELECT} IN ({marks})", (group, *chunk)):
                by_id[row[0]] = row
        return [
            _to_record(by_id[record_id], features, ttl, at_us) if record_id in by_id else None
            for record_id in record_ids
        ]

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
        cursor = self._connection().execute(
            _TOMBSTONE, (group, record_id, to_epoch_us(event_time), now_us(written_at))
        )
        return cursor.rowcount == 1

    def drop_group(self, group: str) -> None:
        check_group(group)
        self._connection().execute("DELETE FROM online_records WHERE group_name = ?", (group,))

    def close(self) -> None:
        self._closed = True
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
        self._local = threading.local()


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _to_record(
    row: _Row, features: Sequence[str] | None, ttl: int | None, at_us: int
) -> OnlineRecord | None:
    """A stored row as a record, or None when it is a tombstone or past its TTL."""
    record_id, event_us, written_us, deleted, payload = row
    if deleted or is_expired(event_us, ttl, at_us):
        return None
    return OnlineRecord(
        record_id=record_id,
        event_time=from_epoch_us(event_us),
        values=project(json.loads(payload), features),
        written_at=from_epoch_us(written_us),
    )
