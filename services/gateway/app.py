"""Wiring of the gateway: its Gateway, handlers, routes and lifecycle on one `Service`."""

from __future__ import annotations

import uvicorn
from cairn.contracts.events import EndpointUpdated
from cairn.service import Service, lazy_service
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore
from cairn.telemetry import setup_telemetry
from starlette.types import ASGIApp

from services.gateway.config import GatewaySettings
from services.gateway.gateway import Gateway
from services.gateway.handlers import GatewayHandlers
from services.gateway.routes import endpoints_router, v2_models_router, v2_router


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
    return service


def asgi_app(service: Service) -> ASGIApp:
    """What to serve: invocations answered before FastAPI (its native telemetry and middleware
    stack cost ~0.2 ms a request here), every other path and the lifespan passed to `service.api`.
    """
    gateway: Gateway = service.api.state.gateway
    return gateway.asgi(service.api)


def run(service: Service) -> None:
    """Serve the gateway until SIGTERM/SIGINT: `Service.run`, with the invocation fast path."""
    setup_telemetry(service.name, service.settings)
    config = uvicorn.Config(
        asgi_app(service),
        host=service.settings.http_host,
        port=service.settings.http_port,
        lifespan="on",
        log_config=None,
        access_log=False,
    )
    uvicorn.Server(config).run()


__getattr__ = lazy_service(create_service)
