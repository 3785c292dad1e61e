"""The gateway's service layer: endpoint state in (snapshot + hot updates), traffic reports out.

Endpoint state is the deployer's, read only through the kernel's `EndpointStateView` contract:
the stored snapshot once at start (an unreadable document is logged and skipped), then every
`EndpointUpdated` on every replica (a broadcast subscription, positioned before the snapshot is
read, so nothing published in between is missed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from cairn.contracts.envelope import Envelope
from cairn.contracts.events import EndpointMetricsReported, EndpointUpdated, VariantTraffic
from cairn.contracts.state import EndpointStateView, list_states
from cairn.errors import CairnError
from cairn.store.base import ObjectStore

from services.gateway.domain import update_from_view
from services.gateway.gateway import Gateway
from services.gateway.metrics import VariantMeter, percentiles_ms

log = logging.getLogger("cairn.gateway")

Publish = Callable[[Any], Awaitable[Any]]


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


class GatewayHandlers:
    """Applies endpoint states to one replica's gateway and reports its traffic."""

    def __init__(self, gateway: Gateway, store: ObjectStore, publish: Publish) -> None:
        self.gateway = gateway
        self.store = store
        self.publish = publish

    async def load_stored_endpoints(self) -> Gateway:
        """Apply every readable stored endpoint state, then declare the replica ready."""
        views = await asyncio.to_thread(list_states, self.store, EndpointStateView)
        for view in views:
            await self.apply(update_from_view(view))
        self.gateway.ready = True
        return self.gateway

    async def close(self, gateway: Gateway) -> None:
        """The replica stops: not ready any more, prediction threads released."""
        gateway.ready = False
        gateway.executor.shutdown(wait=False)
        gateway.scripts.close()

    async def on_endpoint_updated(self, envelope: Envelope[EndpointUpdated]) -> None:
        await self.apply(envelope.data)

    async def apply(self, update: EndpointUpdated) -> None:
        """Apply one state; a model that fails to load leaves the previous revision serving."""
        try:
            await self.gateway.apply(update)
        except CairnError as error:
            log.error(
                "endpoint %s revision %d not applied (%s): the previous revision keeps serving",
                update.endpoint_name,
                update.revision,
                error.message,
            )
        except Exception:  # a bug or a broken package: logged, and never stops the replica
            log.exception(
                "endpoint %s revision %d not applied: the previous revision keeps serving",
                update.endpoint_name,
                update.revision,
            )

    async def report_metrics_forever(self) -> None:
        """Every `metrics_report_s`: one EndpointMetricsReported per endpoint with traffic."""
        every_s = self.gateway.settings.metrics_report_s
        while True:
            await asyncio.sleep(every_s)
            for report in metrics_reports(self.gateway.table.meters(), every_s):
                try:
                    await self.publish(report)
                except Exception:
                    log.exception("could not publish metrics of %s", report.endpoint_name)
