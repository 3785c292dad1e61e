"""Wiring of the autoscaler: declared pools, a worker backend, the polling loop, the pools API."""

from __future__ import annotations

from cairn.service import Service, lazy_service
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore

from services.autoscaler.backends import WorkerBackend, build_backend
from services.autoscaler.config import AutoscalerSettings
from services.autoscaler.handlers import Autoscaler, ConsumerGroupLag, DeclaredPools
from services.autoscaler.pools import WorkerPool
from services.autoscaler.routes import router


def create_service(
    settings: CairnSettings | None = None,
    store: ObjectStore | None = None,
    config: AutoscalerSettings | None = None,
    *,
    pools: list[WorkerPool] | None = None,
    backend: WorkerBackend | None = None,
) -> Service:
    """The autoscaler service; tests pass fixed pools (instead of declared ones) and a backend."""
    service = Service("autoscaler", settings=settings, store=store, measures_lag=True)
    config = config or AutoscalerSettings()
    backend = backend or build_backend(service.settings, config)
    autoscaler = Autoscaler(
        [pool.clamped() for pool in pools or []],
        backend,
        ConsumerGroupLag(service.settings),
        service.publish,
        discover=None if pools is not None else DeclaredPools(service.store, config),
        discovery_interval_s=config.discovery_interval_s,
    )
    service.api.state.autoscaler = autoscaler
    # Workers drain after the polling loop stops (background tasks stop before resources close).
    service.resource("worker-backend", autoscaler.open_backend, autoscaler.close_backend)
    service.background("autoscaler", autoscaler.run)
    service.include_router(router)
    return service


__getattr__ = lazy_service(create_service)
