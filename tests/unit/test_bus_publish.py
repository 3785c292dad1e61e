"""Envelopes are filled from the catalogue and published on the right topic with the right key."""

from __future__ import annotations

import gc
import uuid
import weakref

import pytest
from cairn.bus import build_broker, envelope_for, publish_event
from cairn.bus.publish import outgoing_message
from cairn.contracts import decode_envelope, spec_for
from cairn.contracts.events import TrainingJobRequested, TrainingJobStarted
from cairn.errors import UnknownEventType
from cairn.settings import CairnSettings
from faststream.kafka import TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from opentelemetry.sdk.trace import TracerProvider
from pydantic import BaseModel

SETTINGS = CairnSettings(kafka_bootstrap_servers="127.0.0.1:1")


def started(job_name: str = "churn-7") -> TrainingJobStarted:
    return TrainingJobStarted(job_name=job_name, worker_id="w1", device="cpu")


def test_envelope_takes_its_type_from_the_catalogue_and_starts_a_workflow() -> None:
    envelope = envelope_for(started(), source="trainer")

    assert envelope.type == "TrainingJobStarted"
    assert envelope.source == "trainer"
    assert envelope.causation_id is None
    assert uuid.UUID(envelope.correlation_id)  # a fresh workflow id


def test_envelope_caused_by_another_continues_its_workflow() -> None:
    cause = envelope_for(started(), source="cli", correlation_id="wf-42")

    effect = envelope_for(started(), source="trainer", cause=cause)

    assert effect.correlation_id == "wf-42"
    assert effect.causation_id == str(cause.event_id)
    assert effect.event_id != cause.event_id


def test_explicit_correlation_id_wins_over_the_causes() -> None:
    cause = envelope_for(started(), source="cli", correlation_id="wf-1")

    effect = envelope_for(started(), source="trainer", correlation_id="wf-2", cause=cause)

    assert effect.correlation_id == "wf-2"
    assert effect.causation_id == str(cause.event_id)


def test_uncatalogued_model_is_refused() -> None:
    class NotAnEvent(BaseModel):
        job_name: str

    with pytest.raises(UnknownEventType):
        envelope_for(NotAnEvent(job_name="x"), source="test")


def test_message_goes_to_the_types_topic_keyed_by_aggregate_id() -> None:
    envelope = envelope_for(started("fraud-model-3"), source="trainer")

    message = outgoing_message(envelope, {"x-extra": "1"})

    assert (
        message.topic == spec_for(TrainingJobStarted).topic == "cairn.trainer.training-job-started"
    )
    assert message.key == b"fraud-model-3"
    assert message.headers["x-extra"] == "1"
    assert message.headers["content-type"] == "application/json"
    decoded = decode_envelope(message.value)
    assert decoded == envelope
    assert isinstance(decoded.data, TrainingJobStarted)


async def test_publish_event_sends_the_envelope_as_plain_json_with_a_trace_context() -> None:
    broker = build_broker(SETTINGS, client_id="test", tracer_provider=TracerProvider())
    received: list[tuple[bytes, bytes | None, dict[str, str]]] = []

    @broker.subscriber(spec_for(TrainingJobRequested).topic)
    async def capture(message: KafkaMessage) -> None:
        record = message.raw_message
        received.append((message.body, record.key, message.headers))

    data = TrainingJobRequested.model_validate(
        {
            "job_name": "churn-1",
            "algorithm": "xgboost",
            "input_channels": [{"name": "train", "uri": "file:///data/train.csv"}],
        }
    )
    async with TestKafkaBroker(broker) as test_broker:
        envelope = await publish_event(test_broker, data, source="cli", correlation_id="wf-9")

    assert len(received) == 1
    body, key, headers = received[0]
    assert key == b"churn-1"
    assert decode_envelope(body) == envelope
    assert envelope.correlation_id == "wf-9"
    assert headers["traceparent"].startswith("00-")


def test_the_envelope_class_of_an_event_survives_garbage_collection() -> None:
    """pydantic holds `Envelope[Model]` weakly: without a strong reference a collection took it
    and the next publish rebuilt it (2-3 ms on a gateway's event loop, every flush)."""
    first = type(envelope_for(started(), source="trainer"))
    kept = weakref.ref(first)
    del first
    gc.collect()

    assert kept() is not None
    assert type(envelope_for(started(), source="trainer")) is kept()
    assert type(decode_envelope(envelope_for(started(), source="t").model_dump_json())) is kept()
