"""The bus tail: every topic (dead-letter topics too) read from near its end into a ring.

The console reads like `cairn events tail`: its own consumer without a group, so it never commits
and never takes a partition away from a service. It starts a few records before each partition's
end (CAIRN_CONSOLE_EVENTS_REPLAYED), so a restarted console shows the recent past. Each record
goes into a bounded ring (what `/api/events/recent` answers) and to every open
`/api/events/stream`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from cairn.auth.http import requires
from cairn.bus.client import tail_records
from cairn.contracts.catalogue import catalogue, load_contract_modules
from cairn.settings import CairnSettings
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from services.console.domain import EventFilter, EventRing, event_record

log = logging.getLogger("cairn.console.events")
# The tail reassigns its topics as they appear; aiokafka logs each set at INFO (hundreds of names).
logging.getLogger("aiokafka.consumer.subscription_state").setLevel(logging.WARNING)
RETRY_AFTER_S = 2.0
# Every partition's end is found from a fetch answer: ~800 partitions on a busy broker are slow.
POSITION_TIMEOUT_S = 120.0
SUBSCRIBER_BACKLOG = 1000
_LIMIT_MAX = 1000
router = APIRouter(prefix="/api/events", tags=["events"])


def watched_topics(settings: CairnSettings) -> list[str]:
    """Every catalogued topic and its dead-letter topic."""
    load_contract_modules(settings.contract_modules)
    topics = sorted({spec.topic for spec in catalogue().values()})
    return [*topics, *(f"{topic}.dlq" for topic in topics)]


class BusTail:
    """The ring of recent events and the queues of the open streams, fed by `run`."""

    def __init__(self, settings: CairnSettings, kept: int, replay_last: int = 0) -> None:
        self.settings = settings
        self.replay_last = replay_last
        self.ring = EventRing(kept)
        self._streams: set[asyncio.Queue[dict[str, Any]]] = set()

    def add(self, record: dict[str, Any]) -> None:
        if not self.ring.add(record):
            return  # seen already (replayed after a restart of the tail)
        for queue in self._streams:
            with contextlib.suppress(asyncio.QueueFull):  # a stuck reader misses events
                queue.put_nowait(record)

    async def run(self) -> None:
        """Read until cancelled; a broker outage is waited out, never fatal."""
        while True:
            try:
                records = tail_records(
                    self.settings,
                    watched_topics(self.settings),
                    client_id="cairn-console",
                    replay_last=self.replay_last,
                    position_timeout_s=POSITION_TIMEOUT_S,
                )
                async with contextlib.aclosing(records):
                    async for record in records:
                        headers = [(name, raw) for name, raw in record.headers or ()]
                        self.add(event_record(record.topic, record.value, headers))
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the page shows fewer events; the console stays up
                log.warning("bus tail stopped (%r); retrying in %.0f s", error, RETRY_AFTER_S)
                await asyncio.sleep(RETRY_AFTER_S)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=SUBSCRIBER_BACKLOG)
        self._streams.add(queue)
        try:
            yield queue
        finally:
            self._streams.discard(queue)


def _tail(request: Request) -> BusTail:
    tail: BusTail = request.app.state.console_events
    return tail


def _filter(type: str, correlation_id: str, dead_letter: bool | None) -> EventFilter:
    return EventFilter(
        type=type.strip(), correlation_id=correlation_id.strip(), dead_letter=dead_letter
    )


TypeQuery = Annotated[
    str, Query(max_length=200, description="An event type, or `*Failed` for a suffix.")
]
CorrelationQuery = Annotated[str, Query(max_length=200)]


@router.get("/recent", dependencies=[requires("read")])
async def recent_events(
    request: Request,
    type: TypeQuery = "",
    correlation_id: CorrelationQuery = "",
    dead_letter: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=_LIMIT_MAX)] = 100,
) -> list[dict[str, Any]]:
    """The last events the console saw on the bus, newest first."""
    return _tail(request).ring.recent(_filter(type, correlation_id, dead_letter), limit)


@router.get("/stream", dependencies=[requires("read")])
async def stream_events(
    request: Request,
    type: TypeQuery = "",
    correlation_id: CorrelationQuery = "",
    dead_letter: bool | None = None,
) -> StreamingResponse:
    """Server-sent events: one `data: <json>` per new event that matches."""
    tail = _tail(request)
    matches = _filter(type, correlation_id, dead_letter)
    heartbeat_s: float = request.app.state.console_settings.stream_heartbeat_s

    async def lines() -> AsyncIterator[str]:
        async with tail.subscribe() as queue:
            yield ": connected\n\n"
            while True:
                try:
                    record = await asyncio.wait_for(queue.get(), timeout=heartbeat_s)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if matches(record):
                    yield f"data: {json.dumps(record, default=str)}\n\n"

    return StreamingResponse(
        lines(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
