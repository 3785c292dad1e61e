"""Data capture in SageMaker's layout: `capture/<endpoint>/<variant>/yyyy/mm/dd/hh/<file>.jsonl`.

The layout and the record are the kernel's `CaptureRecord` contract (the gateway owns it; the
monitor reads it).

The request path samples with one random draw and appends a tuple to a buffer. Every `flush_s`
seconds or `flush_records` records the buffer is serialised on the event loop in slices of
~0.2 ms, between requests, and written in a thread; each written file is announced with an
`InferenceCaptured` event. Each line is SageMaker's capture record
(`captureData.endpointInput/endpointOutput`, `eventMetadata.eventId/inferenceId/inferenceTime`),
so tools written for SageMaker Model Monitor read it unchanged.

Serialising in a thread was the gateway's p99: a thread running Python holds the GIL, and the
loop waited up to the 5 ms switch interval at each hand-over while 1,000 records were built
(bench/gateway/README.md has the profile).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cairn.contracts.events import InferenceCaptured
from cairn.contracts.state import capture_file_key
from cairn.store.base import ObjectStore

log = logging.getLogger("cairn.gateway.capture")

_TEXT_ENCODINGS = {"text/csv": "CSV", "application/json": "JSON", "application/jsonlines": "JSON"}
_SLICE_S = 0.0002  # serialising yields to waiting requests this often


@dataclass(frozen=True, slots=True)
class Captured:
    """One request/response pair as it was on the wire."""

    endpoint: str
    variant: str
    at: float  # POSIX seconds
    inference_id: str | None
    custom_attributes: str | None
    input_type: str
    input_body: bytes
    output_type: str
    output_body: bytes


_json_string = json.encoder.encode_basestring  # C; keeps non-ASCII as is, as pydantic does
_VERSION_4 = "89ab"  # RFC 4122 variant bits of a UUID's 17th hex digit


def _payload(content_type: str, body: bytes, mode: str) -> str:
    encoding = _TEXT_ENCODINGS.get(content_type)
    if encoding is not None:
        try:
            data = body.decode()
        except UnicodeDecodeError:
            encoding = None
    if encoding is None:
        encoding, data = "BASE64", base64.b64encode(body).decode()
    return (
        f'{{"observedContentType":{_json_string(content_type)},"mode":"{mode}",'
        f'"data":{_json_string(data)},"encoding":"{encoding}"}}'
    )


class _Clock:
    """`inferenceTime` strings; the part up to the second is formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, at: float) -> str:
        micros = round(at * 1_000_000)
        second, fraction = divmod(micros, 1_000_000)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{fraction:06d}Z"


def _event_id(h: str) -> str:
    """A random (version 4) UUID string from 32 random hex digits."""
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VERSION_4[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"


def capture_line(record: Captured, event_id: str, clock: _Clock) -> str:
    """One JSON line of a capture file: SageMaker's record, in `CaptureRecord`'s canonical form
    (what `CaptureRecord.model_dump_json` writes), formatted directly: a pydantic model per
    record cost ~15 us, which is what a flush of 1,000 records spent on the event loop."""
    metadata = f'"eventId":"{event_id}","inferenceTime":"{clock(record.at)}"'
    if record.inference_id is not None:
        metadata += f',"inferenceId":{_json_string(record.inference_id)}'
    if record.custom_attributes is not None:
        metadata += f',"customAttributes":{_json_string(record.custom_attributes)}'
    return (
        f'{{"captureData":{{"endpointInput":'
        f"{_payload(record.input_type, record.input_body, 'INPUT')},"
        f'"endpointOutput":{_payload(record.output_type, record.output_body, "OUTPUT")}}},'
        f'"eventMetadata":{{{metadata}}},"eventVersion":"0"}}'
    )


async def capture_lines(records: list[Captured]) -> bytes:
    """The records as a JSON-lines body, built on the event loop a slice at a time.

    Each slice lasts about `_SLICE_S`, so a request that arrives during a flush waits at most
    that long, where a thread would hold the GIL for up to 5 ms at each hand-over.
    """
    lines: list[str] = []
    randomness = os.urandom(16 * len(records)).hex()  # one call to the OS for every event id
    clock = _Clock()
    deadline = time.perf_counter() + _SLICE_S
    for index, record in enumerate(records):
        event_id = _event_id(randomness[32 * index : 32 * index + 32])
        lines.append(capture_line(record, event_id, clock))
        if time.perf_counter() > deadline:
            await asyncio.sleep(0)
            deadline = time.perf_counter() + _SLICE_S
    lines.append("")
    return "\n".join(lines).encode()


def capture_key(endpoint: str, variant: str, at: float) -> str:
    """`capture/<endpoint>/<variant>/yyyy/mm/dd/hh/<mm-ss-mmm-uuid>.jsonl` (first record time)."""
    moment = datetime.fromtimestamp(at, UTC)
    name = f"{moment:%M-%S}-{moment.microsecond // 1000:03d}-{uuid.uuid4()}"
    return capture_file_key(endpoint, variant, moment, name)


def group_by_file(records: list[Captured]) -> dict[tuple[str, str, str], list[Captured]]:
    """Records per (endpoint, variant, hour folder): each group becomes one file."""
    groups: dict[tuple[str, str, str], list[Captured]] = {}
    hours: dict[int, str] = {}
    for record in records:
        hour = int(record.at // 3600)
        if hour not in hours:
            hours[hour] = datetime.fromtimestamp(hour * 3600, UTC).strftime("%Y/%m/%d/%H")
        groups.setdefault((record.endpoint, record.variant, hours[hour]), []).append(record)
    return groups


Publisher = Callable[[InferenceCaptured], Awaitable[Any]]


class CaptureWriter:
    """Buffers captured pairs and writes them off the request path."""

    def __init__(
        self,
        store: ObjectStore,
        publish: Publisher,
        *,
        flush_s: float = 5.0,
        flush_records: int = 1000,
    ) -> None:
        self.store = store
        self.publish = publish
        self.flush_s = flush_s
        self.flush_records = flush_records
        self._buffer: list[Captured] = []
        self._full = asyncio.Event()

    def add(self, record: Captured) -> None:
        self._buffer.append(record)
        if len(self._buffer) >= self.flush_records:
            self._full.set()

    async def run(self) -> None:
        """Flush every `flush_s` or `flush_records`; when cancelled, flush what is left first."""
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), timeout=self.flush_s)
                self._full.clear()
                await self._flush_logged()
        except asyncio.CancelledError:
            await self._flush_logged()
            raise

    async def _flush_logged(self) -> None:
        try:
            await self.flush()
        except Exception:
            log.exception("capture flush failed; the records are dropped")

    async def flush(self) -> list[InferenceCaptured]:
        """Write what is buffered (one file per endpoint, variant and hour) and announce it."""
        records, self._buffer = self._buffer, []
        if not records:
            return []
        files = [
            (endpoint, variant, group, await capture_lines(group))
            for (endpoint, variant, _), group in group_by_file(records).items()
        ]
        written = await asyncio.to_thread(self._write, files)
        for event in written:
            await self.publish(event)
        return written

    def _write(
        self, files: list[tuple[str, str, list[Captured], bytes]]
    ) -> list[InferenceCaptured]:
        events: list[InferenceCaptured] = []
        for endpoint, variant, group, body in files:
            key = capture_key(endpoint, variant, group[0].at)
            self.store.put_bytes(key, body, content_type="application/jsonlines")
            events.append(
                InferenceCaptured(
                    endpoint_name=endpoint,
                    variant_name=variant,
                    capture_uri=key,
                    record_count=len(group),
                )
            )
        return events
