"""The embedded broker keeps its log in the home: events and committed offsets outlive a restart.

Tansu runs as `cairn up` runs it (the runtime's `EmbeddedBroker` over its `BrokerLogServer`);
the S3 subset it stores through is also checked directly, for the semantics Tansu relies on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from cairn.runtime.blobstore import BrokerLogServer
from cairn.runtime.broker import EmbeddedBroker, free_port

TOPIC = "cairn.test.persisted"
FAST_JOIN = {"session_timeout_ms": 1000, "heartbeat_interval_ms": 100}  # joins in ~0.5 s on Tansu


@contextmanager
def embedded(home: Path, port: int, *, restart_broker: bool = False) -> Iterator[str]:
    """The broker with its log under `home/broker` (as `cairn up` starts it); its address."""
    log = BrokerLogServer(home / "broker")
    log.start()
    broker = EmbeddedBroker(
        log_path=home / "broker.log",
        port=port,
        storage_engine=log.storage_engine,
        env=log.broker_env(),
    )
    broker.start()
    try:
        if restart_broker:  # a crash of the broker alone: the supervisor starts it again
            broker.stop()
            broker.start()
        yield broker.bootstrap_servers
    finally:
        broker.stop()
        log.stop()


async def publish(bootstrap: str, values: list[bytes]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(TOPIC, values[0], key=b"k")
        for value in values[1:]:  # one batch of several records
            await producer.send(TOPIC, value, key=b"k")
        await producer.flush()
    finally:
        await producer.stop()


async def consume(bootstrap: str, group: str, count: int, commit: bool = False) -> list[bytes]:
    """Up to `count` values from where the group stands (the beginning for a new group)."""
    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **FAST_JOIN,
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        async with asyncio.timeout(30):
            while len(values) < count:
                batches = await consumer.getmany(timeout_ms=500, max_records=count - len(values))
                values += [
                    record.value or b"" for records in batches.values() for record in records
                ]
        if commit:
            await consumer.commit()
        return values
    finally:
        await consumer.stop()


async def committed(bootstrap: str, group: str) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, **FAST_JOIN)
    await consumer.start()
    try:
        return await consumer.committed(TopicPartition(TOPIC, 0))
    finally:
        await consumer.stop()


def test_events_and_committed_offsets_survive_down_and_up(tmp_path: Path) -> None:
    port = free_port()
    sent = [b"first", b"second", b"third", b"fourth"]
    with embedded(tmp_path, port) as bootstrap:
        asyncio.run(publish(bootstrap, sent))
        assert asyncio.run(consume(bootstrap, "reader", 2, commit=True)) == sent[:2]

    with embedded(tmp_path, port) as bootstrap:  # `cairn down`, then `cairn up`
        assert asyncio.run(consume(bootstrap, "replay", 4)) == sent
        assert asyncio.run(committed(bootstrap, "reader")) == 2
        assert asyncio.run(consume(bootstrap, "reader", 2)) == sent[2:]

    with embedded(tmp_path, port, restart_broker=True) as bootstrap:
        assert asyncio.run(consume(bootstrap, "after-crash", 4)) == sent
    assert any((tmp_path / "broker").rglob("*.batch"))


def test_the_log_store_writes_conditionally_lists_and_reads_ranges(tmp_path: Path) -> None:
    log = BrokerLogServer(tmp_path)
    log.start()
    try:
        with httpx.Client(base_url=log.endpoint + "/tansu") as s3:
            created = s3.put("/a/x.json", content=b"one", headers={"If-None-Match": "*"})
            assert created.status_code == 200
            etag = created.headers["ETag"]
            again = s3.put("/a/x.json", content=b"two", headers={"If-None-Match": "*"})
            assert again.status_code == 412
            stale = s3.put("/a/x.json", content=b"two", headers={"If-Match": '"nope"'})
            assert stale.status_code == 412
            assert s3.put("/a/x.json", content=b"two", headers={"If-Match": etag}).is_success
            assert s3.get("/a/x.json").content == b"two"
            ranged = s3.get("/a/x.json", headers={"Range": "bytes=1-"})
            assert (ranged.status_code, ranged.content) == (206, b"wo")
            assert s3.get("/a/missing").status_code == 404
            assert s3.get("/a/%2E%2E/%2E%2E/outside").status_code == 404
            for name in ("b/1", "b/2", "b/3"):
                s3.put(f"/{name}", content=name.encode())
            first = s3.get("", params={"list-type": "2", "prefix": "b/", "max-keys": "2"})
            assert "<Key>b/1</Key><" in first.text and "<Key>b/2</Key>" in first.text
            assert "<IsTruncated>true</IsTruncated>" in first.text
            rest = s3.get(
                "", params={"list-type": "2", "prefix": "b/", "continuation-token": "b/2"}
            )
            assert "<Key>b/3</Key>" in rest.text and "<Key>b/2</Key>" not in rest.text
    finally:
        log.stop()
