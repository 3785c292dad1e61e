"""Follow one workflow across the bus: every event sharing a correlation_id, as a causal tree.

`cairn trace` reads each catalogue topic from its beginning up to the high-watermarks measured at
the start (the fetch high-watermark, since Tansu's ListOffsets undercounts), without a consumer
group, so it never commits and never takes partitions from a service. The tree building and
rendering below are pure functions of the events read.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from cairn.bus.broker import kafka_client_options
from cairn.bus.client import assign_new_partitions
from cairn.bus.lag import fetch_high_watermarks
from cairn.contracts import catalogue, load_contract_modules
from cairn.errors import Unavailable
from cairn.settings import CairnSettings

_POLL_MS = 200
_SUMMARY_WIDTH = 72
_VALUE_WIDTH = 32


@dataclass(frozen=True)
class TraceEvent:
    """One event of the chain: the envelope's ids and times, and where it sits on the bus."""

    event_id: str
    type: str
    source: str
    key: str | None
    occurred_at: datetime
    causation_id: str | None
    data: dict[str, Any]
    topic: str = ""
    partition: int = 0
    offset: int = 0


@dataclass
class TraceNode:
    """An event and the events it caused, earliest first."""

    event: TraceEvent
    children: list[TraceNode] = field(default_factory=list)


def parse_event(
    value: bytes | None,
    correlation_id: str,
    *,
    topic: str = "",
    partition: int = 0,
    offset: int = 0,
    key: str | None = None,
) -> TraceEvent | None:
    """The event in a record's value when it belongs to `correlation_id`; None otherwise.

    Any envelope-shaped JSON counts, even one whose data no longer validates against its model:
    the chain is about what happened, not about whether today's code accepts it.
    """
    # Most records belong to other workflows: skip them before parsing any JSON.
    if value is None or correlation_id.encode() not in value:
        return None
    try:
        doc = json.loads(value)
        if not isinstance(doc, dict) or doc.get("correlation_id") != correlation_id:
            return None
        causation = doc.get("causation_id")
        data = doc.get("data")
        return TraceEvent(
            event_id=str(doc["event_id"]),
            type=str(doc["type"]),
            source=str(doc.get("source", "?")),
            key=key,
            occurred_at=datetime.fromisoformat(str(doc["occurred_at"])),
            causation_id=str(causation) if causation is not None else None,
            data=data if isinstance(data, dict) else {},
            topic=topic,
            partition=partition,
            offset=offset,
        )
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, ValueError):
        return None


def _chronological(events: Iterable[TraceEvent]) -> list[TraceEvent]:
    return sorted(events, key=lambda e: (e.occurred_at, e.topic, e.partition, e.offset))


def build_tree(events: Iterable[TraceEvent]) -> list[TraceNode]:
    """Arrange events by causation_id; an event whose cause is not in the chain is a root.

    Duplicates (the same event_id read twice) count once; a causation cycle, which only a
    hand-made event can create, is broken at its earliest event so nothing is lost.
    """
    unique: dict[str, TraceEvent] = {}
    for event in _chronological(events):
        unique.setdefault(event.event_id, event)
    nodes = {event_id: TraceNode(event) for event_id, event in unique.items()}
    roots: list[TraceNode] = []
    for event_id, node in nodes.items():
        parent = node.event.causation_id
        if parent is not None and parent in nodes and parent != event_id:
            nodes[parent].children.append(node)
        else:
            roots.append(node)
    placed: set[str] = set()
    for root in roots:
        _mark(root, placed)
    for event_id, node in nodes.items():
        if event_id not in placed:
            # Reachable from no root: part of a cycle. Cut it above this (earliest) event.
            parent = node.event.causation_id
            if parent is not None:
                siblings = nodes[parent].children
                siblings[:] = [child for child in siblings if child is not node]
            roots.append(node)
            _mark(node, placed)
    roots.sort(key=lambda n: n.event.occurred_at)
    return roots


def _mark(node: TraceNode, placed: set[str]) -> None:
    stack = [node]
    while stack:
        current = stack.pop()
        placed.add(current.event.event_id)
        stack.extend(child for child in current.children if child.event.event_id not in placed)


def walk(roots: Iterable[TraceNode]) -> Iterable[tuple[int, TraceNode]]:
    """Every node with its depth, parents before children (the order the tree prints in)."""
    stack = [(0, root) for root in reversed(list(roots))]
    while stack:
        depth, node = stack.pop()
        yield depth, node
        stack.extend((depth + 1, child) for child in reversed(node.children))


