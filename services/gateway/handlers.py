"""Gateway handlers: endpoint state (snapshot + hot updates), metrics reports, access keys."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from cairn.access_keys import AccessKey, create_access_key
from cairn.bus import kafka_client_options
from cairn.bus.lag import existing_partitions, fetch_high_watermarks
from cairn.contracts import decode_envelope, spec_for
from cairn.contracts.events import EndpointMetricsReported, EndpointUpdated, VariantTraffic
from cairn.errors import CairnError
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore

from services.gateway.domain import endpoint_state_from_document
from services.gateway.gateway import Gateway
from services.gateway.metrics import VariantMeter, percentiles_ms

log = logging.getLogger("cairn.gateway")

ENDPOINTS_PREFIX = "deployer/endpoints/"
_TOPIC_WAIT_S = 0.5


def read_endpoint_states(store: ObjectStore) -> list[EndpointUpdated]:
    """The deployer's current desired state of every endpoint (blocking)."""
    states: list[EndpointUpdated] = []
    for info in store.list(ENDPOINTS_PREFIX, recursive=False):
        if not info.key.endswith(".json"):
            continue
        try:
            states.append(endpoint_state_from_document(store.get_bytes(info.key)))
        except (CairnError, ValueError) as error:
            log.error("skipping unreadable endpoint document %s: %s", info.key, error)
    return states


async def apply_endpoint_update(gateway: Gateway, update: EndpointUpdated) -> None:
    """Apply one state; a model that fails to load leaves the previous revision serving."""
    try:
        await gateway.apply(update)
    except CairnError as error:
        log.error(
            "endpoint %s revision %d not applied (%s): the previous revision keeps serving",
            update.endpoint_name,
            update.revision,
            error.message,
        )


class EndpointUpdates:
    """Every EndpointUpdated, to every replica: a group-less reader of all partitions.

    No consumer group means no partition is taken from another replica and nothing is committed.
    Start-up is race-free: the reader fixes its positions at the end of the log first, then the
    stored states are applied, then everything published after those positions (rule 6 of the
    architecture: the deployer writes the document before it publishes the event).
    """

    def __init__(
        self,
        settings: CairnSettings,
        on_update: Callable[[EndpointUpdated], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self.on_update = on_update
        self.topic = spec_for(EndpointUpdated).topic
        self._consumer: AIOKafkaConsumer | None = None

    async def position_at_end(self) -> None:
        consumer = AIOKafkaConsumer(
            **kafka_client_options(self.settings, client_id="cairn-gateway-endpoints"),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        self._consumer = consumer
        partitions = await existing_partitions(consumer, [self.topic])
        while not partitions:
            await asyncio.sleep(_TOPIC_WAIT_S)
            partitions = await existing_partitions(consumer, [self.topic])
        consumer.assign(partitions)
        await fetch_high_watermarks(consumer, partitions)

    async def run(self) -> None:
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("position_at_end() must run first")
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=1000)
            except KafkaError as error:
                log.warning("reading endpoint updates failed, retrying: %r", error)
                await asyncio.sleep(1.0)
                continue
            for records in batches.values():
                for record in records:
                    await self._handle(record.value)

    async def _handle(self, value: bytes | None) -> None:
        if value is None:
            return
        try:
            envelope = decode_envelope(value)
        except CairnError as error:
            log.error("undecodable message on %s: %s", self.topic, error.message)
            return
        if isinstance(envelope.data, EndpointUpdated):
            await self.on_update(envelope.data)

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()


def metrics_reports(meters: list[VariantMeter], window_s: float) -> list[EndpointMetricsReported]:
    """One report per endpoint with traffic in the window (the windows are taken)."""
    by_endpoint: dict[str, list[VariantTraffic]] = {}
    for meter in meters:
        window = meter.take_window()
        if not window.requests:
            continue
        p50, p99 = percentiles_ms(window.latencies_ms)
        by_endpoint.setdefault(meter.endpoint, []).append(
            VariantTraffic(
                variant_name=meter.variant,
                requests=window.requests,
                errors=window.errors,
                p50_latency_ms=p50,
                p99_latency_ms=p99,
            )
        )
    return [
        EndpointMetricsReported(endpoint_name=name, window_s=window_s, variants=variants)
        for name, variants in sorted(by_endpoint.items())
    ]


async def report_metrics_forever(
    gateway: Gateway, publish: Callable[[Any], Awaitable[Any]], every_s: float
) -> None:
    while True:
        await asyncio.sleep(every_s)
        for report in metrics_reports(gateway.table.meters(), every_s):
            try:
                await publish(report)
            except Exception:
                log.exception("could not publish metrics of %s", report.endpoint_name)


async def refresh_keys_forever(gateway: Gateway, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        try:
            await asyncio.to_thread(gateway.keys.reload)
        except Exception:
            log.exception("could not re-read access keys")


async def create_key(gateway: Gateway, description: str) -> AccessKey:
    """Create and store a key; it works on this replica at once, on others on first use."""
    key = await asyncio.to_thread(create_access_key, gateway.service.store, description)
    gateway.keys.add(key)
    return key
