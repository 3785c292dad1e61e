"""Wiring of the autoscaler: pools, a backend, the polling loop in the API lifespan, GET /pools."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from cairn.bus import consumer_group_lag
from cairn.errors import NotFound, Unavailable
from cairn.pools import WorkerPool, load_pools
from cairn.service import Service, lazy_service
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore
from fastapi import FastAPI

from services.autoscaler.backends import DockerBackend, LocalProcessBackend, WorkerBackend
from services.autoscaler.backends.docker import connect_docker
from services.autoscaler.config import AutoscalerSettings
from services.autoscaler.handlers import Autoscaler

log = logging.getLogger("cairn.autoscaler")


class _ReportOnly(WorkerBackend):
    """`backend=none`: measures and decides but runs nothing (replicas stay as decided)."""

    def __init__(self) -> None:
        self._replicas: dict[str, int] = {}

    async def current(self, pool: WorkerPool) -> int:
        return self._replicas.get(pool.name, 0)

    async def scale(self, pool: WorkerPool, replicas: int) -> int:
        self._replicas[pool.name] = replicas
        return replicas


def build_backend(settings: CairnSettings, config: AutoscalerSettings) -> WorkerBackend:
    """The backend the settings name; `docker` fails fast when no engine answers."""
    if config.backend == "none":
        return _ReportOnly()
    if config.backend in ("docker", "auto"):
        try:
            client = connect_docker()
        except Unavailable:
            if config.backend == "docker":
                raise
            log.info("no Docker engine answers; running workers as local processes")
        else:
            return DockerBackend(
                client,
                settings,
                image=config.docker_image,
                network=config.docker_network,
                project=config.compose_project,
                drain_timeout_s=config.drain_timeout_s,
            )
    return LocalProcessBackend(settings, drain_timeout_s=config.drain_timeout_s)


def select_pools(settings: CairnSettings, config: AutoscalerSettings) -> list[WorkerPool]:
    """Declared pools, overridden and filtered by the settings, clamped to partitions."""
    pools = []
    for pool in load_pools(settings, clamp=False):
        if config.pools and pool.name not in config.pools:
            continue
        overrides = config.pool_overrides.get(pool.name, {})
        pools.append(WorkerPool.model_validate(pool.model_dump() | overrides).clamped())
    return pools


def create_service(
    settings: CairnSettings | None = None,
    store: ObjectStore | None = None,
    config: AutoscalerSettings | None = None,
    *,
    pools: list[WorkerPool] | None = None,
    backend: WorkerBackend | None = None,
) -> Service:
    """The autoscaler service; tests pass their own pools and backend."""
    service = Service("autoscaler", settings=settings, store=store)
    config = config or AutoscalerSettings()
    chosen = (
        [pool.clamped() for pool in pools]
        if pools is not None
        else select_pools(service.settings, config)
    )

    async def lag_of(pool: WorkerPool) -> int:
        lag = await consumer_group_lag(service.settings, pool.group_id, pool.topics())
        total: int = lag.total
        return total

    autoscaler = Autoscaler(
        chosen,
        backend or build_backend(service.settings, config),
        lag_of,
        lambda event: service.publish(event),
    )
    service.api.state.autoscaler = autoscaler
    _run_in_lifespan(service.api, autoscaler)

    @service.api.get("/pools")
    async def list_pools() -> dict[str, Any]:
        return {"pools": autoscaler.views()}

    @service.api.get("/pools/{name}")
    async def describe_pool(name: str) -> dict[str, Any]:
        status = autoscaler.status.get(name)
        if status is None:
            raise NotFound(f"no worker pool {name!r}")
        return status.view()

    return service


def _run_in_lifespan(api: FastAPI, autoscaler: Autoscaler) -> None:
    """Poll while the broker runs: start after it, stop (and drain workers) before it stops."""
    inner = api.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        async with inner(app) as state:
            # Every lag reading opens a short-lived client; its INFO chatter would flood the log.
            logging.getLogger("aiokafka").setLevel(logging.WARNING)
            autoscaler.start()
            try:
                yield state
            finally:
                await autoscaler.stop()

    api.router.lifespan_context = lifespan


__getattr__ = lazy_service(create_service)
