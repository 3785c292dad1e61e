"""The FastAPI app every Cairn HTTP service starts from: health, readiness, metrics, errors, auth.

`create_api` gives each service the same edges so operators and clients see one behaviour:

- `GET /healthz` (alive), `GET /readyz` (dependencies reachable, else 503), `GET /metrics`
  (Prometheus text), the only routes without a credential;
- every other route behind `cairn.auth.http.guard` (authentication, the route's declared scope,
  an audit record for each change, written before the response starts);
- a server span per request that continues the caller's W3C `traceparent`;
- errors as `{"error": "...", "code": "..."}`: a `CairnError` with its own status, validation
  errors as 422 naming the bad fields, bodies over the limit as 413, anything else as a logged 500.

The request path stays a single pure-ASGI middleware (no `BaseHTTPMiddleware`): the gateway sits
on it, so per-request work is a few dict look-ups and two metric updates.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import nullcontext
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cairn import __version__
from cairn.audit import AuditRecord
from cairn.auth.http import (
    AUDIT_RESOURCE_STATE,
    AUDIT_STATE,
    UNAUTHENTICATED_PATHS,
    complete_draft,
    guard,
)
from cairn.errors import CairnError, Unauthenticated
from cairn.settings import CairnSettings
from cairn.telemetry import correlation_context

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "UNAUTHENTICATED_PATHS",
    "AuditSink",
    "ReadinessCheck",
    "create_api",
]

ReadinessCheck = Callable[[], Awaitable[bool]]
AuditSink = Callable[[AuditRecord], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
READINESS_TIMEOUT_S = 2.0
CORRELATION_HEADER = "x-correlation-id"

_logger = logging.getLogger(__name__)

_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_UNMATCHED_ROUTE = "<unmatched>"
_LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

# One set per process in the default registry, so a service's own prometheus-client metrics
# appear on the same /metrics page; `service` tells apps apart when a process hosts several.
HTTP_REQUESTS = Counter(
    "cairn_http_requests",
    "HTTP requests handled, by route template and status code.",
    ["service", "method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "cairn_http_request_duration_seconds",
    "Time from request start to the end of the response, by route template and status code.",
    ["service", "method", "route", "status"],
    buckets=_LATENCY_BUCKETS_S,
)

_STATUS_CODES = {
    400: "invalid_input",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    412: "precondition_failed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    503: "unavailable",
}


def _error_body(message: str, code: str, **details: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"error": message, "code": code}
    if details:
        body["details"] = details
    return body


_MISSING_CREDENTIALS = {
    "error": "missing credentials: send Authorization: Bearer <key_id>:<secret> "
    "(`cairn keys create`), X-API-Key, or sign with SigV4",
    "code": "unauthenticated",
}
_BEARER_CHALLENGE = ((b"www-authenticate", b"Bearer"),)


async def _send_json(
    send: Send,
    status: int,
    body: Mapping[str, Any],
    extra_headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *extra_headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class _EdgeMiddleware:
    """Counts and times each request, caps the body size and turns a crash into a logged 500."""

    def __init__(
        self, app: ASGIApp, service_name: str, max_body_bytes: int, app_state: Any
    ) -> None:
        self.app = app
        self.service_name = service_name
        self.max_body_bytes = max_body_bytes
        self.app_state = app_state
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def _observe(self, method: str, route: str, status: int, elapsed_s: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            labels = (self.service_name, method, route, str(status))
            children = (HTTP_REQUESTS.labels(*labels), HTTP_LATENCY.labels(*labels))
            self._children[key] = children
        children[0].inc()
        children[1].observe(elapsed_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"] if scope["method"] in _KNOWN_METHODS else "OTHER"
        status = 500
        response_started = False

        async def send_observed(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                await self._audit(scope, status)
            await send(message)

        content_length: int | None = None
        correlation_id: str | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                content_length = int(value) if value.isdigit() else None
            elif name == CORRELATION_HEADER.encode():
                correlation_id = value.decode("latin-1")
        try:
            if self._anonymous(scope):
                await _send_json(send_observed, 401, _MISSING_CREDENTIALS, _BEARER_CHALLENGE)
                return
            if content_length is not None and content_length > self.max_body_bytes:
                await _send_json(send_observed, 413, self._too_large())
                return
            if content_length is None:
                receive = self._capped(receive)
            with correlation_context(correlation_id) if correlation_id else nullcontext():
                await self.app(scope, receive, send_observed)
        except Exception as exc:
            # Reaching here is a bug in a handler: log it with the traceback and answer JSON.
            span = trace.get_current_span()
            span.record_exception(exc)
            span.set_status(trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}")
            _logger.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if response_started:
                raise
            await _send_json(send_observed, 500, _error_body("internal error", "internal_error"))
        finally:
            route = getattr(scope.get("route"), "path", None) or _UNMATCHED_ROUTE
            self._observe(method, route, status, time.perf_counter() - started)

    def _anonymous(self, scope: Scope) -> bool:
        """No credential at all on a guarded path: 401 before the body is read or validated."""
        authenticator = getattr(self.app_state, "authenticator", None)
        if authenticator is None or not authenticator.enabled:
            return False
        if scope["path"] in UNAUTHENTICATED_PATHS:
            return False
        return not any(name in (b"authorization", b"x-api-key") for name, _ in scope["headers"])

    async def _audit(self, scope: Scope, status: int) -> None:
        """Complete and store the route's audit draft before its response starts."""
        state = scope.get("state", {})
        draft: AuditRecord | None = state.pop(AUDIT_STATE, None)
        sink: AuditSink | None = getattr(self.app_state, "audit_sink", None)
        if draft is None or sink is None:
            return
        resource = state.get(AUDIT_RESOURCE_STATE)
        await sink(complete_draft(draft, status, self.service_name, resource))

    def _too_large(self) -> dict[str, Any]:
        return _error_body(
            f"request body exceeds {self.max_body_bytes} bytes",
            "payload_too_large",
            max_body_bytes=self.max_body_bytes,
        )

    def _capped(self, receive: Receive) -> Receive:
        """Count a body sent without Content-Length (chunked) and stop it at the limit."""
        received = 0

        async def receive_capped() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # An HTTPException passes through FastAPI's body parsing unchanged.
                    raise StarletteHTTPException(413, self._too_large()["error"])
            return message

        return receive_capped


