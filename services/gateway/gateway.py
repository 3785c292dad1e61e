"""The inference hot path: a plain ASGI front for invocations, the rest goes to the FastAPI app.

`POST /endpoints/{name}/invocations`, `POST /invocations` and `GET /ping` are answered here without
FastAPI's dependency injection, pydantic or middleware stack (measured: ~0.2 ms a request on these
machines), with the same JSON errors. Every other path (OIP v2, admin, probes, /metrics) is
passed to the service's FastAPI app unchanged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
from cairn.contracts.events import EndpointUpdated
from cairn.errors import CairnError, InvalidInput, PayloadTooLarge
from cairn.service import Service
from opentelemetry import propagate, trace
from prometheus_client import Counter
from starlette.types import ASGIApp, Receive, Scope, Send

from services.gateway.auth import Authenticator, KeyRing
from services.gateway.capture import Captured, CaptureWriter
from services.gateway.config import GatewaySettings
from services.gateway.domain import explanations_requested, target_model_prefix
from services.gateway.metrics import VariantMeter
from services.gateway.payloads import (
    CSV,
    JSON,
    JSONLINES,
    explanation_records,
    format_response,
    media_type,
    parse_body,
)
from services.gateway.runtime import (
    EndpointRuntime,
    ModelCache,
    RoutingTable,
    ServingModel,
    VariantRuntime,
)

log = logging.getLogger("cairn.gateway")
_tracer = trace.get_tracer("cairn.gateway")

H_TARGET_VARIANT = "x-amzn-sagemaker-target-variant"
H_TARGET_MODEL = "x-amzn-sagemaker-target-model"
H_CUSTOM_ATTRIBUTES = "x-amzn-sagemaker-custom-attributes"
H_INFERENCE_ID = "x-amzn-sagemaker-inference-id"
H_EXPLANATIONS = "x-amzn-sagemaker-enable-explanations"
INVOCATION_ROUTE = "/endpoints/{name}/invocations"

UNROUTED = Counter(
    "cairn_gateway_unrouted_requests",
    "Invocations refused before a variant was chosen (auth, unknown endpoint, bad body).",
    ["status"],
)


class ExplanationsUnsupported(InvalidInput):
    code = "explanations_unsupported"


def _decode_headers(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1")
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return headers


async def _read_body(receive: Receive, headers: dict[str, str], limit: int) -> bytes:
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body exceeds {limit} bytes", max_body_bytes=limit)
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes", max_body_bytes=limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def send_json(
    send: Send, status: int, document: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = json.dumps(document).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def send_error(send: Send, error: CairnError) -> None:
    """A CairnError as Cairn's JSON body, plus what SageMaker clients read (message, error type)."""
    body = error.to_dict()
    body["message"] = error.message
    error_type = "ValidationError" if error.http_status < 500 else "InternalFailure"
    headers = [(b"x-amzn-errortype", error_type.encode())]
    if error.http_status == 401:
        headers.append((b"www-authenticate", b'Bearer, AWS4-HMAC-SHA256 realm="cairn"'))
    await send_json(send, error.http_status, body, headers)


