"""Wiring of the console: the page's files, its API, the proxy to the services and the bus tail.

The console handles no events of its own: it reads the platform through the services' public
HTTP APIs (as the signed-in caller) and watches the bus with a consumer that never commits.
"""

from __future__ import annotations

from importlib import resources

import httpx
from cairn.service import Service, lazy_service
from cairn.settings import CairnSettings
from cairn.static_front import StaticFront
from cairn.store.base import ObjectStore
from fastapi import FastAPI
from starlette.types import ASGIApp

from services.console import events, routes
from services.console.areas import discover_areas
from services.console.config import ConsoleSettings
from services.console.upstream import Upstream, allowed_services

PLOTLY_BUNDLE = "vendor/plotly.min.js"
# Plotly sets styles on its own elements (CSSOM), and its WebGL traces compile shaders at run time.
CONSOLE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)


def page_front(api: FastAPI) -> ASGIApp:
    """`/ui/` from `static/`, plus plotly.js from the installed `plotly` package (no CDN)."""
    bundle = resources.files("plotly") / "package_data" / "plotly.min.js"
    return StaticFront(api, "services.console", extra={PLOTLY_BUNDLE: bundle}, csp=CONSOLE_CSP)


def create_service(
    settings: CairnSettings | None = None,
    store: ObjectStore | None = None,
    config: ConsoleSettings | None = None,
) -> Service:
    """The console service; tests pass their own settings, store and console settings."""
    # The bus tail reads every topic: on a production Kafka it needs the read-everything ACLs the
    # kernel grants a service that measures lag (`cairn contracts` renders them).
    service = Service("console", settings=settings, store=store, measures_lag=True)
    config = config or ConsoleSettings()
    service.api.state.console_settings = config
    found = discover_areas()
    service.api.state.console_areas = found
    tail = events.BusTail(service.settings, config.events_kept, config.events_replayed)
    service.api.state.console_events = tail
    service.background("console-bus-tail", tail.run)

    async def open_upstream() -> Upstream:
        client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        names = allowed_services(service.settings)
        upstream = Upstream(service.settings, config, client, names)
        service.api.state.console_upstream = upstream
        return upstream

    async def close_upstream(upstream: Upstream) -> None:
        await upstream.client.aclose()

    service.resource("console-upstream", open_upstream, close_upstream)
    service.include_router(routes.router)
    service.include_router(events.router)
    for entry in found:
        if entry.router is not None:
            service.include_router(entry.router)
    service.front(page_front)
    return service


__getattr__ = lazy_service(create_service)