def format_delta(seconds: float) -> str:
    """`+0.120s`, `+2m03.4s`, `+1h02m03s`: short enough to scan a column of them."""
    sign = "-" if seconds < 0 else "+"
    seconds = abs(seconds)
    if seconds < 60:
        return f"{sign}{seconds:.3f}s"
    if seconds < 3600:
        minutes, rest = divmod(seconds, 60)
        return f"{sign}{int(minutes)}m{rest:04.1f}s"
    hours, rest = divmod(seconds, 3600)
    minutes, rest = divmod(rest, 60)
    return f"{sign}{int(hours)}h{int(minutes):02d}m{int(rest):02d}s"


def summarize_data(data: dict[str, Any], width: int = _SUMMARY_WIDTH) -> str:
    """`name=value` for each field, nested values as their size, cut at `width` characters."""
    parts = []
    for name, value in data.items():
        if value is None:
            continue
        if isinstance(value, dict):
            text = f"{{{len(value)} fields}}"
        elif isinstance(value, list):
            text = f"[{len(value)} items]"
        elif isinstance(value, float):
            text = f"{value:.4g}"
        else:
            text = str(value)
        if len(text) > _VALUE_WIDTH:
            text = text[: _VALUE_WIDTH - 1] + "…"
        parts.append(f"{name}={text}")
    summary = ", ".join(parts)
    return summary if len(summary) <= width else summary[: width - 1] + "…"


def describe(event: TraceEvent, first_at: datetime) -> str:
    """One event on one line: type, source, key, UTC time, delta since the first event, data."""
    delta = format_delta((event.occurred_at - first_at).total_seconds())
    clock = event.occurred_at.strftime("%H:%M:%S.%f")[:-3]
    line = f"{event.type}  [{event.source}]  key={event.key}  {clock}  {delta}"
    summary = summarize_data(event.data)
    return f"{line}  {summary}" if summary else line


def render_tree(roots: list[TraceNode]) -> list[str]:
    """The chain as text lines with box-drawing branches, children under their cause."""
    events = [node.event for _, node in walk(roots)]
    if not events:
        return []
    first_at = min(event.occurred_at for event in events)
    present = {event.event_id for event in events}
    lines: list[str] = []

    def render(node: TraceNode, prefix: str, branch: str) -> None:
        text = describe(node.event, first_at)
        cause = node.event.causation_id
        if not branch and cause is not None and cause not in present:
            text += f"  (caused by {cause[:8]}, not in this chain)"
        lines.append(prefix + branch + text)
        below = prefix + ("" if not branch else "   " if branch == "└─ " else "│  ")
        for index, child in enumerate(node.children):
            last = index == len(node.children) - 1
            render(child, below, "└─ " if last else "├─ ")

    for root in roots:
        render(root, "", "")
    return lines


def chain_summary(events: list[TraceEvent]) -> str:
    """`7 events from 3 services in 2.345s (first at ... UTC)`."""
    first = min(event.occurred_at for event in events)
    last = max(event.occurred_at for event in events)
    sources = len({event.source for event in events})
    count = len({event.event_id for event in events})
    return (
        f"{count} event{'s' * (count != 1)} from {sources} source{'s' * (sources != 1)} "
        f"in {format_delta((last - first).total_seconds())[1:]} "
        f"(first at {first.isoformat()})"
    )


def event_record(event: TraceEvent, first_at: datetime, depth: int | None = None) -> dict[str, Any]:
    """One event as JSON-ready data, with its offset in seconds from the first event."""
    record: dict[str, Any] = {
        "event_id": event.event_id,
        "type": event.type,
        "source": event.source,
        "key": event.key,
        "occurred_at": event.occurred_at.isoformat(),
        "offset_s": round((event.occurred_at - first_at).total_seconds(), 6),
        "causation_id": event.causation_id,
        "topic": event.topic,
        "partition": event.partition,
        "offset": event.offset,
        "data": event.data,
    }
    if depth is not None:
        record["depth"] = depth
    return record