class Gateway:
    """Routing table, models, auth, capture and the invocation handler of one gateway replica."""

    def __init__(self, service: Service, settings: GatewaySettings) -> None:
        self.service = service
        self.settings = settings
        self.executor = ThreadPoolExecutor(
            max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="cairn-predict"
        )
        self.cache = ModelCache(
            service.store,
            self.executor,
            budget_bytes=settings.mme_cache_bytes,
            batch_max_rows=settings.batch_max_size,
            batch_max_wait_s=settings.batch_max_wait_ms / 1000.0,
        )
        self.table = RoutingTable(self.cache, VariantMeter)
        self.keys = KeyRing(service.store)
        self.auth = Authenticator(
            self.keys, enabled=settings.auth == "keys", max_skew_s=settings.sigv4_max_skew_s
        )
        self.capture = CaptureWriter(
            service.store,
            service.publish,
            prefix=settings.capture_prefix,
            flush_s=settings.capture_flush_s,
            flush_records=settings.capture_flush_records,
        )
        self.ready = False
        self.in_flight = 0
        self._background: set[asyncio.Task[Any]] = set()
        self.draw = random.random

    # ASGI front ------------------------------------------------------------------------------

    def asgi(self, fallback: ASGIApp) -> ASGIApp:
        """The app uvicorn serves: invocations here, everything else to `fallback`."""

        async def front(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                path: str = scope["path"]
                method: str = scope["method"]
                if method == "POST" and path.endswith("/invocations"):
                    if path.startswith("/endpoints/"):
                        name = path[len("/endpoints/") : -len("/invocations")]
                        if name and "/" not in name:
                            await self.invoke(scope, receive, send, name)
                            return
                    elif path == "/invocations":
                        await self.invoke(scope, receive, send, None)
                        return
                elif path == "/ping" and method in ("GET", "HEAD"):
                    await self.ping(send)
                    return
            await fallback(scope, receive, send)

        return front

    async def ping(self, send: Send) -> None:
        """The SageMaker container contract's health check: 200 once endpoints are loaded."""
        if self.ready:
            await send_json(send, 200, {"status": "Healthy"})
        else:
            await send_json(send, 503, {"status": "Loading"})

    def default_endpoint(self) -> str:
        if self.settings.default_endpoint:
            return self.settings.default_endpoint
        names = list(self.table.endpoints)
        if len(names) == 1:
            return names[0]
        raise InvalidInput(
            f"POST /invocations needs one default endpoint ({len(names)} are deployed): set "
            "CAIRN_GATEWAY_DEFAULT_ENDPOINT or call /endpoints/{name}/invocations"
        )

    async def invoke(self, scope: Scope, receive: Receive, send: Send, name: str | None) -> None:
        """One SageMaker InvokeEndpoint call, start to finish."""
        started = time.perf_counter()
        self.in_flight += 1
        headers = _decode_headers(scope)
        context = propagate.extract(headers) if "traceparent" in headers else None
        span = _tracer.start_span(
            "POST " + INVOCATION_ROUTE, context=context, kind=trace.SpanKind.SERVER
        )
        meter: VariantMeter | None = None
        status = 500
        try:
            body = await _read_body(receive, headers, self.settings.max_body_bytes)
            self.auth.authenticate(
                method="POST",
                raw_path=scope.get("raw_path", scope["path"].encode()).decode("latin-1"),
                raw_query=scope["query_string"].decode("latin-1"),
                headers=headers,
                body=body,
            )
            endpoint = self.table.get(name if name is not None else self.default_endpoint())
            variant = self._variant(endpoint, headers.get(H_TARGET_VARIANT))
            meter = variant.meter
            span.set_attribute("cairn.endpoint", endpoint.name)
            span.set_attribute("cairn.variant", variant.name)
            serving = await self._serving(variant, headers.get(H_TARGET_MODEL))
            content_type = media_type(headers.get("content-type"))
            accept = media_type(
                headers.get("accept"),
                default=content_type if content_type in (CSV, JSON, JSONLINES) else JSON,
            )
            matrix = parse_body(serving.model, content_type, body)
            result = await self.predict(serving, matrix)
            explanations = None
            if explanations_requested(headers.get(H_EXPLANATIONS)):
                explanations = await self.explain(serving, matrix)
            out_body, out_type = format_response(
                result, serving.model.output_names, accept, explanations
            )
            response_headers = [
                (b"content-type", out_type.encode()),
                (b"content-length", str(len(out_body)).encode()),
                (b"x-amzn-invoked-production-variant", variant.name.encode()),
            ]
            custom = headers.get(H_CUSTOM_ATTRIBUTES)
            if custom is not None:
                response_headers.append((b"x-amzn-sagemaker-custom-attributes", custom.encode()))
            status = 200
            await send({"type": "http.response.start", "status": 200, "headers": response_headers})
            await send({"type": "http.response.body", "body": out_body})
            if self.draw() < self.settings.capture_sample_rate:
                self.capture.add(
                    Captured(
                        endpoint.name,
                        variant.name,
                        time.time(),
                        headers.get(H_INFERENCE_ID),
                        custom,
                        content_type,
                        body,
                        out_type,
                        out_body,
                    )
                )
            if endpoint.shadow is not None:
                self._shadow(endpoint, endpoint.shadow, matrix, headers, content_type, body, accept)
        except CairnError as error:
            status = error.http_status
            span.set_attribute("cairn.error", error.code)
            await send_error(send, error)
        except Exception as error:  # a bug: logged with its traceback, answered as JSON
            span.record_exception(error)
            log.exception("invocation of %s failed", name)
            await send_error(send, CairnError("internal error"))
        finally:
            self.in_flight -= 1
            span.set_attribute("http.response.status_code", status)
            span.end()
            if meter is not None:
                meter.observe(time.perf_counter() - started, status)
            else:
                UNROUTED.labels(str(status)).inc()

    def _variant(self, endpoint: EndpointRuntime, target: str | None) -> VariantRuntime:
        if target:
            variant = endpoint.variants.get(target)
            if variant is None:
                raise InvalidInput(
                    f"endpoint {endpoint.name} has no production variant {target!r} "
                    f"(it has {sorted(endpoint.variants)})",
                    variants=sorted(endpoint.variants),
                )
            return variant
        picked = endpoint.pick(self.draw())
        if picked is None:
            raise InvalidInput(
                f"every production variant of {endpoint.name} has weight 0: target one with "
                "X-Amzn-SageMaker-Target-Variant"
            )
        return picked

    async def _serving(self, variant: VariantRuntime, target_model: str | None) -> ServingModel:
        if not target_model:
            return variant.serving
        return await self.cache.get(target_model_prefix(self.settings.mme_root, target_model))

    async def predict(self, serving: ServingModel, matrix: npt.NDArray[np.float32]) -> Any:
        """Predict alone on the loop when nothing else is in flight, else through the batcher."""
        batcher = serving.batcher
        if not self.settings.micro_batching:
            return await asyncio.get_running_loop().run_in_executor(
                self.executor, batcher.predict_now, matrix
            )
        if not batcher.busy and self.in_flight <= 1:
            # Requests that arrived in the same loop iteration have not started yet: one yield
            # lets them reach this point, so a burst is batched and a lone request is not.
            await asyncio.sleep(0)
            if not batcher.busy and self.in_flight <= 1:
                return batcher.predict_now(matrix)
        return await batcher.predict(matrix)

    async def explain_matrix(
        self, serving: ServingModel, matrix: npt.NDArray[np.float32]
    ) -> npt.NDArray[Any]:
        """Per-feature contributions (TreeSHAP for XGBoost), computed off the event loop."""
        try:
            contributions: npt.NDArray[Any] = await asyncio.get_running_loop().run_in_executor(
                self.executor, serving.model.explain, matrix
            )
        except NotImplementedError as error:
            raise ExplanationsUnsupported(str(error)) from None
        return contributions

    async def explain(
        self, serving: ServingModel, matrix: npt.NDArray[np.float32]
    ) -> list[dict[str, Any]]:
        contributions = await self.explain_matrix(serving, matrix)
        return explanation_records(contributions, serving.model.input_names)

    def _shadow(
        self,
        endpoint: EndpointRuntime,
        shadow: VariantRuntime,
        matrix: npt.NDArray[np.float32],
        headers: dict[str, str],
        content_type: str,
        body: bytes,
        accept: str,
    ) -> None:
        """Run the shadow variant on a copy of the request; its answer is captured, never sent."""

        async def run() -> None:
            started = time.perf_counter()
            status = 500
            try:
                serving = shadow.serving
                result = await serving.batcher.predict(matrix)
                out_body, out_type = format_response(result, serving.model.output_names, accept)
                status = 200
                self.capture.add(
                    Captured(
                        endpoint.name,
                        shadow.name,
                        time.time(),
                        headers.get(H_INFERENCE_ID),
                        headers.get(H_CUSTOM_ATTRIBUTES),
                        content_type,
                        body,
                        out_type,
                        out_body,
                    )
                )
            except Exception:
                log.exception("shadow variant %s of %s failed", shadow.name, endpoint.name)
            finally:
                shadow.meter.observe(time.perf_counter() - started, status)

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # Endpoint updates ---------------------------------------------------------------------------

    async def apply(self, update: EndpointUpdated) -> bool:
        """Apply a desired endpoint state (newer revisions only); models load before the swap."""
        return await self.table.apply(update)
