"""The services behind the console: where each one answers, and calls to them as the caller.

The console holds no power of its own over the platform: every call it makes for the page carries
the caller's own `Authorization` header, so the owning service checks the key's scopes (a read-only
key gets that service's 403) and audits a change under the caller's principal. The header goes
only to the platform's own services (the allowlist), at the URLs `cairn up` recorded or the
operator set (`CAIRN_<SERVICE>_URL`), never to a URL the request names.
"""

from __future__ import annotations

import asyncio
import json as _json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from cairn.errors import NotFound, Unavailable
from cairn.runtime.discovery import discover_services
from cairn.settings import CairnSettings
from cairn_sdk.urls import SERVICES, service_urls
from fastapi import Request

from services.console.config import ConsoleSettings
from services.console.domain import proxied_path

# Services the SDK does not list but the page reads (drift runs, worker pools, feature groups).
PLATFORM_EXTRAS = ("monitor", "autoscaler", "featurestore")
SELF = "console"
# Request headers worth passing on; everything else (cookies, hop-by-hop) stays here.
FORWARDED_REQUEST_HEADERS = ("authorization", "content-type", "accept", "x-correlation-id")


def allowed_services(settings: CairnSettings) -> frozenset[str]:
    """The platform's own services: every one `cairn up` can run, the SDK's, and the extras."""
    try:
        discovered = {spec.name for spec in discover_services(settings)}
    except Exception:  # a bad CAIRN_SERVICES_PATHS must not take the console down
        discovered = set()
    return frozenset({*SERVICES, *PLATFORM_EXTRAS, *discovered} - {SELF})


def resolve_urls(
    settings: CairnSettings,
    names: frozenset[str],
    configured: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Each allowed service's base URL: `configured` (CAIRN_CONSOLE_SERVICE_URLS), else
    CAIRN_<NAME>_URL, else the platform running on home."""
    environ = os.environ if env is None else env
    urls = service_urls(home=settings.home, env=environ)
    for name in names:
        explicit = (configured or {}).get(name) or environ.get(f"CAIRN_{name.upper()}_URL")
        if explicit:
            urls[name] = explicit.rstrip("/")
    return {name: url for name, url in urls.items() if name in names}


@dataclass
class Upstream:
    """The allowlist, the URLs (re-read every `urls_refresh_s`) and one pooled HTTP client."""

    settings: CairnSettings
    config: ConsoleSettings
    client: httpx.AsyncClient
    names: frozenset[str] = frozenset()
    _urls: dict[str, str] = field(default_factory=dict)
    _read_at: float = float("-inf")

    async def urls(self) -> dict[str, str]:
        if time.monotonic() - self._read_at >= self.config.urls_refresh_s:
            self._urls = await asyncio.to_thread(
                resolve_urls, self.settings, self.names, self.config.service_urls
            )
            self._read_at = time.monotonic()
        return dict(self._urls)

    async def url_of(self, service: str) -> str:
        """NotFound for a service that is not the platform's or does not run here."""
        if service not in self.names:
            raise NotFound(f"no service {service!r} on this platform", service=service)
        url = (await self.urls()).get(service)
        if url is None:
            raise NotFound(f"service {service!r} is not running on this platform", service=service)
        return url

    async def call(
        self,
        service: str,
        path: str,
        *,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        params: Any = None,
        content: bytes | None = None,
        timeout_s: float | None = None,
    ) -> httpx.Response:
        """One request to `service`; NotFound/InvalidInput before sending, Unavailable when the
        service cannot be reached (refused, timed out)."""
        target = f"{await self.url_of(service)}/{proxied_path(path)}"
        try:
            return await self.client.request(
                method,
                target,
                headers=dict(headers or {}),
                params=params,
                content=content,
                timeout=timeout_s or self.config.proxy_timeout_s,
            )
        except httpx.HTTPError as error:
            raise Unavailable(
                f"service {service!r} did not answer: {type(error).__name__}", service=service
            ) from error

    async def get_json(
        self, request: Request, service: str, path: str, params: Any = None
    ) -> tuple[int, Any]:
        """GET `path` of `service` as the caller (for an area's aggregation route): status, body.

        A body that is not JSON comes back as `{"error": <text>}`.
        """
        answer = await self.call(service, path, headers=caller_headers(request), params=params)
        try:
            return answer.status_code, answer.json()
        except ValueError:
            return answer.status_code, {"error": answer.text[:500]}


async def call_service(
    request: Request,
    service: str,
    method: str,
    path: str,
    params: Any = None,
    json: Any = None,
) -> httpx.Response:
    """Call `service` as the caller (their Authorization forwarded), for an area's router.

    The same allowlist and errors as the proxy: NotFound (404), InvalidInput (400), Unavailable
    (503). The answer comes back whole (status, headers, text or JSON) for the router to shape.
    """
    headers = caller_headers(request)
    content = None
    if json is not None:
        content = _json.dumps(json).encode()
        headers["content-type"] = "application/json"
    return await upstream_of(request).call(
        service, path, method=method, headers=headers, params=params, content=content
    )


def caller_headers(request: Request) -> dict[str, str]:
    """The caller's own credential and content headers, to pass on unchanged."""
    return {
        name: request.headers[name] for name in FORWARDED_REQUEST_HEADERS if name in request.headers
    }


def upstream_of(request: Request) -> Upstream:
    """The console's `Upstream` (area routers call this)."""
    upstream: Upstream = request.app.state.console_upstream
    return upstream
