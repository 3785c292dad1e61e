"""Dead letters too big for the DLQ producer go truncated, so a consumer always moves on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError
from cairn import bus
from cairn.bus.deadletter import DLQ_WHOLE_MAX_BYTES, publish_dead_letter, truncated_copy
from cairn.bus.publish import envelope_for
from cairn.contracts import spec_for
from cairn.service import Service
from cairn.store.memory import InMemoryObjectStore
from faststream.kafka import KafkaBroker
from pydantic import BaseModel

from tests.support.auth import auth_settings

MakeEvent = Callable[..., type[BaseModel]]
ONE_MIB = 1024 * 1024


class SizeLimitedBroker:
    """Stands in for FastStream's `publish`: refuses what aiokafka's 1 MiB default refuses."""

    def __init__(self, limit: int = ONE_MIB, broker_error: type[Exception] | None = None) -> None:
        self.limit = limit
        self.broker_error = broker_error
        self.sent: list[dict[str, Any]] = []

    async def publish(self, value: bytes, topic: str, **kwargs: Any) -> None:
        if len(value) > self.limit:
            raise MessageSizeTooLargeError(f"The message is {len(value)} bytes")
        if self.broker_error is not None and len(value) > bus.DLQ_TRUNCATED_VALUE_BYTES:
            raise self.broker_error("the broker refuses the batch")
        self.sent.append({"value": value, "topic": topic, **kwargs})


def _as_broker(fake: SizeLimitedBroker) -> KafkaBroker:
    return fake  # type: ignore[return-value]


async def test_a_small_dead_letter_goes_whole() -> None:
    fake = SizeLimitedBroker()

    truncated = await publish_dead_letter(
        _as_broker(fake), "t.dlq", b"{}", key=b"k", headers={bus.DLQ_REASON: "undecodable"}
    )

    assert not truncated
    assert fake.sent[0]["value"] == b"{}"
    assert bus.DLQ_TRUNCATED not in fake.sent[0]["headers"]


async def test_an_oversize_dead_letter_goes_as_its_head_with_size_and_reason() -> None:
    fake = SizeLimitedBroker()
    value = b"y" * (2 * ONE_MIB)

    truncated = await publish_dead_letter(
        _as_broker(fake),
        "t.dlq",
        value,
        key=b"k" * 5000,
        headers={bus.DLQ_REASON: "undecodable", "traceparent": "00-abc", "huge": "z" * 10_000},
    )

    (sent,) = fake.sent
    assert truncated
    assert sent["value"] == value[: bus.DLQ_TRUNCATED_VALUE_BYTES]
    assert sent["headers"][bus.DLQ_TRUNCATED] == "true"
    assert sent["headers"][bus.DLQ_ORIGINAL_SIZE] == str(2 * ONE_MIB)
    assert sent["headers"][bus.DLQ_REASON] == "undecodable"
    assert sent["headers"]["traceparent"] == "00-abc"
    assert "huge" not in sent["headers"]  # a header too big to carry is left behind
    assert len(sent["key"]) == 1024


async def test_a_copy_the_broker_itself_refuses_as_too_large_is_sent_truncated() -> None:
    fake = SizeLimitedBroker(broker_error=RecordListTooLargeError)
    value = b"v" * (DLQ_WHOLE_MAX_BYTES // 2)

    truncated = await publish_dead_letter(
        _as_broker(fake), "t.dlq", value, key=None, headers={bus.DLQ_REASON: "handler-failed"}
    )

    assert truncated
    assert fake.sent[0]["headers"][bus.DLQ_ORIGINAL_SIZE] == str(len(value))


async def test_other_publish_failures_reach_the_caller_so_the_record_is_read_again() -> None:
    class Down(SizeLimitedBroker):
        async def publish(self, value: bytes, topic: str, **kwargs: Any) -> None:
            raise ConnectionError("broker unreachable")

    with pytest.raises(ConnectionError):
        await publish_dead_letter(_as_broker(Down()), "t.dlq", b"x", key=None, headers={})


def test_dlq_headers_survive_truncation_capped() -> None:
    _, _, headers = truncated_copy(b"x", None, {bus.DLQ_ERROR: "e" * 5000})

    assert headers[bus.DLQ_ERROR] == "e" * 2000


async def test_service_dead_letter_of_a_huge_envelope_sends_a_truncated_copy(
    tmp_path: Path, make_test_event: MakeEvent, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_test_event()
    service = Service("things", settings=auth_settings(home=tmp_path), store=InMemoryObjectStore())
    fake = SizeLimitedBroker()
    monkeypatch.setattr(service.broker, "publish", fake.publish)
    envelope = envelope_for(model(item_id="a", note="n" * (2 * ONE_MIB)), source="test")

    await service.dead_letter(envelope, "invalid-records", error="too many rows")

    (sent,) = fake.sent
    assert sent["topic"] == spec_for(model).dlq_topic
    assert sent["headers"][bus.DLQ_REASON] == "invalid-records"
    assert sent["headers"][bus.DLQ_ERROR] == "too many rows"
    assert sent["headers"][bus.DLQ_TRUNCATED] == "true"
    assert int(sent["headers"][bus.DLQ_ORIGINAL_SIZE]) > 2 * ONE_MIB
    assert sent["value"].startswith(b'{"')
    assert sent["correlation_id"] == envelope.correlation_id
