"""Wiring of the gateway: its Gateway, handlers, routes and lifecycle on one `Service`."""

from __future__ import annotations

from cairn.contracts.events import EndpointUpdated
from cairn.service import Service, lazy_service
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore

from services.gateway.config import GatewaySettings
from services.gateway.gateway import Gateway
from services.gateway.handlers import GatewayHandlers
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
    service = Service("gateway", settings=settings, store=store)
    gateway = Gateway(service, config or GatewaySettings())
    handlers = GatewayHandlers(gateway, service.store, service.publish)
    service.api.state.gateway = gateway
    service.api.state.readiness_checks["endpoints"] = gateway.is_ready
    service.broadcast(EndpointUpdated)(handlers.on_endpoint_updated)
    service.resource("gateway", handlers.load_stored_endpoints, handlers.close)
    service.background("gateway-capture", gateway.capture.run)
    service.background("gateway-metrics", handlers.report_metrics_forever)
    service.include_router(endpoints_router)
    service.include_router(v2_router)
    service.include_router(v2_models_router)
    service.include_router(v1_models_router)
    # Invocations are answered before FastAPI (its middleware stack costs ~0.2 ms a request).
    service.front(gateway.asgi)
    return service


__getattr__ = lazy_service(create_service)
