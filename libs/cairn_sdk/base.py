"""What every part of the client shares: the HTTP session, the services' URLs, error mapping,
and calls that outlast a service's restart."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
from cairn.errors import Unavailable

from cairn_sdk.errors import ServiceNotConfigured, error_from_response
from cairn_sdk.urls import ServiceName

RETRY_FIRST_DELAY_S = 0.25
RETRY_MAX_DELAY_S = 5.0
RECONNECT_TIMEOUT_S = 300.0


class ServiceCaller:
    """One HTTP session to the services named in `urls` (set by `Client.__init__`)."""

    urls: dict[str, str]
    _http: httpx.Client
    # Where the URLs came from (runtime.json, the environment), read again after a failed call:
    # a platform restarted by `cairn down` / `cairn up` may answer on other ports.
    _rediscover: Callable[[], dict[str, str]] | None = None

    def refresh_urls(self) -> None:
        """Read the services' URLs again from where they came from (no-op for explicit URLs)."""
        if self._rediscover is not None:
            self.urls.update(
                {name: url.rstrip("/") for name, url in self._rediscover().items() if url}
            )

    def _json_through_restarts(
        self,
        method: str,
        service: ServiceName,
        path: str,
        *,
        reconnect_timeout_s: float = RECONNECT_TIMEOUT_S,
        on_retry: Callable[[Exception], None] | None = None,
        **kwargs: Any,
    ) -> Any:
        """`_json` for an idempotent call, retried with backoff (0.25 s doubling to 5 s) while
        the service cannot be reached or answers 502/503/504, as while it restarts; the URL is
        read again before each retry. Unavailable after `reconnect_timeout_s` without an answer.
        """
        delay = RETRY_FIRST_DELAY_S
        give_up_at: float | None = None
        while True:
            try:
                return self._json(method, service, path, **kwargs)
            except Unavailable as error:
                now = time.monotonic()
                give_up_at = give_up_at or now + reconnect_timeout_s
                if now >= give_up_at:
                    raise
                if on_retry is not None:
                    on_retry(error)
                time.sleep(min(delay, max(give_up_at - now, 0.0)))
                delay = min(delay * 2, RETRY_MAX_DELAY_S)
                self.refresh_urls()

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
