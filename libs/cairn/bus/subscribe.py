"""Consume one event type at least once: decode, dedupe, retry with backoff, dead-letter, commit.

Every subscriber runs with manual acknowledgement (aiokafka's auto-commit off) and commits the
offset only once the message is settled: handled and recorded in the ledger, skipped as a duplicate,
or copied to the dead-letter topic. A message that cannot be settled (the store or the broker is
down) is sought back and read again, never skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker, Topic
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.subscriber.usecase import DefaultSubscriber
from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy
from pydantic import BaseModel

from cairn.bus.deadletter import (
    DLQ_ATTEMPTS,
    DLQ_ERROR,
    DLQ_ERROR_TYPE,
    DLQ_FAILED_AT,
    DLQ_GROUP,
    DLQ_HEADER_PREFIX,
    DLQ_ORIGINAL_OFFSET,
    DLQ_ORIGINAL_PARTITION,
    DLQ_ORIGINAL_SIZE,
    DLQ_ORIGINAL_TOPIC,
    DLQ_REASON,
    DLQ_TRUNCATED,
    DLQ_TRUNCATED_VALUE_BYTES,
    dead_letter_headers,
    publish_dead_letter,
)
from cairn.bus.ledger import ProcessedLedger
from cairn.contracts import Envelope, EventSpec, decode_envelope, spec_for
from cairn.errors import EventValidationError, Forbidden, InvalidInput, Unauthenticated
from cairn.settings import CairnSettings
from cairn.telemetry import correlation_context

log = logging.getLogger("cairn.bus")

__all__ = [
    "DLQ_ATTEMPTS",
    "DLQ_ERROR",
    "DLQ_ERROR_TYPE",
    "DLQ_FAILED_AT",
    "DLQ_GROUP",
    "DLQ_HEADER_PREFIX",
    "DLQ_ORIGINAL_OFFSET",
    "DLQ_ORIGINAL_PARTITION",
    "DLQ_ORIGINAL_SIZE",
    "DLQ_ORIGINAL_TOPIC",
    "DLQ_REASON",
    "DLQ_TRUNCATED",
    "DLQ_TRUNCATED_VALUE_BYTES",
    "REASON_HANDLER_FAILED",
    "REASON_UNAUTHORISED",
    "REASON_UNDECODABLE",
    "EnvelopeConsumer",
    "RetryPolicy",
    "consumer_options",
    "dead_letter_headers",
    "decode_for",
    "subscribe",
]

EventHandler = Callable[[Envelope[Any]], Awaitable[None]]

REASON_UNDECODABLE = "undecodable"
REASON_HANDLER_FAILED = "handler-failed"
REASON_UNAUTHORISED = "unauthorised"

# Checks a privileged request's signature and scope; raises Unauthenticated / Forbidden.
RequestAuthoriser = Callable[[EventSpec, bytes], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failing handler is retried before dead-lettering."""

    max_retries: int = 3
    backoff_s: float = 0.2
    backoff_max_s: float = 5.0

    @classmethod
    def from_settings(cls, settings: CairnSettings) -> RetryPolicy:
        return cls(
            max_retries=settings.bus_max_retries,
            backoff_s=settings.bus_retry_backoff_s,
            backoff_max_s=settings.bus_retry_backoff_max_s,
        )

    @property
    def max_attempts(self) -> int:
        return 1 + self.max_retries

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based): doubling, capped."""
        return float(min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1)))

    def should_retry(self, error: Exception, attempt: int) -> bool:
        """Retry transient failures only: InvalidInput means the event can never succeed."""
        return attempt < self.max_attempts and not isinstance(error, InvalidInput)


def decode_for(spec: EventSpec, value: bytes | None) -> Envelope[Any] | None:
    """The typed envelope in `value`; None when it is another event type sharing this topic.

    Raises InvalidInput (EventValidationError / UnknownEventType) for a message that can never be
    handled: not JSON, not an envelope, an unknown type, or data that fails its model.
    """
    if value is None:
        raise EventValidationError("message has no value (a tombstone is not an event)")
    envelope = decode_envelope(value)
    if envelope.type == spec.type:
        return envelope
    if spec_for(envelope.type).topic == spec.topic:
        return None
    raise EventValidationError(
        f"event type {envelope.type!r} does not belong on topic {spec.topic!r}"
    )


def consumer_options(settings: CairnSettings, *, worker_pool: bool) -> dict[str, Any]:
    """aiokafka consumer settings for a Cairn subscriber.

    The session timeout matters twice on Tansu: a new member's join waits about half of it, and
    a dead member's partitions move only after it. Worker pools also take one record per poll so
    a busy member does not sit on work another member could start.
    """
    options: dict[str, Any] = {
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.bus_session_timeout_ms,
        "heartbeat_interval_ms": min(
            settings.bus_heartbeat_interval_ms, settings.bus_session_timeout_ms // 3
        ),
    }
    if worker_pool:
        options |= {
            "max_poll_records": 1,
            "rebalance_timeout_ms": settings.bus_session_timeout_ms,
            "max_partition_fetch_bytes": 256 * 1024,
        }
    return options


class EnvelopeConsumer:
    """The FastStream handler behind `subscribe`: settles every message exactly once per group."""

    def __init__(
        self,
        *,
        broker: KafkaBroker,
        spec: EventSpec,
        handler: EventHandler,
        group_id: str,
        ledger: ProcessedLedger,
        policy: RetryPolicy,
        authorise: RequestAuthoriser | None = None,
        observer: bool = False,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.authorise = authorise
        self.observer = observer
        self.broker = broker
        self.spec = spec
        self.handler = handler
        self.group_id = group_id
        self.ledger = ledger
        self.policy = policy
        self._sleep = sleep

    async def on_message(self, message: KafkaMessage) -> None:
        """Handle one record; returns only once it is committed or sought back for a re-read."""
        record: ConsumerRecord[Any, Any] = message.raw_message
        try:
            envelope = decode_for(self.spec, record.value)
        except InvalidInput as error:
            await self._dead_letter(message, record, error, REASON_UNDECODABLE, attempts=0)
            return
        if envelope is None:
            await self._commit(message)
            return
        if self.spec.required_scope is not None:
            try:
                await self._authorise(record.value)
            except (Unauthenticated, Forbidden) as error:
                if self.observer:  # the request's owner dead-letters it: once is enough
                    log.info("ignoring unauthorised %s: %s", self.spec.type, error)
                    await self._commit(message)
                    return
                await self._dead_letter(message, record, error, REASON_UNAUTHORISED, attempts=0)
                return
        with correlation_context(envelope.correlation_id):
            await self._settle(message, record, envelope)

    async def _authorise(self, value: bytes) -> None:
        if self.authorise is None:
            raise Unauthenticated(f"{self.spec.type} is a privileged request and nobody checks it")
        await self.authorise(self.spec, value)

    async def _settle(
        self,
        message: StreamMessage[Any],
        record: ConsumerRecord[Any, Any],
        envelope: Envelope[Any],
    ) -> None:
        try:
            if await self.ledger.seen(envelope.event_id):
                log.info(
                    "skipping %s %s: group %s already handled it",
                    envelope.type,
                    envelope.event_id,
                    self.group_id,
                )
                await self._commit(message)
                return
        except Exception as error:
            await self._read_again(message, error)
            return
        attempts, failure = await self._run_handler(envelope)
        if failure is not None:
            await self._dead_letter(message, record, failure, REASON_HANDLER_FAILED, attempts)
            return
        try:
            await self.ledger.mark(envelope.event_id, event_type=envelope.type)
        except Exception as error:
            await self._read_again(message, error)
            return
        await self._commit(message)

    async def _run_handler(self, envelope: Envelope[Any]) -> tuple[int, Exception | None]:
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.handler(envelope)
            except Exception as error:
                if not self.policy.should_retry(error, attempt):
                    return attempt, error
                delay = self.policy.delay_after(attempt)
                log.warning(
                    "handler for %s %s failed (attempt %d/%d), retrying in %.2fs: %r",
                    envelope.type,
                    envelope.event_id,
                    attempt,
                    self.policy.max_attempts,
                    delay,
                    error,
                )
                await self._sleep(delay)
            else:
                return attempt, None

    async def _dead_letter(
        self,
        message: StreamMessage[Any],
        record: ConsumerRecord[Any, Any],
        error: Exception,
        reason: str,
        attempts: int,
    ) -> None:
        headers = dead_letter_headers(
            record, error, reason=reason, attempts=attempts, group_id=self.group_id
        )
        log.error(
            "dead-lettering %s[%d]@%d to %s after %d attempt(s): %s",
            record.topic,
            record.partition,
            record.offset,
            self.spec.dlq_topic,
            attempts,
            headers[DLQ_ERROR],
        )
        try:
            await publish_dead_letter(
                self.broker,
                self.spec.dlq_topic,
                record.value or b"",
                key=record.key,
                headers=headers,
            )
        except Exception as publish_error:
            await self._read_again(message, publish_error)
            return
        await self._commit(message)

    async def _read_again(self, message: StreamMessage[Any], error: Exception) -> None:
        """Leave the offset where it is and re-read this record after a pause."""
        log.warning("cannot settle a message now, reading it again: %r", error)
        await self._sleep(self.policy.backoff_max_s)
        await message.nack()

    async def _commit(self, message: StreamMessage[Any]) -> None:
        try:
            await message.ack()
        except KafkaError as error:
            # A rebalance took the partition away: the new owner re-reads the record and the
            # ledger turns it into a no-op, so losing this commit loses nothing.
            log.warning("offset commit failed, the record will be redelivered: %r", error)


def subscribe(
    broker: KafkaBroker,
    event_type: type[BaseModel] | str,
    handler: EventHandler,
    *,
    group_id: str,
    ledger: ProcessedLedger,
    settings: CairnSettings,
    worker_pool: bool = False,
    authorise: RequestAuthoriser | None = None,
    observer: bool = False,
    **consumer_overrides: Any,
) -> DefaultSubscriber:
    """Register `handler` for one event type in a consumer group, delivering at least once.

    The handler receives a validated `Envelope[Model]`. Messages from any Kafka client are accepted
    when their value is the envelope as JSON. Undecodable messages go straight to `<topic>.dlq`; a
    handler that raises is retried with doubling backoff (`bus_max_retries`, `bus_retry_backoff_s`,
    `bus_retry_backoff_max_s`; an `InvalidInput` is not retried) and then dead-lettered with the
    error in the headers. Handled events are recorded in `ledger` so redeliveries are skipped.

    Args:
        broker: the process's broker from `build_broker` (not yet started).
        event_type: the event model or its type name.
        handler: `async def handler(envelope) -> None`; must be idempotent on its own effects.
        group_id: the consumer group; members share the topic's partitions.
        ledger: where this group's handled event ids are kept (its group id should match).
        settings: retry policy and session timeouts.
        worker_pool: members that fail over in seconds and take one record at a time.
        authorise: checks the signature of privileged requests (`EventSpec.required_scope`);
            one that fails is dead-lettered with reason `unauthorised`, never handled.
        observer: this group only watches another service's requests (experiments folding
            jobs into runs): an unauthorised one is skipped, since its owner dead-letters it.
        **consumer_overrides: aiokafka consumer options, e.g. `max_poll_interval_ms`.
    """
    spec = spec_for(event_type)
    if ledger.group_id != group_id:
        raise InvalidInput(
            f"ledger of group {ledger.group_id!r} given to a subscriber of group {group_id!r}"
        )
    consumer = EnvelopeConsumer(
        broker=broker,
        spec=spec,
        handler=handler,
        group_id=group_id,
        ledger=ledger,
        policy=RetryPolicy.from_settings(settings),
        authorise=authorise,
        observer=observer,
    )
    options = consumer_options(settings, worker_pool=worker_pool) | consumer_overrides
    subscriber: DefaultSubscriber = broker.subscriber(
        Topic(spec.topic, num_partitions=spec.partitions),
        group_id=group_id,
        ack_policy=AckPolicy.MANUAL,
        decoder=_raw_body,
        title=f"{spec.topic}:{group_id}",
        description=spec.description or None,
        **options,
    )
    subscriber(consumer.on_message)
    return subscriber


async def _raw_body(message: StreamMessage[Any]) -> Any:
    """Keep FastStream from parsing the body: `decode_for` does, and dead-letters on failure."""
    return message.body
