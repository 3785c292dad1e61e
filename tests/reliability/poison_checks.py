"""Send poison and a valid event behind it to a running service; check what became of them.

`attack` sends, per round, every poison record and then the valid probe event with the same key
(so on one partition, in that order). `check` waits, up to a deadline, for the valid event to be
handled (its group's processed-ledger holds its id; its answer event, if the probe names one, was
caused by it alone) and for a dead letter from the service's group for every poison record, at
its offset, saying why. Nothing here sleeps for an effect: every wait polls a sentinel.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaError
from cairn.bus.deadletter import (
    DLQ_ERROR,
    DLQ_GROUP,
    DLQ_ORIGINAL_OFFSET,
    DLQ_ORIGINAL_PARTITION,
    DLQ_ORIGINAL_SIZE,
    DLQ_REASON,
    DLQ_TRUNCATED,
)
from cairn.bus.lag import existing_partitions
from cairn.bus.ledger import ProcessedLedger
from cairn.bus.subscribe import REASON_UNAUTHORISED
from cairn.contracts import spec_for
from cairn.service import Service
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore
from pydantic import BaseModel

from tests.reliability.poison import (
    POISON_HEADER,
    Consumption,
    Poison,
    poisons,
    valid_envelope,
)
from tests.reliability.probes import BROADCAST_EFFECTS, PROBES

log = logging.getLogger(__name__)


@dataclass
class Round:
    """Poison records, then one valid event, all on the same partition."""

    data: BaseModel
    valid: dict[str, Any]
    partition: int
    valid_offset: int
    poison: list[tuple[Poison, int]] = field(default_factory=list)  # with its offset


@dataclass
class Attack:
    consumption: Consumption
    rounds: list[Round] = field(default_factory=list)

    @property
    def poison_count(self) -> int:
        return sum(len(r.poison) for r in self.rounds)


async def attack(
    producer: AIOKafkaProducer,
    consumption: Consumption,
    service: Service,
    *,
    rounds: int = 1,
    every_shape: bool = False,
) -> Attack:
    """Send each round's poison records, then its valid event, keyed alike (one partition)."""
    spec, settings = consumption.spec, service.settings
    probe = PROBES[spec.type]
    sent = Attack(consumption)
    for _ in range(rounds):
        name = f"poison-{uuid4().hex[:12]}"
        if probe.seed is not None:
            await probe.seed(service, name)
        data = probe.make(name)
        valid = valid_envelope(spec, data, settings)
        key = spec.key_of(data)
        shots = []
        for poison in poisons(spec, valid, settings, every_shape=every_shape):
            meta = await producer.send_and_wait(
                spec.topic, poison.value, key=key, headers=[POISON_HEADER]
            )
            shots.append((poison, meta))
        meta = await producer.send_and_wait(spec.topic, json.dumps(valid).encode(), key=key)
        assert {m.partition for _, m in shots} == {meta.partition}, "one key, one partition"
        sent.rounds.append(
            Round(data, valid, meta.partition, meta.offset, [(p, m.offset) for p, m in shots])
        )
    return sent


class TopicRecords:
    """Every record of some topics from their beginning, read without a group in the background."""

    def __init__(self, settings: CairnSettings, topics: set[str]) -> None:
        self.settings = settings
        self.topics = topics
        self.records: dict[str, list[ConsumerRecord[bytes, bytes]]] = defaultdict(list)
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> TopicRecords:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_bytes=16 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        await consumer.start()
        self._consumer = consumer
        partitions = await existing_partitions(consumer, sorted(self.topics))
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        self._task = asyncio.create_task(self._read(consumer))
        return self

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=200)
            except KafkaError as error:  # a broker hiccup must not end the reading
                log.warning("reading dead letters and answers failed, retrying: %r", error)
                await asyncio.sleep(0.2)
                continue
            for partition, records in batches.items():
                self.records[partition.topic].extend(records)

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()


async def _until(check: Callable[[], Awaitable[Any] | Any], deadline: float) -> bool:
    """Poll `check` (sync or async) until it is truthy; False once the deadline passes."""
    while True:
        outcome = check()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)