def _validation_fields(exc: RequestValidationError) -> list[dict[str, str]]:
    return [
        {
            "field": ".".join(str(part) for part in error.get("loc", ())) or "<root>",
            "message": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in exc.errors()
    ]


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CairnError)
    async def on_cairn_error(request: Request, exc: CairnError) -> JSONResponse:
        if exc.http_status >= 500 and exc.http_status != 503:
            _logger.error("%s on %s %s", exc.code, request.method, request.url.path, exc_info=exc)
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthenticated) else None
        return JSONResponse(exc.to_dict(), status_code=exc.http_status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = _validation_fields(exc)
        summary = "; ".join(f"{item['field']}: {item['message']}" for item in fields)
        return JSONResponse(
            _error_body(f"invalid request: {summary}", "invalid_input", fields=fields),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return JSONResponse(
            _error_body(str(exc.detail), code), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def on_unhandled(request: Request, exc: Exception) -> JSONResponse:
        # Only errors raised outside `_EdgeMiddleware` (a middleware added later) land here.
        _logger.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(_error_body("internal error", "internal_error"), status_code=500)


async def _run_check(name: str, check: ReadinessCheck) -> str:
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_S):
            return "ok" if await check() else "failed"
    except TimeoutError:
        return "timeout"
    except Exception:
        _logger.warning("readiness check %s raised", name, exc_info=True)
        return "error"


def _install_probes(app: FastAPI, service_name: str) -> None:
    @app.get("/healthz", tags=["probes"], summary="Liveness: the process answers.")
    async def healthz() -> dict[str, str]:
        # The pid tells a supervisor its own child from another process holding the port.
        return {"status": "ok", "service": service_name, "pid": str(os.getpid())}

    @app.get(
        "/readyz",
        tags=["probes"],
        summary="Readiness: every dependency check passes; 503 names those that do not.",
        responses={503: {"description": "A readiness check failed."}},
    )
    async def readyz() -> JSONResponse:
        checks: dict[str, ReadinessCheck] = app.state.readiness_checks
        names = sorted(checks)
        results = await asyncio.gather(*(_run_check(name, checks[name]) for name in names))
        outcome = dict(zip(names, results, strict=True))
        failed = [name for name, result in outcome.items() if result != "ok"]
        if failed:
            body = _error_body(f"not ready: {', '.join(failed)}", "unavailable")
            return JSONResponse(
                {**body, "service": service_name, "checks": outcome}, status_code=503
            )
        return JSONResponse({"status": "ready", "service": service_name, "checks": outcome})

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(_registry()), media_type=CONTENT_TYPE_LATEST)


def _registry() -> CollectorRegistry:
    """This process's metrics; with `PROMETHEUS_MULTIPROC_DIR` set (a gateway's process pool),
    every process's, summed from the folder they all write to."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def create_api(
    service_name: str,
    settings: CairnSettings,
    *,
    readiness: dict[str, ReadinessCheck] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    **fastapi_kwargs: Any,
) -> FastAPI:
    """A FastAPI app with Cairn's probes, metrics, tracing, JSON errors and authentication.

    Every route added to it runs `cairn.auth.http.guard`; `app.state.authenticator` and
    `app.state.audit_sink` are set by `cairn.service.Service`.

    Args:
        service_name: Names the app, its metrics' `service` label and the health answers.
        settings: kernel settings kept on `app.state`; telemetry comes from `setup_telemetry`.
        readiness: Named async checks run by `/readyz`; more can be added later through
            `app.state.readiness_checks[name] = check`.
        max_body_bytes: Larger request bodies are refused with 413.
        **fastapi_kwargs: Passed to `FastAPI(...)` (title and version default to the service's).
    """
    fastapi_kwargs.setdefault("title", f"cairn-{service_name}")
    fastapi_kwargs.setdefault("version", __version__)
    fastapi_kwargs["dependencies"] = [Depends(guard), *fastapi_kwargs.get("dependencies", [])]
    app = FastAPI(**fastapi_kwargs)
    app.state.service_name = service_name
    app.state.cairn_settings = settings
    app.state.readiness_checks = dict(readiness or {})
    _install_error_handlers(app)
    _install_probes(app, service_name)
    app.add_middleware(
        _EdgeMiddleware,
        service_name=service_name,
        max_body_bytes=max_body_bytes,
        app_state=app.state,
    )
    FastAPIInstrumentor.instrument_app(
        app,
        excluded_urls="/healthz$,/readyz$,/metrics$",
        exclude_spans=["receive", "send"],
    )
    return app
