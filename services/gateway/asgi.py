"""Plain ASGI pieces of the invocation fast path: headers, body, JSON answers and the span.

The gateway answers invocations without FastAPI (see `gateway.py`), so what FastAPI would do for
a request (read a bounded body, answer errors as JSON, continue the caller's trace) is done here.
"""

from __future__ import annotations

import json
from typing import Any

from cairn.errors import CairnError, PayloadTooLarge
from opentelemetry import propagate, trace
from starlette.types import Receive, Scope, Send

from services.gateway.graph import graph_steps_header
from services.gateway.sagemaker_errors import sagemaker_error

H_CUSTOM_ATTRIBUTES = "x-amzn-sagemaker-custom-attributes"

_tracer = trace.get_tracer("cairn.gateway")


def decode_headers(scope: Scope) -> dict[str, str]:
    """Lower-case header names to values (repeated headers joined with commas)."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1")
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return headers


def server_span(name: str, headers: dict[str, str]) -> trace.Span:
    """A server span continuing the caller's W3C `traceparent`, if it sent one."""
    context = propagate.extract(headers) if "traceparent" in headers else None
    return _tracer.start_span(name, context=context, kind=trace.SpanKind.SERVER)


async def read_body(receive: Receive, headers: dict[str, str], limit: int) -> bytes:
    """The whole request body; 413 as soon as it is known to pass `limit` bytes."""
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


async def send_invocation(
    send: Send, body: bytes, content_type: str, variant: str, headers: dict[str, str]
) -> None:
    """A successful InvokeEndpoint answer: the body and SageMaker's response headers."""
    response_headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"x-amzn-invoked-production-variant", variant.encode()),
        *graph_steps_header(),
    ]
    custom = headers.get(H_CUSTOM_ATTRIBUTES)
    if custom is not None:
        response_headers.append((b"x-amzn-sagemaker-custom-attributes", custom.encode()))
    await send({"type": "http.response.start", "status": 200, "headers": response_headers})
    await send({"type": "http.response.body", "body": body})


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


async def send_error(send: Send, error: CairnError) -> int:
    """A CairnError as SageMaker answers it (see `sagemaker_errors`); returns the status sent."""
    status, body, error_type = sagemaker_error(error)
    headers = [(b"x-amzn-errortype", error_type.encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer, AWS4-HMAC-SHA256 realm="cairn"'))
    await send_json(send, status, body, headers)
    return status
