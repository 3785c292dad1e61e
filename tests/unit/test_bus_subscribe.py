"""Retry, dead-letter and dedupe decisions of `subscribe`, on FastStream's in-memory test broker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from cairn import bus
from cairn.bus import ProcessedLedger, RetryPolicy, build_broker, publish_event, subscribe
from cairn.bus.subscribe import consumer_options, dead_letter_headers, decode_for
from cairn.contracts import Envelope, spec_for
from cairn.contracts.events import TrainingJobRequested
from cairn.errors import EventValidationError, Forbidden, InvalidInput, UnknownEventType
from cairn.settings import CairnSettings
from cairn.store.local import LocalObjectStore
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from pydantic import BaseModel

from tests.reliability.probes import PROBES

SETTINGS = CairnSettings(
    kafka_bootstrap_servers="127.0.0.1:1",
    bus_max_retries=2,
    bus_retry_backoff_s=0.001,
    bus_retry_backoff_max_s=0.002,
)
MakeEvent = Callable[..., type[BaseModel]]


def test_backoff_doubles_from_the_base_and_stops_at_the_cap() -> None:
    policy = RetryPolicy(max_retries=6, backoff_s=0.2, backoff_max_s=1.0)

    assert [policy.delay_after(n) for n in range(1, 6)] == [0.2, 0.4, 0.8, 1.0, 1.0]


def test_retries_stop_after_max_retries_and_never_for_invalid_input() -> None:
    policy = RetryPolicy(max_retries=2)

    assert policy.max_attempts == 3
    assert policy.should_retry(RuntimeError("db down"), attempt=1)
    assert policy.should_retry(RuntimeError("db down"), attempt=2)
    assert not policy.should_retry(RuntimeError("db down"), attempt=3)
    assert not policy.should_retry(InvalidInput("unknown algorithm"), attempt=1)


def test_policy_comes_from_the_settings() -> None:
    policy = RetryPolicy.from_settings(SETTINGS)

    assert (policy.max_retries, policy.backoff_s, policy.backoff_max_s) == (2, 0.001, 0.002)


def test_worker_pools_fail_over_within_the_session_timeout_and_poll_one_record() -> None:
    settings = CairnSettings(bus_session_timeout_ms=3000, bus_heartbeat_interval_ms=2000)

    pool = consumer_options(settings, worker_pool=True)
    single = consumer_options(settings, worker_pool=False)

    assert pool["session_timeout_ms"] == 3000
    assert pool["heartbeat_interval_ms"] == 1000  # at most a third of the session
    assert pool["max_poll_records"] == 1
    assert single["auto_offset_reset"] == "earliest"  # a new group sees events sent before it
    assert "max_poll_records" not in single


def test_decode_names_what_is_wrong(make_test_event: MakeEvent) -> None:
    model = make_test_event()
    spec = spec_for(model)

    with pytest.raises(EventValidationError, match="Invalid JSON"):
        decode_for(spec, b"{not json")
    with pytest.raises(UnknownEventType, match="NoSuchThing"):
        decode_for(spec, _envelope_bytes("NoSuchThing", {"item_id": "a"}))
    with pytest.raises(EventValidationError, match=r"data\.item_id"):
        decode_for(spec, _envelope_bytes(spec.type, {"seq": 1}))
    with pytest.raises(EventValidationError, match="tombstone"):
        decode_for(spec, None)
    with pytest.raises(EventValidationError, match="does not belong on topic"):
        decode_for(spec, _envelope_bytes("TrainingJobStarted", _started_data()))


def test_another_type_sharing_the_topic_is_not_an_error(make_test_event: MakeEvent) -> None:
    first = make_test_event(topic="shared-topic-test")
    second = make_test_event(topic="shared-topic-test")

    ignored = decode_for(spec_for(first), _envelope_bytes(second.__name__, {"item_id": "a"}))
    mine = decode_for(spec_for(first), _envelope_bytes(first.__name__, {"item_id": "a"}))

    assert ignored is None
    assert mine is not None and isinstance(mine.data, first)


def test_dead_letter_headers_say_why_where_and_how_often() -> None:
    record = ConsumerRecord(
        topic="cairn.trainer.training-job-started",
        partition=3,
        offset=41,
        timestamp=0,
        timestamp_type=0,
        key=b"k",
        value=b"{}",
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=2,
        headers=[("traceparent", b"00-abc"), ("cairn-dlq-error", b"old"), ("bin", b"\xff")],
    )

    headers = dead_letter_headers(
        record, ValueError("bad row"), reason="handler-failed", attempts=4, group_id="trainer"
    )

    assert headers[bus.DLQ_ERROR] == "bad row"
    assert headers[bus.DLQ_ERROR_TYPE] == "builtins.ValueError"
    assert headers[bus.DLQ_REASON] == "handler-failed"
    assert headers[bus.DLQ_ORIGINAL_TOPIC] == "cairn.trainer.training-job-started"
    assert headers[bus.DLQ_ORIGINAL_PARTITION] == "3"
    assert headers[bus.DLQ_ORIGINAL_OFFSET] == "41"
    assert headers[bus.DLQ_ATTEMPTS] == "4"
    assert headers[bus.DLQ_GROUP] == "trainer"
    assert headers["traceparent"] == "00-abc"  # the original trace goes along
    assert "bin" not in headers


async def test_handled_event_is_recorded_and_not_handled_again(
    make_test_event: MakeEvent, tmp_path: Path
) -> None:
    model = make_test_event()
    harness = Harness(model, tmp_path)
    data = model(item_id="a", seq=1)

    async with TestKafkaBroker(harness.broker) as broker:
        envelope = await publish_event(broker, data, source="test")
        # The same bytes again: what a redelivery after a crash looks like.
        await broker.publish(envelope.model_dump_json().encode(), spec_for(model).topic)

    assert [e.event_id for e in harness.handled] == [envelope.event_id]
    assert await harness.ledger.seen(envelope.event_id)
    assert harness.dead_letters == []


async def test_failing_handler_is_retried_then_dead_lettered_with_its_original_bytes(
    make_test_event: MakeEvent, tmp_path: Path
) -> None:
    model = make_test_event()
    harness = Harness(model, tmp_path, fail_on={"boom"})

    async with TestKafkaBroker(harness.broker) as broker:
        envelope = await publish_event(broker, model(item_id="a", note="boom"), source="test")
        after = await publish_event(broker, model(item_id="b"), source="test")

    assert harness.attempts[envelope.event_id] == 3  # 1 + bus_max_retries
    assert len(harness.dead_letters) == 1
    body, headers = harness.dead_letters[0]
    assert body == envelope.model_dump_json().encode()
    assert headers[bus.DLQ_ERROR] == "handler refused boom"
    assert headers[bus.DLQ_ATTEMPTS] == "3"
    assert headers[bus.DLQ_REASON] == "handler-failed"
    assert not await harness.ledger.seen(envelope.event_id)  # a fixed replay will be handled
    assert [e.event_id for e in harness.handled] == [after.event_id]


async def test_invalid_input_from_the_handler_is_dead_lettered_without_retries(
    make_test_event: MakeEvent, tmp_path: Path
) -> None:
    model = make_test_event()
    harness = Harness(model, tmp_path, invalid_on={"bad"})

    async with TestKafkaBroker(harness.broker) as broker:
        envelope = await publish_event(broker, model(item_id="a", note="bad"), source="test")

    assert harness.attempts[envelope.event_id] == 1
    assert harness.dead_letters[0][1][bus.DLQ_ERROR_TYPE] == "cairn.errors.InvalidInput"


async def test_poison_message_is_dead_lettered_without_calling_the_handler(
    make_test_event: MakeEvent, tmp_path: Path
) -> None:
    model = make_test_event()
    harness = Harness(model, tmp_path)

    async with TestKafkaBroker(harness.broker) as broker:
        await broker.publish(b"\x00not json", spec_for(model).topic)

    assert harness.attempts == {}
    body, headers = harness.dead_letters[0]
    assert body == b"\x00not json"
    assert headers[bus.DLQ_REASON] == "undecodable"
    assert headers[bus.DLQ_ATTEMPTS] == "0"
    assert "invalid envelope" in headers[bus.DLQ_ERROR]


def test_ledger_of_another_group_is_refused(make_test_event: MakeEvent, tmp_path: Path) -> None:
    model = make_test_event()
    broker = build_broker(SETTINGS, client_id="test")

    async def handler(envelope: Envelope[Any]) -> None: ...

    with pytest.raises(InvalidInput, match="ledger of group"):
        subscribe(
            broker,
            model,
            handler,
            group_id="a",
            ledger=ProcessedLedger(LocalObjectStore(tmp_path), "b"),
            settings=SETTINGS,
        )


class Harness:
    """A broker with one subscriber under test and a capture of its dead-letter topic."""

    def __init__(
        self,
        model: type[BaseModel],
        root: Path,
        *,
        fail_on: set[str] = frozenset(),  # type: ignore[assignment]
        invalid_on: set[str] = frozenset(),  # type: ignore[assignment]
    ) -> None:
        self.broker: KafkaBroker = build_broker(SETTINGS, client_id="test")
        self.ledger = ProcessedLedger(LocalObjectStore(root), "group-a")
        self.handled: list[Envelope[Any]] = []
        self.attempts: dict[Any, int] = {}
        self.dead_letters: list[tuple[bytes, dict[str, str]]] = []

        async def handler(envelope: Envelope[Any]) -> None:
            self.attempts[envelope.event_id] = self.attempts.get(envelope.event_id, 0) + 1
            note = envelope.data.note
            if note in fail_on:
                raise RuntimeError(f"handler refused {note}")
            if note in invalid_on:
                raise InvalidInput(f"cannot use {note}")
            self.handled.append(envelope)

        subscribe(
            self.broker, model, handler, group_id="group-a", ledger=self.ledger, settings=SETTINGS
        )

        @self.broker.subscriber(spec_for(model).dlq_topic)
        async def capture(message: KafkaMessage) -> None:
            self.dead_letters.append((message.body, message.headers))


def _started_data() -> dict[str, Any]:
    return {"job_name": "j", "worker_id": "w", "device": "cpu"}


def _envelope_bytes(event_type: str, data: dict[str, Any]) -> bytes:
    return (
        Envelope[Any](type=event_type, source="other-client", correlation_id="c", data=data)
        .model_dump_json()
        .encode()
    )


@pytest.mark.parametrize("observer", [False, True])
async def test_an_unauthorised_request_is_dead_lettered_by_its_owner_and_skipped_by_an_observer(
    observer: bool, tmp_path: Path
) -> None:
    async def deny(spec: Any, value: bytes) -> None:
        raise Forbidden("not signed")

    handled: list[Envelope[Any]] = []

    async def handler(envelope: Envelope[Any]) -> None:
        handled.append(envelope)

    broker = build_broker(SETTINGS, client_id="test")
    ledger = ProcessedLedger(LocalObjectStore(tmp_path), "group-a")
    subscribe(
        broker,
        TrainingJobRequested,
        handler,
        group_id="group-a",
        ledger=ledger,
        settings=SETTINGS,
        authorise=deny,
        observer=observer,
    )
    dead: list[dict[str, str]] = []

    @broker.subscriber(spec_for(TrainingJobRequested).dlq_topic)
    async def capture(message: KafkaMessage) -> None:
        dead.append(message.headers)

    async with TestKafkaBroker(broker) as test_broker:
        envelope = await publish_event(
            test_broker, PROBES["TrainingJobRequested"].make("unsigned"), source="test"
        )

    assert handled == []
    assert not await ledger.seen(envelope.event_id)
    assert [h[bus.DLQ_REASON] for h in dead] == ([] if observer else ["unauthorised"])