def chain_document(correlation_id: str, roots: list[TraceNode]) -> dict[str, Any]:
    """The whole chain as one JSON object: totals, and the tree with children nested."""
    events = [node.event for _, node in walk(roots)]
    if not events:
        return {"correlation_id": correlation_id, "events": 0, "duration_s": 0.0, "tree": []}
    first_at = min(event.occurred_at for event in events)
    last_at = max(event.occurred_at for event in events)

    def nested(node: TraceNode) -> dict[str, Any]:
        record = event_record(node.event, first_at)
        record["children"] = [nested(child) for child in node.children]
        return record

    return {
        "correlation_id": correlation_id,
        "events": len(events),
        "first_at": first_at.isoformat(),
        "last_at": last_at.isoformat(),
        "duration_s": round((last_at - first_at).total_seconds(), 6),
        "tree": [nested(root) for root in roots],
    }


class ChainReader:
    """Reads one correlation id's events: the history up to now, then (optionally) new ones.

    No consumer group: it never commits. The history stops at the high-watermarks measured when
    it starts; `follow` goes on from exactly there and picks up topics created later.
    """

    def __init__(
        self,
        settings: CairnSettings,
        correlation_id: str,
        *,
        stall_timeout_s: float = 15.0,
        topic_refresh_s: float = 1.0,
    ) -> None:
        load_contract_modules(settings.contract_modules)
        self.settings = settings
        self.correlation_id = correlation_id
        self.stall_timeout_s = stall_timeout_s
        self.topic_refresh_s = topic_refresh_s
        self.topics = list(dict.fromkeys(spec.topic for spec in catalogue().values()))
        self._seen: set[str] = set()
        self._consumer = AIOKafkaConsumer(
            **kafka_client_options(settings, client_id="cairn-trace"),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=_POLL_MS,
        )

    async def __aenter__(self) -> Self:
        try:
            await self._consumer.start()
        except KafkaError as error:
            await self._consumer.stop()
            raise Unavailable(f"cannot reach Kafka: {error!r}") from error
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._consumer.stop()

    def _keep(self, record: ConsumerRecord[bytes, bytes]) -> TraceEvent | None:
        key = record.key.decode(errors="replace") if record.key is not None else None
        event = parse_event(
            record.value,
            self.correlation_id,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=key,
        )
        if event is None or event.event_id in self._seen:
            return None
        self._seen.add(event.event_id)
        return event

    async def history(self) -> list[TraceEvent]:
        """Every event of the chain written before this call, earliest first."""
        consumer = self._consumer
        try:
            partitions = await assign_new_partitions(consumer, self.topics, self.settings)
            if not partitions:
                return []
            ends = await fetch_high_watermarks(consumer, partitions)
            await consumer.seek_to_beginning(*partitions)
            found = await self._read_until(partitions, ends)
            consumer.resume(*partitions)
            for tp in partitions:
                consumer.seek(tp, ends[tp])
        except KafkaError as error:
            raise Unavailable(f"cannot read events: {error!r}") from error
        return _chronological(found)

    async def _read_until(
        self, partitions: list[TopicPartition], ends: dict[TopicPartition, int]
    ) -> list[TraceEvent]:
        consumer = self._consumer
        pending = {tp for tp in partitions if await consumer.position(tp) < ends[tp]}
        found: list[TraceEvent] = []
        last_progress = time.monotonic()
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=_POLL_MS)
            for tp, records in batch.items():
                last_progress = time.monotonic()
                for record in records:
                    if record.offset < ends[tp] and (event := self._keep(record)) is not None:
                        found.append(event)
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    # Stop fetching a finished partition; `history` resumes it at its end.
                    consumer.pause(tp)
                    pending.discard(tp)
            if pending and time.monotonic() - last_progress > self.stall_timeout_s:
                where = ", ".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in pending))
                raise Unavailable(f"reading {where} made no progress in {self.stall_timeout_s}s")
        return found

    async def follow(self) -> AsyncIterator[TraceEvent]:
        """Events of the chain as they arrive after `history`, including on new topics."""
        consumer = self._consumer
        next_refresh = time.monotonic()
        try:
            while True:
                if time.monotonic() >= next_refresh:
                    added = await assign_new_partitions(consumer, self.topics, self.settings)
                    if added:
                        await consumer.seek_to_beginning(*added)
                    next_refresh = time.monotonic() + self.topic_refresh_s
                if not consumer.assignment():
                    await asyncio.sleep(self.topic_refresh_s)
                    continue
                batch = await consumer.getmany(timeout_ms=int(self.topic_refresh_s * 1000))
                for records in batch.values():
                    for record in records:
                        if (event := self._keep(record)) is not None:
                            yield event
        except KafkaError as error:
            raise Unavailable(f"cannot read events: {error!r}") from error