def _headers(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    return {name: (value or b"").decode(errors="replace") for name, value in record.headers}


def _dead_letter(
    records: TopicRecords, consumption: Consumption, partition: int, offset: int
) -> ConsumerRecord[bytes, bytes] | None:
    for record in records.records[consumption.spec.dlq_topic]:
        headers = _headers(record)
        if (
            headers.get(DLQ_GROUP) == consumption.group
            and headers.get(DLQ_ORIGINAL_PARTITION) == str(partition)
            and headers.get(DLQ_ORIGINAL_OFFSET) == str(offset)
        ):
            return record
    return None


def _answers(records: TopicRecords, answer: str, correlation_id: str) -> list[dict[str, Any]]:
    """The `answer` events in this workflow (the probe's correlation id)."""
    found = []
    for record in records.records[spec_for(answer).topic]:
        try:
            document = json.loads(record.value or b"")
        except (ValueError, RecursionError):  # the poison sent to that topic
            continue
        if (
            isinstance(document, dict)
            and document.get("type") == answer
            and document.get("correlation_id") == correlation_id
        ):
            found.append(document)
    return found


def dead_letter_problems(record: ConsumerRecord[bytes, bytes], poison: Poison) -> list[str]:
    """What is wrong with a poison record's dead letter (nothing, when it says why it failed)."""
    headers = _headers(record)
    error = headers.get(DLQ_ERROR, "")
    missing = [text for text in poison.expect if text not in error]
    problems = [f"error {error!r} does not say {text!r}" for text in missing]
    if headers.get(DLQ_REASON) != poison.reason:
        problems.append(f"reason {headers.get(DLQ_REASON)!r}, not {poison.reason!r}")
    if headers.get(POISON_HEADER[0]) != POISON_HEADER[1].decode():
        problems.append("the original's headers were not kept")
    value, copy = poison.value or b"", record.value or b""
    if poison.truncated:
        size = headers.get(DLQ_ORIGINAL_SIZE)
        if headers.get(DLQ_TRUNCATED) != "true" or size != str(len(value)):
            problems.append(f"not marked as a truncated copy: {headers}")
        if not value.startswith(copy) or len(copy) >= len(value):
            problems.append("the truncated copy is not the head of the original")
    elif copy != value:
        problems.append("the dead letter's value is not the original's")
    return problems


async def _check_round(
    consumption: Consumption,
    round_: Round,
    records: TopicRecords,
    ledger: ProcessedLedger,
    deadline: float,
) -> tuple[list[str], int]:
    problems: list[str] = []
    event_id = round_.valid["event_id"]
    if not await _until(lambda: ledger.seen(event_id), deadline):
        refused = _dead_letter(records, consumption, round_.partition, round_.valid_offset)
        why = f": dead-lettered, {_headers(refused)}" if refused is not None else ""
        problems.append(f"the valid event at offset {round_.valid_offset} was not handled{why}")
    answer = PROBES[consumption.spec.type].answers.get(consumption.service)
    correlation = round_.valid["correlation_id"]
    if answer and not await _until(lambda: _answers(records, answer, correlation), deadline):
        problems.append(f"no {answer} answered the valid event")
    elif answer:
        # The poison (same correlation id, read first) must have caused none of them.
        causes = {
            document.get("causation_id") for document in _answers(records, answer, correlation)
        }
        if causes != {event_id}:
            problems.append(f"{answer} caused by {causes - {event_id}}, not only the valid event")
    dead = 0
    for poison, offset in round_.poison:
        if consumption.observer and poison.reason == REASON_UNAUTHORISED:
            # Skipped, not dead-lettered: read before the valid event, so by now it was seen.
            if await ledger.seen(json.loads(poison.value or b"{}").get("event_id", "")):
                problems.append(f"{poison.shape} (offset {offset}) was handled by an observer")
            continue
        found: list[ConsumerRecord[bytes, bytes]] = []

        def lettered(offset: int = offset, found: list[Any] = found) -> bool:
            record = _dead_letter(records, consumption, round_.partition, offset)
            found.extend([record] if record is not None else [])
            return record is not None

        if not await _until(lettered, deadline):
            problems.append(f"{poison.shape} (offset {offset}) was not dead-lettered")
            continue
        wrong = dead_letter_problems(found[0], poison)
        problems += [f"{poison.shape}: {text}" for text in wrong]
        dead += not wrong
    return problems, dead


async def check_group(
    sent: Attack, records: TopicRecords, store: ObjectStore, deadline: float
) -> tuple[list[str], int]:
    """Problems with one attack on a consumer group, and how many dead letters were right."""
    consumption = sent.consumption
    assert consumption.group is not None
    ledger = ProcessedLedger(store, consumption.group)
    problems: list[str] = []
    dead = 0
    for round_ in sent.rounds:
        found, lettered = await _check_round(consumption, round_, records, ledger, deadline)
        problems += found
        dead += lettered
    return [f"{consumption.label}: {text}" for text in problems], dead


async def check_broadcast(sent: Attack, service: Service, deadline: float) -> list[str]:
    """A broadcast reader skips poison (no ledger, no DLQ): the valid event's effect shows."""
    effect = BROADCAST_EFFECTS.get(service.name)
    if effect is None:
        return [f"{sent.consumption.label}: no BROADCAST_EFFECTS entry to observe it by"]
    problems = []
    for data in [round_.data for round_ in sent.rounds]:
        if not await _until(functools.partial(effect, service, data), deadline):
            problems.append(f"{sent.consumption.label}: the valid event was not applied")
    return problems


async def check(
    sent: Attack, service: Service, records: TopicRecords, store: ObjectStore, deadline: float
) -> tuple[list[str], int]:
    """Problems with one attack, and how many of its dead letters were right."""
    if sent.consumption.group is None:
        return await check_broadcast(sent, service, deadline), 0
    return await check_group(sent, records, store, deadline)


def topics_to_read(consumed: list[Consumption]) -> set[str]:
    """The dead-letter topics, and the topics the probes' answers go to."""
    topics = {c.spec.dlq_topic for c in consumed}
    for c in consumed:
        answer = PROBES[c.spec.type].answers.get(c.service)
        if answer is not None:
            topics.add(spec_for(answer).topic)
    return topics


def broadcast_log_problems(attacks: list[Attack], records: list[logging.LogRecord]) -> list[str]:
    """A broadcast reader logs each undecodable record it skips (a tombstone it skips quietly)."""
    problems = []
    for sent in attacks:
        if sent.consumption.group is not None:
            continue
        prefix = f"undecodable message on {sent.consumption.spec.topic}"
        logged = [r for r in records if r.getMessage().startswith(prefix)]
        expected = sum(1 for r in sent.rounds for p, _ in r.poison if p.value is not None)
        if len(logged) < expected:
            problems.append(f"{sent.consumption.label}: {len(logged)} of {expected} logged")
    return problems
