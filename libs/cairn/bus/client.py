"""Publish and watch events without a FastStream app: for the CLI, the SDK and scripts.

`tail_events` reads without a consumer group, so it never commits and never takes partitions away
from a service.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, NamedTuple, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaError
from opentelemetry import propagate, trace
from pydantic import BaseModel

from cairn.bus.broker import kafka_client_options
from cairn.bus.lag import existing_partitions, fetch_high_watermarks
from cairn.bus.publish import envelope_for, outgoing_message
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
        self, settings: CairnSettings, *, source: str, client_id: str | None = None
    ) -> None:
        load_contract_modules(settings.contract_modules)
        self.settings = settings
        self.source = source
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


async def tail_events(
    settings: CairnSettings,
    event_types: list[str] | None = None,
    from_beginning: bool = False,
) -> AsyncIterator[TailedEvent]:
    """Yield events on the topics of `event_types` (default: every catalogued type) as they arrive.

    Args:
        settings: where the cluster is.
        event_types: type names; UnknownEventType for a name not in the catalogue.
        from_beginning: start at the start of each log instead of at its end.
    """
    load_contract_modules(settings.contract_modules)
    names = list(catalogue()) if event_types is None else event_types
    topics = list(dict.fromkeys(spec_for(name).topic for name in names))
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings, client_id="cairn-tail"),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        await consumer.start()
        partitions = await existing_partitions(consumer, topics)
        while not partitions:
            await asyncio.sleep(_TOPIC_WAIT_S)
            partitions = await existing_partitions(consumer, topics)
        consumer.assign(partitions)
        if from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            # seek_to_end() trusts ListOffsets, which lags on Tansu; the high-watermark does not.
            await fetch_high_watermarks(consumer, partitions)
        async for record in consumer:
            yield read_record(record)
    except KafkaError as error:
        raise Unavailable(f"cannot read events: {error!r}") from error
    finally:
        await consumer.stop()
