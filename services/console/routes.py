"""The console's own API: who is signed in, the areas of the page, and the proxy to the services."""

from __future__ import annotations

from typing import Any

from cairn.auth.http import CurrentPrincipal, requires
from cairn.auth.scopes import ADMIN, SCOPES
from fastapi import APIRouter, Request, Response

from services.console.areas import DiscoveredArea
from services.console.upstream import caller_headers, upstream_of

router = APIRouter(prefix="/api", tags=["console"])
PROXY_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
# What a proxied answer may be served as on the console's origin; anything else (an HTML page of
# a service) goes back as an inert download, so it can never run as the console's script.
_PASSED_MEDIA_TYPES = ("application/json", "text/plain", "application/x-ndjson")
_PROXY_RESPONSE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@router.get("/me", dependencies=[requires("read")])
async def me(principal: CurrentPrincipal) -> dict[str, Any]:
    """The signed-in key: its principal and scopes (admin holds every scope)."""
    admin = ADMIN in principal.scopes
    scopes = sorted(SCOPES if admin else principal.scopes)
    return {"principal": principal.name, "scopes": scopes, "admin": admin}


@router.get("/areas", dependencies=[requires("read")])
async def areas(request: Request) -> list[dict[str, Any]]:
    """The page's navigation, in order; an area is available when its services all run here."""
    running = await upstream_of(request).urls()
    found: list[DiscoveredArea] = request.app.state.console_areas
    return [
        {
            "name": entry.area.name,
            "title": entry.area.title,
            "order": entry.area.order,
            "script": f"/ui/areas/{entry.area.name}.js",
            "services": list(entry.area.services),
            "available": all(service in running for service in entry.area.services),
        }
        for entry in found
    ]


@router.get("/services", dependencies=[requires("read")])
async def services(request: Request) -> list[dict[str, str]]:
    """The platform's services this console can reach, with their URLs."""
    running = await upstream_of(request).urls()
    return [{"name": name, "url": url} for name, url in sorted(running.items())]


async def proxy(service: str, path: str, request: Request) -> Response:
    """Forward the call to the owning service as the caller; its status and body come back.

    The console's guard only needs `read`: the owning service decides (and audits) the rest.
    """
    body = await request.body() if request.method != "GET" else None
    answer = await upstream_of(request).call(
        service,
        path,
        method=request.method,
        headers=caller_headers(request),
        params=list(request.query_params.multi_items()),
        content=body,
    )
    media_type = answer.headers.get("content-type", "").split(";")[0].strip().lower()
    headers = dict(_PROXY_RESPONSE_HEADERS)
    if media_type not in _PASSED_MEDIA_TYPES:
        headers["Content-Disposition"] = "attachment"
        return Response(
            answer.content,
            status_code=answer.status_code,
            media_type="application/octet-stream",
            headers=headers,
        )
    return Response(
        answer.content,
        status_code=answer.status_code,
        media_type=answer.headers.get("content-type"),
        headers=headers,
    )


# One route per method, each with its own operation id (the API contract stays deterministic).
for _method in PROXY_METHODS:
    router.add_api_route(
        "/proxy/{service}/{path:path}",
        proxy,
        methods=[_method],
        dependencies=[requires("read")],
        operation_id=f"proxy_{_method.lower()}",
    )
