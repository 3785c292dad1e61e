"""Wiring of the edge service: fleets, devices, packaging, staged rollouts and the device routes."""

from __future__ import annotations

from cairn.service import Service, lazy_service
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore

from services.edge.agents import DeviceApi
from services.edge.config import EdgeSettings
from services.edge.handlers import EdgeHandlers
from services.edge.routes import deployments, fleets, packages


def create_service(
    settings: CairnSettings | None = None,
    store: ObjectStore | None = None,
    config: EdgeSettings | None = None,
) -> Service:
    """The edge service; tests pass their own settings and store."""
    service = Service("edge", settings=settings, store=store)
    handlers = EdgeHandlers(service.store, service.box, config or EdgeSettings(), service)
    service.api.state.edge = handlers
    service.api.state.edge_devices = DeviceApi(handlers)
    service.background("edge-rollouts", handlers.sweep_forever)
    for router in (fleets, packages, deployments):
        service.include_router(router)
    return service


__getattr__ = lazy_service(create_service)
