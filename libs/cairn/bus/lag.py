"""Consumer-group lag that is right on Apache Kafka and on Tansu (what autoscaling is sized on).

Tansu answers ListOffsets(latest) (aiokafka's `end_offsets()`) with the base offset of the last
record batch + 1, which undercounts whenever a producer batched several records. The high-watermark
in a Fetch response is right on both, so the end of each partition is read from a fetch: seek to
the reported end (at or below the real one on any broker) and read the high-watermark back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from cairn.bus.broker import kafka_client_options
from cairn.errors import Unavailable
from cairn.settings import CairnSettings

_POLL_MS = 50


@dataclass(frozen=True)
class PartitionLag:
    """One partition's committed position against its log."""

    topic: str
    partition: int
    committed: int | None
    log_start: int
    end_offset: int

    @property
    def lag(self) -> int:
        """Records the group has not committed past; a never-committed partition lags its log."""
        position = self.log_start if self.committed is None else self.committed
        return max(0, self.end_offset - max(position, self.log_start))


@dataclass(frozen=True)
class GroupLag:
    """Lag of one consumer group over some topics."""

    group_id: str
    partitions: list[PartitionLag] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions)

    def by_topic(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for p in self.partitions:
            totals[p.topic] = totals.get(p.topic, 0) + p.lag
        return totals


async def fetch_high_watermarks(
    consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition], *, timeout_s: float = 10.0
) -> dict[TopicPartition, int]:
    """The next offset to be written on each partition, read from Fetch responses.

    The partitions must be assigned to `consumer`; their positions are left at the end of the log.
    """
    tps = list(partitions)
    if not tps:
        return {}
    reported = await consumer.end_offsets(tps)
    for tp in tps:
        consumer.seek(tp, reported[tp])
    deadline = time.monotonic() + timeout_s
    while any(consumer.highwater(tp) is None for tp in tps):
        if time.monotonic() > deadline:
            missing = [
                f"{tp.topic}[{tp.partition}]" for tp in tps if consumer.highwater(tp) is None
            ]
            raise Unavailable(f"no fetch answer for {', '.join(missing)} in {timeout_s}s")
        await consumer.getmany(*tps, timeout_ms=_POLL_MS)
    ends = {tp: int(consumer.highwater(tp)) for tp in tps}
    for tp in tps:
        consumer.seek(tp, ends[tp])
    return ends


async def existing_partitions(
    consumer: AIOKafkaConsumer, topics: Iterable[str]
) -> list[TopicPartition]:
    """Every partition of those topics that exist (missing topics have nothing to lag)."""
    await consumer.topics()
    found: list[TopicPartition] = []
    for topic in dict.fromkeys(topics):
        for partition in sorted(consumer.partitions_for_topic(topic) or ()):
            found.append(TopicPartition(topic, partition))
    return found


async def consumer_group_lag(settings: CairnSettings, group_id: str, topics: list[str]) -> GroupLag:
    """Per-partition committed offset, log start, end and lag of `group_id` over `topics`.

    Args:
        settings: where the cluster is.
        group_id: the consumer group.
        topics: the topics it consumes; partitions of missing topics are left out.
    """
    options = kafka_client_options(settings, client_id=f"cairn-lag-{group_id}")
    consumer = AIOKafkaConsumer(
        **options, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=_POLL_MS
    )
    admin = AIOKafkaAdminClient(**options)
    try:
        await consumer.start()
        await admin.start()
        tps = await existing_partitions(consumer, topics)
        if not tps:
            return GroupLag(group_id=group_id)
        # Without explicit partitions Tansu fails this call; with them both brokers answer.
        committed = await admin.list_consumer_group_offsets(group_id, partitions=tps)
        consumer.assign(tps)
        starts = await consumer.beginning_offsets(tps)
        ends = await fetch_high_watermarks(consumer, tps)
    except KafkaError as error:
        raise Unavailable(f"cannot read the lag of group {group_id!r}: {error!r}") from error
    finally:
        await asyncio.gather(consumer.stop(), admin.close(), return_exceptions=True)
    lags = []
    for tp in tps:
        meta = committed.get(tp)
        offset = meta.offset if meta is not None and meta.offset >= 0 else None
        lags.append(
            PartitionLag(
                topic=tp.topic,
                partition=tp.partition,
                committed=offset,
                log_start=starts[tp],
                end_offset=ends[tp],
            )
        )
    return GroupLag(group_id=group_id, partitions=lags)
