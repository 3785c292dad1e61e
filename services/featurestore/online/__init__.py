"""The online feature store port: the latest record per identifier, newest event time wins.

Adapters, chosen by URL in `open_online_store`:
    memory://                 process memory (tests)
    sqlite:///rel/path.db     embedded default (SQLAlchemy-style: four slashes for an absolute path)
    redis://host:port/db      production (`?namespace=...&expire_after_s=...`)

Rules every adapter keeps (tests/support/online_contract.py checks them on each):
- A write is stored only if its event time is strictly newer than what is there, atomically, so an
  older or equal event never overwrites a newer one, whatever the order writers arrive in.
- `delete` writes a tombstone carrying its event time: a late put older than the delete is refused,
  so a deleted record is never resurrected by a replayed event.
- TTL is applied on read, relative to the record's event time.
- Naive datetimes are taken as UTC; times are kept to the microsecond.
"""

from __future__ import annotations

import abc
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cairn.errors import ConfigError, InvalidInput

__all__ = [
    "OnlineRecord",
    "OnlineStore",
    "from_epoch_us",
    "open_online_store",
    "to_epoch_us",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
# SageMaker's FeatureGroupName pattern; also keeps group names safe inside Redis keys and patterns.
_GROUP_NAME = re.compile(r"^[a-zA-Z0-9]([-_]*[a-zA-Z0-9]){0,63}$")
_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True, slots=True)
class OnlineRecord:
    """One record as the online store holds it: the feature values at `event_time`."""

    record_id: str
    event_time: datetime
    values: dict[str, Any]
    written_at: datetime | None = None


def to_epoch_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch; naive datetimes are taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _ONE_US


def from_epoch_us(epoch_us: int) -> datetime:
    """The UTC datetime for microseconds since the Unix epoch."""
    return _EPOCH + timedelta(microseconds=epoch_us)


def check_group(group: str) -> str:
    """Reject group names outside SageMaker's pattern (they end up in table rows and Redis keys)."""
    if not isinstance(group, str) or not _GROUP_NAME.match(group):
        raise InvalidInput(f"invalid feature group name {group!r}")
    return group


def check_record(record_id: str, values: dict[str, Any]) -> None:
    """Reject an empty record id or values that are not a flat map of JSON scalars."""
    if not isinstance(record_id, str) or not record_id:
        raise InvalidInput(f"invalid record identifier {record_id!r}")
    if not isinstance(values, dict):
        raise InvalidInput(f"values of record {record_id!r} must be a dict")
    for name, value in values.items():
        if not isinstance(name, str) or not isinstance(value, _SCALARS):
            raise InvalidInput(
                f"feature {name!r} of record {record_id!r} is not a JSON scalar",
                feature=str(name),
            )


def ttl_us(ttl_s: float | None) -> int | None:
    """A TTL in whole microseconds (None: never expires)."""
    if ttl_s is None:
        return None
    if math.isnan(ttl_s) or ttl_s < 0:
        raise InvalidInput(f"ttl_s must be >= 0, got {ttl_s!r}")
    return round(ttl_s * 1_000_000)


def now_us(now: datetime | None) -> int:
    """`now` (default: the current time) in microseconds since the epoch."""
    return to_epoch_us(now if now is not None else datetime.now(UTC))


def is_expired(event_us: int, ttl: int | None, at_us: int) -> bool:
    """Whether a record at `event_us` is past its TTL at `at_us` (it expires at event + ttl)."""
    return ttl is not None and at_us >= event_us + ttl


def project(values: dict[str, Any], features: Sequence[str] | None) -> dict[str, Any]:
    """Only the requested features that the record has (SageMaker's GetRecord FeatureNames)."""
    if features is None:
        return values
    return {name: values[name] for name in features if name in values}


class OnlineStore(abc.ABC):
    """Port: latest record per (group, record id) by event time; GetRecord / BatchGet / Delete."""

    url: str

    @abc.abstractmethod
    def put(
        self,
        group: str,
        record_id: str,
        event_time: datetime,
        values: dict[str, Any],
        *,
        written_at: datetime | None = None,
    ) -> bool:
        """Store a record unless an equal-or-newer event (or tombstone) is already there.

        Args:
            group: feature group name.
            record_id: value of the group's record identifier feature.
            event_time: value of the group's event-time feature; decides which write wins.
            values: feature name -> JSON scalar; replaces the whole previous record.
            written_at: when the write happened (default: now); returned on reads.

        Returns:
            True if stored, False if refused because the stored event time is equal or newer.
        """

    @abc.abstractmethod
    def put_many(self, group: str, records: Iterable[OnlineRecord]) -> int:
        """Bulk `put` with the same newer-wins rule per record; returns how many were stored."""

    @abc.abstractmethod
    def get(
        self,
        group: str,
        record_id: str,
        *,
        features: Sequence[str] | None = None,
        ttl_s: float | None = None,
        now: datetime | None = None,
    ) -> OnlineRecord | None:
        """GetRecord: the latest live record, or None if missing, deleted or expired.

        Args:
            group: feature group name.
            record_id: record identifier.
            features: only these features (those the record has); None: all.
            ttl_s: expire records whose event time is `ttl_s` or more before `now`.
            now: the reference time for the TTL (default: the current time).
        """

    @abc.abstractmethod
    def get_many(
        self,
        group: str,
        record_ids: Sequence[str],
        *,
        features: Sequence[str] | None = None,
        ttl_s: float | None = None,
        now: datetime | None = None,
    ) -> list[OnlineRecord | None]:
        """BatchGetRecord: one entry per requested id, in order; None where `get` gives None."""

    @abc.abstractmethod
    def delete(self, group: str, record_id: str, *, event_time: datetime) -> bool:
        """DeleteRecord: write a tombstone at `event_time` so older late writes stay refused.

        Returns:
            True if the tombstone took effect; False if a newer record or tombstone (or a
            tombstone at the same time) is already there.
        """

    @abc.abstractmethod
    def drop_group(self, group: str) -> None:
        """Remove every record and tombstone of a feature group."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""

    def __enter__(self) -> OnlineStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_online_store(url: str) -> OnlineStore:
    """Open the adapter named by `url` (`memory://`, `sqlite:///path.db`, `redis://host:port/db`)."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from services.featurestore.online.memory import MemoryOnlineStore

        return MemoryOnlineStore()
    if scheme == "sqlite":
        from services.featurestore.online.sqlite import SqliteOnlineStore

        return SqliteOnlineStore.from_url(url)
    if scheme in ("redis", "rediss", "unix"):
        from services.featurestore.online.redis import RedisOnlineStore

        return RedisOnlineStore.from_url(url)
    raise ConfigError(f"unsupported online store URL {url!r} (memory://, sqlite://, redis://)")


def query_options(url: str) -> dict[str, str]:
    """The last value of each query parameter of `url`."""
    return {key: values[-1] for key, values in parse_qs(urlsplit(url).query).items()}
