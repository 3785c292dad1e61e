"""Publish and watch events without a FastStream app: for the CLI, the SDK and scripts.

`tail_events` reads without a consumer group, so it never commits and never takes partitions away
from a service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from types import TracebackType
from typing import Any, NamedTuple, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from opentelemetry import propagate, trace
from pydantic import BaseModel

from cairn.bus.broker import kafka_client_options
from cairn.bus.lag import existing_partitions, fetch_high_watermarks
from cairn.bus.publish import Signer, envelope_for, outgoing_message, signed
from cairn.contracts import (
    Envelope,
    catalogue,
    decode_envelope,
    load_contract_modules,
    spec_for,
    validate_data,
)
from cairn.errors import CairnError, Unavailable
from cairn.settings import CairnSettings

log = logging.getLogger("cairn.bus")
_tracer = trace.get_tracer("cairn.bus")

_TOPIC_WAIT_S = 1.0


class EventProducer:
    """An aiokafka producer that wraps data in envelopes and sends them where the catalogue says."""

    def __init__(
        self,
        settings: CairnSettings,
        *,
        source: str,
        client_id: str | None = None,
        signer: Signer | None = None,
    ) -> None:
        load_contract_modules(settings.contract_modules)
        self.settings = settings
        self.source = source
        self.signer = signer
        self._producer = AIOKafkaProducer(
            **kafka_client_options(settings, client_id=client_id or f"cairn-{source}"),
            acks="all",
        )

    async def __aenter__(self) -> Self:
        try:
            await self._producer.start()
        except KafkaError as error:
            await self._producer.stop()
            raise Unavailable(f"cannot reach Kafka: {error!r}") from error
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._producer.stop()

    async def publish(
        self,
        data: BaseModel,
        *,
        correlation_id: str | None = None,
        cause: Envelope[Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Envelope[Any]:
        """Send one event and wait for the broker's acknowledgement; returns the envelope sent."""
        envelope = envelope_for(
            data, source=self.source, correlation_id=correlation_id, cause=cause
        )
        envelope = signed(envelope, self.signer)
        message = outgoing_message(envelope, headers)
        with _tracer.start_as_current_span(
            f"{message.topic} publish", kind=trace.SpanKind.PRODUCER
        ):
            carrier = dict(message.headers)
            propagate.inject(carrier)
            try:
                await self._producer.send_and_wait(
                    message.topic,
                    message.value,
                    key=message.key,
                    headers=[(name, value.encode()) for name, value in carrier.items()],
                )
            except KafkaError as error:
                raise Unavailable(f"cannot publish {envelope.type}: {error!r}") from error
        return envelope

    async def publish_raw(
        self,
        event_type: str,
        data: dict[str, Any],
        *,
        correlation_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Envelope[Any]:
        """Validate a plain dict against the event's model (EventValidationError), then publish."""
        model = validate_data(event_type, data)
        return await self.publish(model, correlation_id=correlation_id, headers=headers)


class TailedEvent(NamedTuple):
    """One record seen by `tail_events`: the envelope, or the raw value and why it is bad."""

    topic: str
    partition: int
    offset: int
    key: str | None
    event: Envelope[Any] | dict[str, Any]
    error: str | None


def read_record(record: ConsumerRecord[bytes, bytes]) -> TailedEvent:
    """Decode a record as an envelope; a bad one comes back raw with the reason."""
    key = record.key.decode(errors="replace") if record.key is not None else None
    event: Envelope[Any] | dict[str, Any]
    error: str | None = None
    try:
        if record.value is None:
            raise CairnError("message has no value")
        event = decode_envelope(record.value)
    except CairnError as exc:
        error = exc.message
        event = _raw_value(record.value)
    return TailedEvent(record.topic, record.partition, record.offset, key, event, error)


def _raw_value(value: bytes | None) -> dict[str, Any]:
    if value is None:
        return {}
    try:
        parsed = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"raw": value.decode(errors="replace")}
    return parsed if isinstance(parsed, dict) else {"raw": parsed}


