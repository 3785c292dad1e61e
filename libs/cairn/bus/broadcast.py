"""Broadcast subscriptions: every replica reads every event, with no consumer group.

For per-replica caches (the gateway's routing table): no partition is taken from another replica
and nothing is committed. Start-up is race-free when the owner of the cache fixes the positions
at the end of the log first (`position_at_end`), then loads its snapshot from the store, then
consumes (`run`): the writer stores its document before publishing (architecture rule 6).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from cairn.bus.broker import kafka_client_options
from cairn.bus.lag import existing_partitions, fetch_high_watermarks
from cairn.contracts import Envelope, EventSpec, decode_envelope
from cairn.errors import CairnError
from cairn.settings import CairnSettings

log = logging.getLogger("cairn.bus")

_TOPIC_WAIT_S = 0.5
_RETRY_S = 1.0

BroadcastHandler = Callable[[Envelope[Any]], Awaitable[None]]


class BroadcastReader:
    """Reads one event type from the end of its topic on every replica; handlers must not raise."""

    def __init__(
        self, settings: CairnSettings, spec: EventSpec, handler: BroadcastHandler, client_id: str
    ) -> None:
        self.settings = settings
        self.spec = spec
        self.handler = handler
        self.client_id = client_id
        self._consumer: AIOKafkaConsumer | None = None

    async def position_at_end(self) -> None:
        consumer = AIOKafkaConsumer(
            **kafka_client_options(self.settings, client_id=self.client_id),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        self._consumer = consumer
        partitions = await existing_partitions(consumer, [self.spec.topic])
        while not partitions:
            await asyncio.sleep(_TOPIC_WAIT_S)
            partitions = await existing_partitions(consumer, [self.spec.topic])
        consumer.assign(partitions)
        await fetch_high_watermarks(consumer, partitions)

    async def run(self) -> None:
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("position_at_end() must run first")
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=1000)
            except KafkaError as error:
                log.warning("reading %s failed, retrying: %r", self.spec.topic, error)
                await asyncio.sleep(_RETRY_S)
                continue
            for records in batches.values():
                for record in records:
                    await self._handle(record.value)

    async def _handle(self, value: bytes | None) -> None:
        if value is None:
            return
        try:
            envelope = decode_envelope(value)
        except CairnError as error:
            log.error("undecodable message on %s: %s", self.spec.topic, error.message)
            return
        if envelope.type != self.spec.type:
            return
        try:
            await self.handler(envelope)
        except Exception:
            log.exception("broadcast handler for %s failed; the event is skipped", self.spec.type)

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
