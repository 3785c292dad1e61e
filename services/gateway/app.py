"""Wiring of the gateway: routes, background tasks and the invocation fast path on one service."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from cairn.access_keys import list_access_keys
from cairn.http import require_api_key
from cairn.service import Service, lazy_service
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore
from cairn.telemetry import setup_telemetry
from fastapi import Body, Depends, FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp

from services.gateway import handlers
from services.gateway.config import GatewaySettings
from services.gateway.gateway import Gateway
from services.gateway.v2 import v2_routes


def _install_admin(api: FastAPI, gateway: Gateway) -> None:
    guard = [Depends(require_api_key)]

    @api.post("/admin/keys", status_code=201, dependencies=guard, tags=["admin"])
    async def create_key(description: str = Body("", embed=True, max_length=200)) -> JSONResponse:
        """Create an access key; the secret is shown only in this answer."""
        key = await handlers.create_key(gateway, description)
        body = key.model_dump(mode="json")
        body["bearer_token"] = key.bearer_token
        return JSONResponse(body, status_code=201)

    @api.get("/admin/keys", dependencies=guard, tags=["admin"])
    async def list_keys() -> list[dict[str, Any]]:
        """Key ids, descriptions and status; never the secrets."""
        keys = await asyncio.to_thread(list_access_keys, gateway.service.store)
        return [key.model_dump(mode="json", exclude={"secret_access_key"}) for key in keys]

    @api.get("/endpoints", tags=["endpoints"])
    async def list_endpoints() -> list[dict[str, Any]]:
        """What this replica serves: endpoints, revisions, variants and weights."""
        return [
            {
                "endpoint_name": endpoint.name,
                "revision": endpoint.revision,
                "status": endpoint.status,
                "production_variants": [
                    variant.state.model_dump(mode="json") for variant in endpoint.production
                ],
                "shadow_variant": endpoint.shadow.state.model_dump(mode="json")
                if endpoint.shadow
                else None,
            }
            for endpoint in gateway.table.endpoints.values()
        ]


def _install_lifespan(service: Service, gateway: Gateway) -> None:
    inner = service.api.router.lifespan_context
    settings = gateway.settings

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        async with inner(app) as state:
            updates = handlers.EndpointUpdates(
                service.settings, lambda update: handlers.apply_endpoint_update(gateway, update)
            )
            await updates.position_at_end()
            await asyncio.to_thread(gateway.keys.reload)
            for update in await asyncio.to_thread(handlers.read_endpoint_states, service.store):
                await handlers.apply_endpoint_update(gateway, update)
            gateway.ready = True
            gateway.capture.start()
            tasks = [
                asyncio.create_task(updates.run(), name="gateway-endpoint-updates"),
                asyncio.create_task(
                    handlers.report_metrics_forever(
                        gateway, service.publish, settings.metrics_report_s
                    ),
                    name="gateway-metrics",
                ),
                asyncio.create_task(
                    handlers.refresh_keys_forever(gateway, settings.key_refresh_s),
                    name="gateway-keys",
                ),
            ]
            try:
                yield state
            finally:
                gateway.ready = False
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await updates.stop()
                await gateway.capture.stop()
                gateway.executor.shutdown(wait=False)

    service.api.router.lifespan_context = lifespan


def create_service(
    settings: CairnSettings | None = None,
    store: ObjectStore | None = None,
    gateway_settings: GatewaySettings | None = None,
) -> Service:
    """The gateway service; `service.api.state.gateway` is its Gateway (tests reach in there)."""
    service = Service("gateway", settings=settings, store=store)
    gateway = Gateway(service, gateway_settings or GatewaySettings())
    service.api.state.gateway = gateway
    service.api.state.readiness_checks["endpoints"] = _ready(gateway)
    for route in v2_routes(gateway):
        service.api.router.routes.append(route)
    _install_admin(service.api, gateway)
    _install_lifespan(service, gateway)
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


def _ready(gateway: Gateway) -> Any:
    async def check() -> bool:
        return gateway.ready

    return check


__getattr__ = lazy_service(create_service)
