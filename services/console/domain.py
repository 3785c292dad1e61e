"""The console's pure logic: which paths may be proxied, what an event looks like on the page.

No HTTP, Kafka or settings here: the routes and the bus tail call these.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from cairn.errors import InvalidInput

# Names of data fields whose values the page never shows (a key issued, a password set).
_SECRET_FIELD = re.compile(r"secret|password|passwd|token|credential|private_key", re.IGNORECASE)
REDACTED = "[redacted]"
_SEGMENT_SAFE = "-._~!$&'()*+,;=:@"
DLQ_SUFFIX = ".dlq"


def proxied_path(path: str) -> str:
    """The path to ask the owning service for, re-quoted; InvalidInput for a traversal attempt.

    The route's `{path:path}` is already percent-decoded, so `%2e%2e` arrives as `..`; any empty,
    `.` or `..` segment (or a backslash) is refused rather than normalised.
    """
    segments = path.split("/")
    for segment in segments:
        if segment in ("", ".", "..") or "\\" in segment or "\x00" in segment:
            raise InvalidInput(f"path {path!r} is not a plain relative path", path=path)
    return "/".join(quote(segment, safe=_SEGMENT_SAFE) for segment in segments)


def redact(value: Any) -> Any:
    """A copy of `value` with every secret-looking field's value replaced."""
    if isinstance(value, dict):
        return {
            key: REDACTED if _SECRET_FIELD.search(str(key)) else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


def _text(raw: bytes | None) -> str:
    return raw.decode(errors="replace") if raw is not None else ""


def event_record(
    topic: str, value: bytes | None, headers: Iterable[tuple[str, bytes | None]] = ()
) -> dict[str, Any]:
    """One bus message as the page shows it: `{"type","topic","id","correlation_id","time",
    "source","data"}`, plus `dead_letter` and its `reason` on a dead-letter topic.

    Never fails: a message that is not an envelope (a truncated dead letter) keeps what could be
    read, with `type` "(unreadable)". Signatures are dropped and secret-looking fields redacted.
    """
    try:
        parsed = json.loads(value) if value else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        parsed = {}
    envelope = parsed if isinstance(parsed, dict) else {}
    record: dict[str, Any] = {
        "type": str(envelope.get("type") or "(unreadable)"),
        "topic": topic,
        "id": str(envelope.get("event_id") or ""),
        "correlation_id": str(envelope.get("correlation_id") or ""),
        "time": str(envelope.get("occurred_at") or ""),
        "source": str(envelope.get("source") or ""),
        "data": redact(envelope.get("data")) if isinstance(envelope.get("data"), dict) else {},
    }
    if topic.endswith(DLQ_SUFFIX):
        found = {name: _text(raw) for name, raw in headers}
        record["dead_letter"] = True
        record["reason"] = found.get("cairn-dlq-reason", "")
        record["error"] = found.get("cairn-dlq-error", "")
    return record


@dataclass(frozen=True)
class EventFilter:
    """What the page asked for: an exact type (or a `*Failed`-style suffix), a correlation id."""

    type: str = ""
    correlation_id: str = ""
    dead_letter: bool | None = None

    def __call__(self, record: dict[str, Any]) -> bool:
        if self.type:
            wanted = self.type
            kind = str(record.get("type", ""))
            if wanted.startswith("*") and not kind.endswith(wanted[1:]):
                return False
            if not wanted.startswith("*") and kind != wanted:
                return False
        if self.correlation_id and record.get("correlation_id") != self.correlation_id:
            return False
        return self.dead_letter is None or bool(record.get("dead_letter")) == self.dead_letter


class EventRing:
    """The last `size` events, oldest dropped first, each once; `recent` reads newest first.

    Once means once per topic: a dead letter carries the id of the event it copies.
    """

    def __init__(self, size: int) -> None:
        self._events: deque[dict[str, Any]] = deque()
        self._size = size
        self._ids: set[str] = set()

    def add(self, record: dict[str, Any]) -> bool:
        """Keep `record`; False when an event with its id is kept already."""
        event_id = _identity(record)
        if event_id:
            if event_id in self._ids:
                return False
            self._ids.add(event_id)
        self._events.append(record)
        if len(self._events) > self._size:
            dropped = self._events.popleft()
            self._ids.discard(_identity(dropped))
        return True

    def __len__(self) -> int:
        return len(self._events)

    def recent(self, matches: EventFilter, limit: int) -> list[dict[str, Any]]:
        """Newest first by the events' own time: replayed partitions arrive out of order."""
        newest_arrival_first = reversed(self._events)  # the tie-break: sorting is stable
        by_time = sorted(
            newest_arrival_first, key=lambda record: str(record.get("time", "")), reverse=True
        )
        return list(_take(matches, iter(by_time), limit))


def _identity(record: dict[str, Any]) -> str:
    return f"{record.get('topic')}/{record['id']}" if record.get("id") else ""


def _take(
    matches: EventFilter, records: Iterator[dict[str, Any]], limit: int
) -> Iterator[dict[str, Any]]:
    taken = 0
    for record in records:
        if taken >= limit:
            return
        if matches(record):
            taken += 1
            yield record
