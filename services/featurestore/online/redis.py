"""Redis online store (`redis://host:port/db`), for production.

One hash per record under `<namespace>:<group>:<record id>` with fields t (event time, epoch µs), w
(written at), d (1 for a tombstone) and v (the values as JSON). Which write wins (by event time,
then written at) is decided inside Lua scripts, which Redis runs atomically, so concurrent writers
on any number of hosts cannot interleave between the compare and the set. `put_many` sends chunks of
records per script call, so a bulk load costs few round trips while each call stays short enough not
to stall readers.

`?expire_after_s=N` also sets a Redis key expiry at event time + N as a memory bound; reads still
apply their own `ttl_s`. Multi-key scripts need all keys on one node: plain Redis or Sentinel, not
Redis Cluster.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from itertools import islice
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import redis
from cairn.errors import ConfigError, Unavailable

from services.featurestore.online import (
    OnlineRecord,
    OnlineStore,
    check_group,
    check_record,
    from_epoch_us,
    is_expired,
    now_us,
    project,
    query_options,
    to_epoch_us,
    ttl_us,
)

# Records per script call in put_many: one call holds the server for well under a millisecond.
_WRITE_CHUNK = 500
# Commands per pipeline round trip in get_many and drop_group.
_READ_CHUNK = 1000
_FIELDS = ("t", "w", "d", "v")

# Epoch microseconds stay below 2^53, so Lua's doubles compare them exactly.
# KEYS: record keys. ARGV: 4 per key: event µs, written µs, values JSON, expire-at ms (0: none).
_PUT_SCRIPT = """
local stored = 0
for i, key in ipairs(KEYS) do
  local base = (i - 1) * 4
  local event_us = tonumber(ARGV[base + 1])
  local written_us = tonumber(ARGV[base + 2])
  local current = redis.call('HMGET', key, 't', 'w')
  local current_us = tonumber(current[1])
  if (not current_us) or current_us < event_us
     or (current_us == event_us and (tonumber(current[2]) or 0) <= written_us) then
    redis.call('HSET', key, 't', ARGV[base + 1], 'w', ARGV[base + 2], 'd', '0',
               'v', ARGV[base + 3])
    local expire_at_ms = tonumber(ARGV[base + 4])
    if expire_at_ms > 0 then
      redis.call('PEXPIREAT', key, expire_at_ms)
    end
    stored = stored + 1
  end
end
return stored
"""

# KEYS[1]: record key. ARGV: event µs, written µs, expire-at ms (0: none).
_DELETE_SCRIPT = """
local current = redis.call('HMGET', KEYS[1], 't', 'd', 'w')
local event_us = tonumber(ARGV[1])
if current[1] then
  local current_us = tonumber(current[1])
  if current_us > event_us or (current_us == event_us and
      (current[2] == '1' or (tonumber(current[3]) or 0) > tonumber(ARGV[2]))) then
    return 0
  end
end
redis.call('HSET', KEYS[1], 't', ARGV[1], 'w', ARGV[2], 'd', '1', 'v', '{}')
local expire_at_ms = tonumber(ARGV[3])
if expire_at_ms > 0 then
  redis.call('PEXPIREAT', KEYS[1], expire_at_ms)
else
  redis.call('PERSIST', KEYS[1])
