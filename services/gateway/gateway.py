"""The inference hot path: a plain ASGI front for invocations, the rest goes to the FastAPI app.

`POST /endpoints/{name}/invocations`, `POST /invocations` and `GET /ping` are answered here without
FastAPI's dependency injection, pydantic or middleware stack (measured: ~0.2 ms a request on these
machines), with the same JSON errors. Credentials are checked by the kernel's `Authenticator`, the
same one the FastAPI guard uses; the key needs `invoke` on the endpoint. Every other path (OIP v2,
`/endpoints`, admin, probes, /metrics) is passed to the service's FastAPI app unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
from cairn.auth.principal import Principal
from cairn.builtins.structured import StructuredModel
from cairn.contracts.events import EndpointUpdated
from cairn.errors import CairnError, Forbidden, InvalidInput, Unavailable
from cairn.inference import (
    CSV,
    JSON,
    JSONLINES,
    explanation_records,
    format_response,
    media_type,
    parse_body,
)
from cairn.service import Service
from opentelemetry import trace
from prometheus_client import Counter
from starlette.types import ASGIApp, Receive, Scope, Send

from services.gateway.asgi import (
    H_CUSTOM_ATTRIBUTES,
    decode_headers,
    read_body,
    send_error,
    send_invocation,
    send_json,
    server_span,
)
from services.gateway.capture import Captured, CaptureWriter
from services.gateway.config import GatewaySettings
from services.gateway.container_models import ContainerModels
from services.gateway.domain import explanations_requested, resolve_target_model
from services.gateway.gpu import GpuServing, with_device
from services.gateway.human_loop import HumanLoop
from services.gateway.instances import ScaledToZero
from services.gateway.metrics import VariantMeter
from services.gateway.runtime import (
    EndpointRuntime,
    ModelCache,
    RoutingTable,
    ServingModel,
    VariantRuntime,
)
from services.gateway.sagemaker_errors import CredentialRejected, EndpointNotFound, ModelFailed
from services.gateway.script_models import ScriptModels
from services.gateway.served_models import ServedModel

log = logging.getLogger("cairn.gateway")

H_TARGET_VARIANT = "x-amzn-sagemaker-target-variant"
H_TARGET_MODEL = "x-amzn-sagemaker-target-model"
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


class _Call:
    """What one invocation's bookkeeping needs once it ends: its variant's meter and status."""

    __slots__ = ("meter", "status")

    def __init__(self) -> None:
        self.meter: VariantMeter | None = None
        self.status = 500


class Gateway:
    """Routing table, models, auth, capture and the invocation handler of one gateway replica."""

    def __init__(self, service: Service, settings: GatewaySettings) -> None:
        self.service = service
        self.settings = settings
        self.executor = ThreadPoolExecutor(
            max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="cairn-predict"
        )
        self.scripts = ScriptModels(
            start_timeout_s=settings.script_start_timeout_s,
            timeout_s=settings.script_invocation_timeout_s,
            containers=ContainerModels(
                engine_url=settings.container_engine_url,
                network=settings.container_network,
                instance=settings.container_instance
                or f"{socket.gethostname()}-{settings.process_index}",
                start_timeout_s=settings.script_start_timeout_s,
                timeout_s=settings.script_invocation_timeout_s,
            ),
        )
        self.gpu = GpuServing(settings, self.executor)
        self.cache = ModelCache(
            service.store,
            self.executor,
            budget_bytes=settings.mme_cache_bytes,
            batch_max_rows=settings.batch_max_size,
            batch_max_wait_s=settings.batch_max_wait_ms / 1000.0,
            batch_inline_max_rows=settings.batch_inline_max_rows,
            loader=self.gpu.loader(self.scripts.load),
            on_evict=self.scripts.evicted,
        )
        self.table = RoutingTable(self.cache, VariantMeter)
        self.authenticator = service.authenticator
        self.capture = CaptureWriter(
            service.store,
            service.publish,
            flush_s=settings.capture_flush_s,
            flush_records=settings.capture_flush_records,
        )
        self.human_loop = HumanLoop(service.publish)
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

    async def is_ready(self) -> bool:
        """The `/readyz` check: stored endpoints are loaded."""
        return self.ready

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
        """One SageMaker InvokeEndpoint call, start to finish: answered, metered and traced."""
        started = time.perf_counter()
        self.in_flight += 1
        headers = decode_headers(scope)
        span = server_span("POST " + INVOCATION_ROUTE, headers)
        call = _Call()
        try:
            await self._invoke(scope, receive, send, name, headers, span, call)
        except CairnError as error:
            span.set_attribute("cairn.error", error.code)
            call.status = await send_error(send, error)
        except Exception as error:  # a bug: logged with its traceback, answered as JSON
            span.record_exception(error)
            log.exception("invocation of %s failed", name)
            await send_error(send, CairnError("internal error"))
        finally:
            self.in_flight -= 1
            span.set_attribute("http.response.status_code", call.status)
            span.end()
            if call.meter is not None:
                call.meter.observe(time.perf_counter() - started, call.status)
            else:
                UNROUTED.labels(str(call.status)).inc()

    async def _invoke(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        name: str | None,
        headers: dict[str, str],
        span: trace.Span,
        call: _Call,
    ) -> None:
        body = await read_body(receive, headers, self.settings.max_body_bytes)
        principal = self._authenticate(scope, headers, body)
        try:
            endpoint = self._endpoint_for(principal, name)
        except ScaledToZero as cold:  # a variant at 0 instances: load it, then answer
            endpoint = await self.table.warm(cold.endpoint_name)
        variant = self._variant(endpoint, headers.get(H_TARGET_VARIANT))
        call.meter = variant.meter
        span.set_attribute("cairn.endpoint", endpoint.name)
        span.set_attribute("cairn.variant", variant.name)
        serving = self._serving(endpoint, variant, headers.get(H_TARGET_MODEL))
        content_type = media_type(headers.get("content-type"))
        accept = media_type(
            headers.get("accept"),
            default=content_type if content_type in (CSV, JSON, JSONLINES) else JSON,
        )
        # user code in its own server or container, or a built-in that takes whole bodies
        if isinstance(serving.model, ServedModel | StructuredModel):
            await self._invoke_script(endpoint, variant, serving.model, headers, body, send, call)
            return
        try:  # what SageMaker's container would do: its refusals are ModelErrors
            matrix = parse_body(serving.model, content_type, body)
            if len(matrix) < self.gpu.min_rows:
                result = await self.predict(serving, matrix)
            else:  # large: the GPU where there is one (gpu.py); the answer says which served it
                result, device = await self.gpu.predict(
                    serving, variant.meter, matrix, self.predict
                )
                send = with_device(send, device)
            explanations = None
            if explanations_requested(headers.get(H_EXPLANATIONS)):
                explanations = await self.explain(serving, matrix)
            out_body, out_type = format_response(
                result,
                serving.model.output_names,
                accept,
                explanations,
                envelope=serving.model.response_envelope,
            )
        except CairnError as error:
            log.info("model error on %s/%s: %s", endpoint.name, variant.name, error.message)
            raise ModelFailed(error, endpoint.name, variant.name) from error
        call.status = 200
        await send_invocation(send, out_body, out_type, variant.name, headers)
        if self.draw() < self.settings.capture_sample_rate:
            self._capture(endpoint, variant, headers, (content_type, body), (out_type, out_body))
        self.human_loop.offer(
            endpoint.name,
            variant.name,
            headers.get(H_INFERENCE_ID),
            (content_type, body),
            (out_type, out_body),
        )
        if endpoint.shadow is not None:
            self._shadow(endpoint, endpoint.shadow, matrix, headers, content_type, body, accept)

    async def _invoke_script(
        self,
        endpoint: EndpointRuntime,
        variant: VariantRuntime,
        model: ServedModel | StructuredModel,
        headers: dict[str, str],
        body: bytes,
        send: Send,
        call: _Call,
    ) -> None:
        """The body goes to the user's input_fn, Accept to its output_fn (bare media types, as
        the toolkit passes them; JSON when absent). No shadow copy: user code runs once."""
        content_type = media_type(headers.get("content-type"), default=JSON)
        accept = media_type(headers.get("accept"), default=JSON)
        try:
            out_body, out_type = await model.invoke(body, content_type, accept)
        except Unavailable:
            raise  # the platform's (no container engine), not the model's: 503
        except CairnError as error:
            log.info("model error on %s/%s: %s", endpoint.name, variant.name, error.message)
            raise ModelFailed(error, endpoint.name, variant.name) from error
        call.status = 200
        await send_invocation(send, out_body, out_type, variant.name, headers)
        if self.draw() < self.settings.capture_sample_rate:
            self._capture(endpoint, variant, headers, (content_type, body), (out_type, out_body))
        self.human_loop.offer(
            endpoint.name,
            variant.name,
            headers.get(H_INFERENCE_ID),
            (content_type, body),
            (out_type, out_body),
        )

    def _endpoint_for(self, principal: Principal, name: str | None) -> EndpointRuntime:
        """The endpoint called, once the key may invoke it (403 before 404: names do not leak)."""
        who = principal.key_id or principal.name
        if not principal.allows("invoke"):
            raise Forbidden(f"key {who} lacks scope 'invoke'", required_scope="invoke")
        endpoint_name = name if name is not None else self.default_endpoint()
        if not principal.allows("invoke", endpoint_name):
            raise Forbidden(f"key {who} may not invoke {endpoint_name!r}", required_scope="invoke")
        endpoint = self.table.endpoints.get(endpoint_name)
        if endpoint is None:
            if endpoint_name in self.table.cold:
                raise ScaledToZero(endpoint_name)
            if not self.ready:
                raise Unavailable("the gateway is still loading its endpoints: try again")
            raise EndpointNotFound(endpoint_name)
        return endpoint

    def _authenticate(self, scope: Scope, headers: dict[str, str], body: bytes) -> Principal:
        try:
            return self.authenticator.authenticate(
                method="POST",
                raw_path=scope.get("raw_path", scope["path"].encode()).decode("latin-1"),
                raw_query=scope["query_string"].decode("latin-1"),
                headers=headers,
                body=body,
            )
        except CairnError as error:
            sent = "authorization" in headers or "x-api-key" in headers
            raise CredentialRejected(error, credential_sent=sent) from error

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

    def _serving(
        self, endpoint: EndpointRuntime, variant: VariantRuntime, target_model: str | None
    ) -> ServingModel:
        """The variant's model, or the package `Target-Model` names among those the endpoint
        declares (never any other package in the store)."""
        if not target_model:
            return variant.serving
        return endpoint.models[resolve_target_model(target_model, endpoint.name, endpoint.models)]

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

    def _capture(
        self,
        endpoint: EndpointRuntime,
        variant: VariantRuntime,
        headers: dict[str, str],
        request: tuple[str, bytes],
        response: tuple[str, bytes],
    ) -> None:
        """Buffer one (media type, body) request/response pair for data capture."""
        inference_id, custom = headers.get(H_INFERENCE_ID), headers.get(H_CUSTOM_ATTRIBUTES)
        self.capture.add(
            Captured(
                endpoint.name, variant.name, time.time(), inference_id, custom, *request, *response
            )
        )

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
        run = self._run_shadow(endpoint, shadow, matrix, headers, (content_type, body), accept)
        task = asyncio.get_running_loop().create_task(run)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _run_shadow(
        self,
        endpoint: EndpointRuntime,
        shadow: VariantRuntime,
        matrix: npt.NDArray[np.float32],
        headers: dict[str, str],
        request: tuple[str, bytes],
        accept: str,
    ) -> None:
        started = time.perf_counter()
        status = 500
        try:
            serving = shadow.serving
            result = await serving.batcher.predict(matrix)
            out_body, out_type = format_response(result, serving.model.output_names, accept)
            status = 200
            self._capture(endpoint, shadow, headers, request, (out_type, out_body))
        except Exception:
            log.exception("shadow variant %s of %s failed", shadow.name, endpoint.name)
        finally:
            shadow.meter.observe(time.perf_counter() - started, status)

    # Endpoint updates ---------------------------------------------------------------------------

    async def apply(self, update: EndpointUpdated) -> bool:
        """Apply a desired endpoint state (newer revisions only); models load before the swap."""
        return await self.table.apply(update)
