"""The overview: every service's health, the worker pools, live events, failures, dead letters."""

from __future__ import annotations

import asyncio
from typing import Any

from cairn.auth.http import requires
from cairn.errors import CairnError
from fastapi import APIRouter, Request

from services.console.areas import Area
from services.console.upstream import upstream_of

AREA = Area(name="overview", title="Overview", order=0, services=())
router = APIRouter(prefix="/api/overview", tags=["overview"])


async def _probe(request: Request, name: str, url: str) -> dict[str, Any]:
    """One service's liveness and readiness (the probes need no credential)."""
    upstream = upstream_of(request)
    timeout_s = upstream.config.health_timeout_s
    answer: dict[str, Any] = {"name": name, "url": url, "healthy": False, "ready": False}
    try:
        live, ready = await asyncio.gather(
            upstream.call(name, "healthz", timeout_s=timeout_s),
            upstream.call(name, "readyz", timeout_s=timeout_s),
        )
    except CairnError as error:
        answer["error"] = error.message
        return answer
    answer["healthy"] = live.status_code == 200
    answer["ready"] = ready.status_code == 200
    if ready.status_code != 200:
        answer["error"] = ready.text[:300]
    return answer


@router.get("/services", dependencies=[requires("read")])
async def services_health(request: Request) -> list[dict[str, Any]]:
    """Every running service's `/healthz` and `/readyz`, asked at once."""
    running = await upstream_of(request).urls()
    return list(
        await asyncio.gather(*(_probe(request, name, url) for name, url in sorted(running.items())))
    )
