"""What every part of the client shares: the HTTP session, the services' URLs, error mapping."""

from __future__ import annotations

from typing import Any

import httpx
from cairn.errors import Unavailable

from cairn_sdk.errors import ServiceNotConfigured, error_from_response
from cairn_sdk.urls import ServiceName


class ServiceCaller:
    """One HTTP session to the services named in `urls` (set by `Client.__init__`)."""

    urls: dict[str, str]
    _http: httpx.Client

    def url(self, service: ServiceName) -> str:
        """The base URL of `service`; ServiceNotConfigured says how to give one."""
        try:
            return self.urls[service]
        except KeyError:
            raise ServiceNotConfigured(
                f"no URL for the {service} service: start the platform with `cairn up`, pass "
                f"--target, or set CAIRN_{service.upper()}_URL",
                service=service,
            ) from None

    def _send(self, method: str, service: ServiceName, path: str, **kwargs: Any) -> httpx.Response:
        url = self.url(service) + path
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TransportError as error:
            raise Unavailable(f"cannot reach the {service} service at {url}: {error}") from None
        if response.status_code >= 400:
            raise error_from_response(response)
        return response

    def _json(self, method: str, service: ServiceName, path: str, **kwargs: Any) -> Any:
        return self._send(method, service, path, **kwargs).json()