async def assign_new_partitions(
    consumer: AIOKafkaConsumer, topics: Iterable[str], settings: CairnSettings
) -> list[TopicPartition]:
    """Add the partitions of `topics` that appeared since the last call; returns the added ones.

    A manual assignment only covers the topics that existed when it was made, and a consumer
    without a group refreshes metadata only for the topics it reads, so a new topic's partitions
    are learned from a fresh client. Re-assigning resets every position, so the positions of the
    partitions already read are put back; the caller positions the added ones.
    """
    current = consumer.assignment()
    read_topics = {tp.topic for tp in current}
    names = await consumer.topics()
    new_topics = [topic for topic in dict.fromkeys(topics) if topic in names]
    new_topics = [topic for topic in new_topics if topic not in read_topics]
    if not new_topics:
        return []
    found = await existing_partitions(consumer, new_topics)
    if {tp.topic for tp in found} != set(new_topics):
        found = await _partitions_seen_by_a_new_client(settings, new_topics)
    added = [tp for tp in found if tp not in current]
    if not added:
        return []
    positions = {tp: await consumer.position(tp) for tp in current}
    consumer.assign([*current, *added])
    for tp, offset in positions.items():
        consumer.seek(tp, offset)
    return added


async def _partitions_seen_by_a_new_client(
    settings: CairnSettings, topics: list[str]
) -> list[TopicPartition]:
    probe = AIOKafkaConsumer(
        **kafka_client_options(settings, client_id="cairn-tail-probe"), group_id=None
    )
    try:
        await probe.start()
        return await existing_partitions(probe, topics)
    finally:
        await probe.stop()


async def tail_events(
    settings: CairnSettings,
    event_types: list[str] | None = None,
    from_beginning: bool = False,
    *,
    topic_refresh_s: float = _TOPIC_WAIT_S,
) -> AsyncIterator[TailedEvent]:
    """Yield events on the topics of `event_types` (default: every catalogued type) as they arrive.

    Args:
        settings: where the cluster is.
        event_types: type names; UnknownEventType for a name not in the catalogue.
        from_beginning: start at the start of each log instead of at its end.
        topic_refresh_s: how often to look for topics created after the start (they are read
            from their beginning, since everything on them is new).
    """
    load_contract_modules(settings.contract_modules)
    names = list(catalogue()) if event_types is None else event_types
    topics = list(dict.fromkeys(spec_for(name).topic for name in names))
    records = tail_records(settings, topics, from_beginning, topic_refresh_s=topic_refresh_s)
    async with contextlib.aclosing(records):  # the consumer stops when the caller stops reading
        async for record in records:
            yield read_record(record)


async def tail_records(
    settings: CairnSettings,
    topics: list[str],
    from_beginning: bool = False,
    *,
    topic_refresh_s: float = _TOPIC_WAIT_S,
    client_id: str = "cairn-tail",
    replay_last: int = 0,
    position_timeout_s: float = 10.0,
) -> AsyncGenerator[ConsumerRecord[bytes, bytes]]:
    """Yield the raw records of `topics` (headers included) as they arrive, without a group.

    Nothing is committed and no group is joined, so any number of readers watch without taking
    messages from a service. `tail_events` decodes them; a reader of dead-letter topics wants the
    headers (the reason) too. `replay_last` starts each partition that many records before its
    end, so a reader that restarts sees the recent past again. Finding each partition's end
    takes one fetch answer per partition: `position_timeout_s` bounds it (hundreds of partitions
    on a busy broker take a while).
    """
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings, client_id=client_id),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        await consumer.start()
        existing = await assign_new_partitions(consumer, topics, settings)
        if from_beginning and existing:
            await consumer.seek_to_beginning(*existing)
        elif existing:
            # seek_to_end() trusts ListOffsets, which lags on Tansu; the high-watermark does not.
            ends = await fetch_high_watermarks(consumer, existing, timeout_s=position_timeout_s)
            for tp, end in ends.items():
                if replay_last and end:  # below the log start, the reset policy says earliest
                    consumer.seek(tp, max(end - replay_last, 0))
        next_refresh = time.monotonic() + topic_refresh_s
        while True:
            if consumer.assignment():
                batch = await consumer.getmany(timeout_ms=int(topic_refresh_s * 1000))
                for records in batch.values():
                    for record in records:
                        yield record
            else:
                await asyncio.sleep(topic_refresh_s)
            if time.monotonic() >= next_refresh:
                added = await assign_new_partitions(consumer, topics, settings)
                if added:
                    await consumer.seek_to_beginning(*added)
                next_refresh = time.monotonic() + topic_refresh_s
    except KafkaError as error:
        raise Unavailable(f"cannot read events: {error!r}") from error
    finally:
        await consumer.stop()
