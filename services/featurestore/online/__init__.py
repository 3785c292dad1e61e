"""The online feature store port: the latest record per identifier, by event time then write.

Adapters, chosen by URL in `open_online_store`:
    memory://                 process memory (tests)
    sqlite:///rel/path.db     embedded default (SQLAlchemy-style: four slashes for an absolute path)
    redis://host:port/db      production (`?namespace=...&expire_after_s=...`)

Rules every adapter keeps (tests/support/online_contract.py checks them on each):
- Writes are ordered by (event time, written_at); a write is stored unless what is there is later
  in that order, atomically, so an older event never overwrites a newer one whatever the order
  writers arrive in. For an equal event time the later write wins, and in `put_many` the later
  record of the batch (the tie rule of `services/featurestore/offline/ties.py`, so the online and
  offline stores agree). The feature store passes the offline write time as `written_at`.
- `delete` writes a tombstone carrying its event time: a late put older than the delete is refused,
  so a deleted record is never resurrected by a replayed event; a tombstone is a write, so a put
  at the same event time written after it wins.
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


def supersedes(write: tuple[int, int], current: tuple[int, int]) -> bool:
    """Whether a write at (event µs, written µs) replaces the stored one: not earlier in that order.

    An equal pair replaces too: of two records in one batch (same `written_at`), the later wins.
    """
    return write >= current


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
        """Store a record unless a later one (or tombstone) is there: newer event, or later write.

        Args:
            group: feature group name.
            record_id: value of the group's record identifier feature.
            event_time: value of the group's event-time feature; decides which write wins.
            values: feature name -> JSON scalar; replaces the whole previous record.
            written_at: when the write happened (default: now); breaks event-time ties and is
                returned on reads.

        Returns:
            True if stored, False if refused because the stored (event time, written_at) is later.
        """

    @abc.abstractmethod
    def put_many(self, group: str, records: Iterable[OnlineRecord]) -> int:
        """Bulk `put` with the same rule per record, in order; returns how many were stored."""

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
    def delete(
        self,
        group: str,
        record_id: str,
        *,
        event_time: datetime,
        written_at: datetime | None = None,
    ) -> bool:
        """DeleteRecord: write a tombstone at `event_time` so older late writes stay refused.

        Returns:
            True if the tombstone took effect; False if a later record or tombstone (or a
            tombstone at the same event time) is already there.
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
