"""Copy a record that cannot be handled to its topic's `.dlq`, whatever its size.

A dead letter carries the original value, key and headers plus `cairn-dlq-*` headers saying why,
where from and after how many attempts. A record too big for the DLQ producer (aiokafka's default
`max_request_size` is 1 MiB; a broker may allow far more on the original topic) goes as a truncated
copy: the first `DLQ_TRUNCATED_VALUE_BYTES` of its value, its small headers, and
`cairn-dlq-truncated: true` with `cairn-dlq-original-size-bytes`. The subscriber must move on
past every poison record; a dead letter that can never be published would pin its partition.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from aiokafka import ConsumerRecord
from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError
from faststream.kafka import KafkaBroker

log = logging.getLogger("cairn.bus")

DLQ_HEADER_PREFIX = "cairn-dlq-"
DLQ_REASON = DLQ_HEADER_PREFIX + "reason"
DLQ_ERROR = DLQ_HEADER_PREFIX + "error"
DLQ_ERROR_TYPE = DLQ_HEADER_PREFIX + "error-type"
DLQ_ORIGINAL_TOPIC = DLQ_HEADER_PREFIX + "original-topic"
DLQ_ORIGINAL_PARTITION = DLQ_HEADER_PREFIX + "original-partition"
DLQ_ORIGINAL_OFFSET = DLQ_HEADER_PREFIX + "original-offset"
DLQ_ATTEMPTS = DLQ_HEADER_PREFIX + "attempts"
DLQ_GROUP = DLQ_HEADER_PREFIX + "group"
DLQ_FAILED_AT = DLQ_HEADER_PREFIX + "failed-at"
DLQ_TRUNCATED = DLQ_HEADER_PREFIX + "truncated"
DLQ_ORIGINAL_SIZE = DLQ_HEADER_PREFIX + "original-size-bytes"

# A copy up to this size goes whole: under the 1 MiB a default producer and broker accept,
# with room for the headers and the record batch framing.
DLQ_WHOLE_MAX_BYTES = 900 * 1024
DLQ_TRUNCATED_VALUE_BYTES = 64 * 1024
# In a truncated copy, the original's headers are kept only while they stay this small.
_TRUNCATED_HEADER_VALUE_BYTES = 4 * 1024
_TRUNCATED_HEADERS_TOTAL_BYTES = 32 * 1024
_TRUNCATED_KEY_BYTES = 1024
MAX_ERROR_CHARS = 2000

_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError)


def dead_letter_headers(
    record: ConsumerRecord[Any, Any],
    error: BaseException,
    *,
    reason: str,
    attempts: int,
    group_id: str,
) -> dict[str, str]:
    """The original message's headers plus why, where from and after how many attempts it failed."""
    headers: dict[str, str] = {}
    for name, value in record.headers or ():
        if name.startswith(DLQ_HEADER_PREFIX):
            continue
        try:
            headers[name] = value.decode() if value is not None else ""
        except UnicodeDecodeError:
            continue
    message = str(error) or type(error).__name__
    headers.update(
        {
            DLQ_REASON: reason,
            DLQ_ERROR: message[:MAX_ERROR_CHARS],
            DLQ_ERROR_TYPE: f"{type(error).__module__}.{type(error).__qualname__}",
            DLQ_ORIGINAL_TOPIC: record.topic,
            DLQ_ORIGINAL_PARTITION: str(record.partition),
            DLQ_ORIGINAL_OFFSET: str(record.offset),
            DLQ_ATTEMPTS: str(attempts),
            DLQ_GROUP: group_id,
            DLQ_FAILED_AT: datetime.now(UTC).isoformat(),
        }
    )
    return headers


def _size(value: bytes, key: bytes | None, headers: dict[str, str]) -> int:
    header_bytes = sum(len(name) + len(text.encode()) for name, text in headers.items())
    return len(value) + len(key or b"") + header_bytes


def truncated_copy(
    value: bytes, key: bytes | None, headers: dict[str, str]
) -> tuple[bytes, bytes | None, dict[str, str]]:
    """The head of `value`, a short key and the small headers, marked as truncated.

    The `cairn-dlq-*` headers always stay; other headers stay while each is at most 4 KiB and
    together at most 32 KiB, so the copy fits any producer's limit.
    """
    kept: dict[str, str] = {}
    budget = _TRUNCATED_HEADERS_TOTAL_BYTES
    for name, text in headers.items():
        size = len(name) + len(text.encode())
        if name.startswith(DLQ_HEADER_PREFIX):
            kept[name] = text[:MAX_ERROR_CHARS]
        elif size <= _TRUNCATED_HEADER_VALUE_BYTES and size <= budget:
            kept[name] = text
            budget -= size
    kept[DLQ_TRUNCATED] = "true"
    kept[DLQ_ORIGINAL_SIZE] = str(len(value))
    short_key = key[:_TRUNCATED_KEY_BYTES] if key is not None else None
    return value[:DLQ_TRUNCATED_VALUE_BYTES], short_key, kept


async def publish_dead_letter(
    broker: KafkaBroker,
    topic: str,
    value: bytes,
    *,
    key: bytes | None,
    headers: dict[str, str],
    correlation_id: str | None = None,
) -> bool:
    """Publish a dead letter whole when it fits, else truncated; True when it was truncated.

    Raises what the broker raises for anything but size (unreachable, topic missing): the caller
    reads the record again later rather than lose it.
    """
    if _size(value, key, headers) <= DLQ_WHOLE_MAX_BYTES:
        try:
            await broker.publish(
                value, topic, key=key, headers=headers, correlation_id=correlation_id
            )
            return False
        except _TOO_LARGE as error:
            log.warning("dead letter for %s too large to send whole: %r", topic, error)
    short_value, short_key, short_headers = truncated_copy(value, key, headers)
    log.warning(
        "dead-lettering a truncated copy to %s: %d of %d bytes",
        topic,
        len(short_value),
        len(value),
    )
    await broker.publish(
        short_value, topic, key=short_key, headers=short_headers, correlation_id=correlation_id
    )
    return True