end
return 1
"""


class RedisOnlineStore(OnlineStore):
    """Online store on one Redis server; thread-safe (redis-py pools connections)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        namespace: str = "cairn:online",
        expire_after_s: float | None = None,
        url: str = "redis://",
    ) -> None:
        self.url = _redact(url)
        self._client = client
        self._namespace = namespace
        self._expire_after_us = ttl_us(expire_after_s)
        self._put_script = client.register_script(_PUT_SCRIPT)
        self._delete_script = client.register_script(_DELETE_SCRIPT)

    @classmethod
    def from_url(cls, url: str) -> RedisOnlineStore:
        """`redis://[user:pass@]host:port/db?namespace=cairn:online&expire_after_s=86400`."""
        options = query_options(url)
        namespace = options.pop("namespace", "cairn:online")
        expire_after = options.pop("expire_after_s", None)
        parts = urlsplit(url)
        client_url = urlunsplit(parts._replace(query=urlencode(options)))
        try:
            client = redis.Redis.from_url(client_url)
            expire_after_s = float(expire_after) if expire_after is not None else None
        except ValueError as exc:
            raise ConfigError(f"bad Redis online store URL: {exc}") from exc
        return cls(client, namespace=namespace, expire_after_s=expire_after_s, url=url)

    def _key(self, group: str, record_id: str) -> str:
        return f"{self._namespace}:{group}:{record_id}"

    def _expire_at_ms(self, event_us: int) -> int:
        if self._expire_after_us is None:
            return 0
        # Never 0 (which means "no expiry" to the scripts); a past time deletes the key at once.
        return max(1, (event_us + self._expire_after_us) // 1000)

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
        event_us = to_epoch_us(event_time)
        args: list[int | str] = [
            event_us,
            now_us(written_at),
            _encode(values),
            self._expire_at_ms(event_us),
        ]
        with _unavailable_on_connection_error(self.url):
            return int(self._put_script(keys=[self._key(group, record_id)], args=args)) == 1

    def put_many(self, group: str, records: Iterable[OnlineRecord]) -> int:
        check_group(group)
        iterator = iter(records)
        stored = 0
        while chunk := list(islice(iterator, _WRITE_CHUNK)):
            default_written_us = now_us(None)
            keys: list[str] = []
            args: list[int | str] = []
            for record in chunk:
                check_record(record.record_id, record.values)
                event_us = to_epoch_us(record.event_time)
                written_us = (
                    default_written_us if record.written_at is None else now_us(record.written_at)
                )
                keys.append(self._key(group, record.record_id))
                args += [event_us, written_us, _encode(record.values), self._expire_at_ms(event_us)]
            with _unavailable_on_connection_error(self.url):
                stored += int(self._put_script(keys=keys, args=args))
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
        with _unavailable_on_connection_error(self.url):
            fields = self._client.hmget(self._key(group, record_id), _FIELDS)
        return _to_record(record_id, fields, features, ttl, now_us(now) if ttl is not None else 0)

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
        found: list[OnlineRecord | None] = []
        for start in range(0, len(record_ids), _READ_CHUNK):
            chunk = record_ids[start : start + _READ_CHUNK]
            # transaction=False: a plain pipeline, one round trip, no MULTI/EXEC needed for reads.
            pipeline = self._client.pipeline(transaction=False)
            for record_id in chunk:
                pipeline.hmget(self._key(group, record_id), _FIELDS)
            with _unavailable_on_connection_error(self.url):
                replies = pipeline.execute()
            found += [
                _to_record(record_id, fields, features, ttl, at_us)
                for record_id, fields in zip(chunk, replies, strict=True)
            ]
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
        event_us = to_epoch_us(event_time)
        args: list[int | str] = [event_us, now_us(written_at), self._expire_at_ms(event_us)]
        with _unavailable_on_connection_error(self.url):
            return int(self._delete_script(keys=[self._key(group, record_id)], args=args)) == 1

    def drop_group(self, group: str) -> None:
        check_group(group)
        # Group names cannot hold ':' or glob characters (check_group), so this matches one group.
        pattern = f"{self._namespace}:{group}:*"
        with _unavailable_on_connection_error(self.url):
            batch: list[bytes] = []
            for key in self._client.scan_iter(match=pattern, count=_READ_CHUNK):
                batch.append(key)
                if len(batch) >= _READ_CHUNK:
                    self._client.unlink(*batch)
                    batch.clear()
            if batch:
                self._client.unlink(*batch)

    def close(self) -> None:
        self._client.close()


def _redact(url: str) -> str:
    """The URL without its password, which must not reach logs or error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.netloc.rsplit('@', 1)[-1]}"
    return urlunsplit(parts._replace(netloc=netloc))


def _encode(values: dict[str, Any]) -> str:
    return json.dumps(values, separators=(",", ":"))


def _to_record(
    record_id: str,
    fields: Sequence[bytes | str | None],
    features: Sequence[str] | None,
    ttl: int | None,
    at_us: int,
) -> OnlineRecord | None:
    """An HMGET reply as a record, or None when missing, a tombstone or past its TTL."""
    event_raw, written_raw, deleted, payload = fields
    # decode_responses is off, so replies are bytes (str only if a caller's client decodes).
    if event_raw is None or payload is None or deleted in (b"1", "1"):
        return None
    event_us = int(event_raw)
    if is_expired(event_us, ttl, at_us):
        return None
    return OnlineRecord(
        record_id=record_id,
        event_time=from_epoch_us(event_us),
        values=project(json.loads(payload), features),
        written_at=from_epoch_us(int(written_raw)) if written_raw is not None else None,
    )


@contextmanager
def _unavailable_on_connection_error(where: str) -> Iterator[None]:
    """Turn redis-py's connection and timeout errors into Cairn's `Unavailable` (503)."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise Unavailable(f"Redis online store at {where} is unreachable: {exc}") from exc
