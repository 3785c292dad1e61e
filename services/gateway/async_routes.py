"""InvokeEndpointAsync: `POST /endpoints/{name}/async-invocations`, answered 202 once queued.

Like InvokeEndpoint it is answered before FastAPI, with the same credential check, the same
refusals (unknown endpoint, key not allowed on it, replica still loading) and SageMaker's error
shapes, so boto3's `invoke_endpoint_async` works unchanged. Accepting a request means: its input
exists in the store's user namespaces (an inline body is stored first, under
`uploads/async/<endpoint>/`), its answer and failure keys are named under the endpoint's
`AsyncInferenceConfig` prefixes, and an `AsyncInferenceRequested` is published for the async
workers. A repeat (its answer or failure already stored) is answered with the same locations and
not queued again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from cairn.contracts.async_events import async_prefixes, location_key, location_uri
from cairn.contracts.envelope import utc_now
from cairn.contracts.state import EndpointStateView, read_state
from cairn.errors import CairnError, InvalidInput, Unavailable
from cairn.namespaces import confine
from cairn.ports import Publish
from prometheus_client import Counter
from starlette.types import ASGIApp, Receive, Scope, Send

from services.gateway.asgi import decode_headers, read_body, send_error, send_json, server_span
from services.gateway.async_requests import (
    INPUT_LOCATION_FIELD,
    AsyncHeaders,
    AsyncKeys,
    check_input,
    inline_input_key,
    parse_headers,
    request_keys,
    requested_event,
)
from services.gateway.gateway import Gateway
from services.gateway.instances import ScaledToZero

log = logging.getLogger("cairn.gateway.async")

ASYNC_ROUTE = "/endpoints/{name}/async-invocations"
_PREFIX, _SUFFIX = "/endpoints/", "/async-invocations"

ASYNC_REQUESTS = Counter(
    "cairn_gateway_async_requests",
    "InvokeEndpointAsync requests by HTTP status (202: queued or a repeat).",
    ["status"],
)


@dataclass(frozen=True, slots=True)
class Accepted:
    """A checked request: its keys, and whether it was seen (answered or failed) before."""

    keys: AsyncKeys
    repeat: bool


class AsyncInvocations:
    """The InvokeEndpointAsync front of one gateway replica."""

    def __init__(
        self,
        gateway: Gateway,
        publish: Publish,
        *,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.gateway = gateway
        self.store = gateway.service.store
        self.publish = publish
        self.new_id = new_id
        self.clock = clock
        self.max_inline_bytes = gateway.settings.async_max_inline_bytes

    def asgi(self, fallback: ASGIApp) -> ASGIApp:
        """Answer async invocations here; pass everything else to `fallback`."""

        async def front(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and scope["method"] == "POST":
                path: str = scope["path"]
                if path.startswith(_PREFIX) and path.endswith(_SUFFIX):
                    name = path[len(_PREFIX) : -len(_SUFFIX)]
                    if name and "/" not in name:
                        await self.handle(scope, receive, send, name)
                        return
            await fallback(scope, receive, send)

        return front

    async def handle(self, scope: Scope, receive: Receive, send: Send, name: str) -> None:
        """One InvokeEndpointAsync call: 202 with the locations, or SageMaker's error."""
        headers = decode_headers(scope)
        span = server_span("POST " + ASYNC_ROUTE, headers)
        status = 500
        try:
            document, answer_headers = await self._accept(scope, receive, headers, name)
            span.set_attribute("cairn.endpoint", name)
            span.set_attribute("cairn.inference_id", document["InferenceId"])
            await send_json(send, 202, document, answer_headers)
            status = 202
        except CairnError as error:
            span.set_attribute("cairn.error", error.code)
            status = await send_error(send, error)
        except Exception as error:  # a bug: logged with its traceback, answered as JSON
            span.record_exception(error)
            log.exception("async invocation of %s failed", name)
            status = await send_error(send, CairnError("internal error"))
        finally:
            span.set_attribute("http.response.status_code", status)
            span.end()
            ASYNC_REQUESTS.labels(str(status)).inc()

    async def _accept(
        self, scope: Scope, receive: Receive, headers: dict[str, str], name: str
    ) -> tuple[dict[str, Any], list[tuple[bytes, bytes]]]:
        body = await read_body(receive, headers, self.max_inline_bytes)
        principal = self.gateway._authenticate(scope, headers, body)
        with contextlib.suppress(ScaledToZero):  # queued: the async worker loads the model
            self.gateway._endpoint_for(principal, name)  # InvokeEndpoint's refusals, in order
        request = parse_headers(headers, self.new_id)
        check_input(request, len(body))
        if request.input_location is None and request.content_type is None:
            request = _with_content_type(request, headers.get("content-type"))
        accepted = await asyncio.to_thread(self._prepare, name, request, body)
        if not accepted.repeat:
            queued = requested_event(name, request, accepted.keys, self.clock())
            try:
                await self.publish(queued)
            except Exception as error:  # boto3 retries a 503; one queued twice is answered once
                log.warning("cannot queue async request %s: %r", request.inference_id, error)
                raise Unavailable("the request could not be queued: try again") from error
        else:
            log.info("async request %s of %s is a repeat", request.inference_id, name)
        output = location_uri(accepted.keys.output_key, self.store)
        failure = location_uri(accepted.keys.failure_key, self.store)
        document = {
            "InferenceId": request.inference_id,
            "OutputLocation": output,
            "FailureLocation": failure,
        }
        answer_headers = [
            (b"x-amzn-sagemaker-outputlocation", output.encode()),
            (b"x-amzn-sagemaker-failurelocation", failure.encode()),
        ]
        return document, answer_headers

    def _prepare(self, name: str, request: AsyncHeaders, body: bytes) -> Accepted:
        """Resolve the locations, check the input exists, store an inline body (store I/O)."""
        view = read_state(self.store, EndpointStateView, name)
        try:
            output_prefix, failure_prefix = async_prefixes(
                name, view.async_inference_config if view is not None else None, self.store
            )
        except InvalidInput as error:
            raise InvalidInput(
                f"endpoint {name}'s AsyncInferenceConfig is not usable: {error.message}"
            ) from error
        if request.input_location is not None:
            input_key = location_key(
                request.input_location, field=INPUT_LOCATION_FIELD, store=self.store
            )
            if not self.store.exists(input_key):
                raise InvalidInput(
                    f"{INPUT_LOCATION_FIELD}: {request.input_location!r} names no object in "
                    "the store",
                    field=INPUT_LOCATION_FIELD,
                )
        else:
            input_key = inline_input_key(name, request)
        keys = request_keys(request, input_key, output_prefix, failure_prefix)
        confine(keys.output_key, field="output location")
        confine(keys.failure_key, field="failure location")
        repeat = self.store.exists(keys.output_key) or self.store.exists(keys.failure_key)
        if not repeat and request.input_location is None:
            content_type = request.content_type or "application/octet-stream"
            self.store.put_bytes(input_key, body, content_type=content_type)
        return Accepted(keys, repeat)


def _with_content_type(request: AsyncHeaders, header: str | None) -> AsyncHeaders:
    """An inline body sent without SageMaker's content-type header keeps the HTTP one."""
    return replace(request, content_type=header) if header else request
