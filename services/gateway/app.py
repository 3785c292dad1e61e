"""Wiring of the gateway: its Gateway, handlers, routes and lifecycle on one `Service`."""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable
from functools import partial

from cairn.contracts.async_events import AsyncInferenceRequested
from cairn.contracts.events import EndpointUpdated
from cairn.contracts.review_events import HumanLoopConfigured
from cairn.service import Service, lazy_service
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore

from services.gateway.async_routes import AsyncInvocations
from services.gateway.async_worker import AsyncWorker
from services.gateway.config import GatewaySettings
from services.gateway.gateway import Gateway
from services.gateway.handlers import GatewayHandlers
from services.gateway.instances import ColdStartReporter
from services.gateway.pools import ASYNC_GROUP, ASYNC_MAX_HOLD_MS, async_pool
from services.gateway.routes import (
    endpoints_router,
    v1_models_router,
    v2_models_router,
    v2_router,
)


def create_service(
    settings: CairnSettings | None = None,
    store: ObjectStore | None = None,
    config: GatewaySettings | None = None,
) -> Service:
    """The gateway service; `service.api.state.gateway` is its Gateway (tests reach in there)."""
    config = config or GatewaySettings()
    service = Service("gateway", settings=settings, store=store)
    gateway = Gateway(service, config)
    handlers = GatewayHandlers(gateway, service.store, service.publish)
    service.api.state.gateway = gateway
    gateway.table.on_cold_start = ColdStartReporter(service.publish, config.process_index)
    if config.role == "worker":  # async requests only: models load when a request needs them
        service.resource("gateway", _opened(gateway), handlers.close)
        _run_async_requests(service, gateway)
        return service
    service.api.state.readiness_checks["endpoints"] = gateway.is_ready
    service.broadcast(EndpointUpdated)(handlers.on_endpoint_updated)
    service.resource("gateway", handlers.load_stored_endpoints, handlers.close)
    service.broadcast(HumanLoopConfigured)(gateway.human_loop.on_configured)
    service.resource("human-loops", partial(gateway.human_loop.load_stored, service.store))
    service.background("gateway-capture", gateway.capture.run)
    service.background("gateway-human-loop", gateway.human_loop.run)
    service.background("gateway-metrics", handlers.report_metrics_forever)
    service.include_router(endpoints_router)
    service.include_router(v2_router)
    service.include_router(v2_models_router)
    service.include_router(v1_models_router)
    # Invocations (sync and async) are answered before FastAPI (its middleware costs ~0.2 ms).
    async_front = AsyncInvocations(gateway, service.publish)
    service.front(lambda api: gateway.asgi(async_front.asgi(api)))
    service.declare_worker_pool(async_pool(gateway_is_member=config.role == "all"))
    if config.role == "all":
        _run_async_requests(service, gateway)
    return service


def _run_async_requests(service: Service, gateway: Gateway) -> None:
    """Join the async worker group: `async_concurrency` consumers, one request each at a time."""
    worker = AsyncWorker(service.store, gateway.cache, gateway.executor, service.publish)
    service.api.state.async_worker = worker
    service.on(
        AsyncInferenceRequested,
        group=ASYNC_GROUP,
        worker_pool=True,
        # A replica serves invocations at once; its async consumers join once it is up.
        join_after_start=True,
        max_workers=gateway.settings.async_concurrency,
        max_poll_interval_ms=ASYNC_MAX_HOLD_MS,
    )(worker.on_request)


def freeze_startup_heap(service: Service) -> None:
    """Once the gateway has started, hide its start-up heap from the cyclic garbage collector.

    The start-up heap (FastAPI, pydantic, numpy, xgboost, the loaded models: ~228,000 objects)
    made each full collection stop the event loop for ~100 ms of CPU, the gateway's worst
    latencies (bench/gateway/README.md); frozen, a full collection walks a few thousand objects.
    For the gateway's own process only (`python -m services.gateway`): objects frozen in a test
    process that builds many services would never be collected.
    """

    async def freeze() -> None:
        gc.collect()  # garbage made while starting is freed, not frozen
        gc.freeze()

    service.background("gateway-gc-freeze", freeze)


def _opened(gateway: Gateway) -> Callable[[], Awaitable[Gateway]]:
    async def open_gateway() -> Gateway:
        gateway.ready = True
        return gateway

    return open_gateway


__getattr__ = lazy_service(create_service)
