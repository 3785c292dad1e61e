"""Wrap event data in its envelope; publish it on the catalogue's topic, keyed by aggregate id."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import uuid4

from faststream.kafka import KafkaBroker
from pydantic import BaseModel

from cairn.auth.signing import sign_envelope
from cairn.contracts import Envelope, EventSpec, spec_for
from cairn.contracts.envelope import envelope_class
from cairn.errors import InvalidInput

CONTENT_TYPE = "application/json"
EVENT_TYPE_HEADER = "cairn-event-type"


@dataclass(frozen=True)
class Signer:
    """The credential an envelope is signed with: a user's key or a service's own."""

    key_id: str
    secret: str


@dataclass(frozen=True)
class OutgoingMessage:
    """Everything a Kafka producer needs to send one envelope."""

    topic: str
    key: bytes
    value: bytes
    headers: dict[str, str]


def envelope_for(
    data: BaseModel,
    *,
    source: str,
    correlation_id: str | None = None,
    cause: Envelope[Any] | None = None,
) -> Envelope[Any]:
    """Wrap `data` in a new envelope: type from the catalogue, ids chained from `cause`.

    Args:
        data: an instance of a catalogued event model.
        source: the service or client producing the event.
        correlation_id: the workflow id; defaults to the cause's, else a new UUID.
        cause: the event that led to this one; its `event_id` becomes `causation_id`.
    """
    spec = _spec_of(data)
    if correlation_id is None:
        correlation_id = cause.correlation_id if cause is not None else str(uuid4())
    return envelope_class(type(data))(
        type=spec.type,
        source=source,
        correlation_id=correlation_id,
        causation_id=str(cause.event_id) if cause is not None else None,
        data=data,
    )


def signed(envelope: Envelope[Any], signer: Signer | None) -> Envelope[Any]:
    """The envelope with `key_id` and `signature` set (unchanged without a signer)."""
    if signer is None:
        return envelope
    payload = sign_envelope(envelope.model_dump(mode="json"), signer.key_id, signer.secret)
    return envelope.model_copy(
        update={"key_id": payload["key_id"], "signature": payload["signature"]}
    )


def outgoing_message(
    envelope: Envelope[Any], headers: dict[str, str] | None = None
) -> OutgoingMessage:
    """Topic, key, JSON body and headers for an envelope, all from the catalogue.

    A signature covers the canonical form of the parsed envelope (`cairn.auth.signing`), not
    these bytes, so any JSON writer may carry it.
    """
    spec = _spec_of(envelope.data)
    return OutgoingMessage(
        topic=spec.topic,
        key=spec.key_of(envelope.data),
        value=envelope.model_dump_json().encode(),
        headers={"content-type": CONTENT_TYPE, EVENT_TYPE_HEADER: spec.type, **(headers or {})},
    )


async def publish_event(
    broker: KafkaBroker,
    data: BaseModel,
    *,
    source: str,
    correlation_id: str | None = None,
    cause: Envelope[Any] | None = None,
    headers: dict[str, str] | None = None,
    signer: Signer | None = None,
) -> Envelope[Any]:
    """Publish one event through a FastStream broker and return the envelope that was sent.

    Args:
        broker: a started broker from `build_broker`.
        data: an instance of a catalogued event model.
        source: the service or client producing the event.
        correlation_id: the workflow id; defaults to the cause's, else a new UUID.
        cause: the event being handled when this one is published.
        headers: extra Kafka headers (trace context is added by the telemetry middleware).
        signer: signs the envelope (services sign everything they publish).
    """
    envelope = envelope_for(data, source=source, correlation_id=correlation_id, cause=cause)
    envelope = signed(envelope, signer)
    message = outgoing_message(envelope, headers)
    await broker.publish(
        message.value,
        message.topic,
        key=message.key,
        headers=message.headers,
        correlation_id=envelope.correlation_id,
    )
    return envelope


def _spec_of(data: BaseModel) -> EventSpec:
    spec = spec_for(type(data))
    if not isinstance(data, spec.model):
        raise InvalidInput(
            f"{type(data).__module__}.{type(data).__qualname__} is not the catalogued model "
            f"of event type {spec.type!r}"
        )
    return spec
