"""Wiring of the batch service: planner, assembler, shard worker and the transform-jobs API."""

from __future__ import annotations

from cairn.contracts.batch_events import (
    TransformJobRequested,
    TransformShardCompleted,
    TransformShardRequested,
)
from cairn.service import Service, lazy_service
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore

from services.batch.access import GatewayAccess, issue_key_at_start
from services.batch.config import BatchSettings
from services.batch.endpoint import EndpointClient, RetryPolicy
from services.batch.handlers import BatchHandlers
from services.batch.pools import BATCH_POOL, WORKER_GROUP
from services.batch.routes import router
from services.batch.worker import ShardWorker


def create_service(
    settings: CairnSettings | None = None,
    store: ObjectStore | None = None,
    config: BatchSettings | None = None,
) -> Service:
    """The batch service (role `all`) or one pool worker (role `worker`)."""
    service = Service("batch", settings=settings, store=store)
    config = config or BatchSettings()
    access = GatewayAccess(service.store, service.box, service.settings, config.gateway_url)
    endpoints = EndpointClient(
        access.url,
        access.token,
        forget_token=access.forget,
        policy=RetryPolicy(attempts=config.gateway_attempts, backoff_s=config.gateway_backoff_s),
        timeout_s=config.gateway_timeout_s,
    )
    service.resource("endpoint-client", endpoints.opened, EndpointClient.closed)
    worker = ShardWorker(service.store, config, service, endpoints)
    service.on(
        TransformShardRequested,
        group=WORKER_GROUP,
        worker_pool=True,
        max_poll_interval_ms=config.max_poll_interval_ms,
    )(worker.on_shard)
    handlers = BatchHandlers(service.store, config, service)
    service.api.state.batch = handlers
    if config.role == "all":

        async def issue_key() -> None:
            await issue_key_at_start(service.store, service.box, service)

        service.background("gateway-key", issue_key)
        service.on(TransformJobRequested)(handlers.on_requested)
        service.on(TransformShardCompleted, max_poll_interval_ms=config.max_poll_interval_ms)(
            handlers.assembler.on_shard_completed
        )
        service.declare_worker_pool(BATCH_POOL)
    service.include_router(router)
    return service


__getattr__ = lazy_service(create_service)
