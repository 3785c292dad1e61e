"""Open Inference Protocol v2 (KServe / Triton REST) on a gateway: what the v2 routes perform.

The routes in `routes.py` decode the path and map a CairnError to the spec's `{"error": "..."}`;
everything between (lookup, infer, capture, metering) is here. A binary request (header
`Inference-Header-Content-Length`) is captured as the JSON request it stands for, so data capture
and the monitor read one shape whatever the client sent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from cairn import __version__
from cairn.errors import CairnError, InvalidInput, NotFound
from cairn.inference.tensors import split_body

from services.gateway.capture import Captured
from services.gateway.gateway import Gateway
from services.gateway.instances import ScaledToZero
from services.gateway.oip import InferRequest, infer_response, model_metadata, output_tensors
from services.gateway.runtime import EndpointRuntime, VariantRuntime

JSON = "application/json"
EXTENSIONS = ["binary_tensor_data"]

T = TypeVar("T")


def server_metadata() -> dict[str, Any]:
    return {"name": "cairn-gateway", "version": __version__, "extensions": EXTENSIONS}


def pick_variant(
    gateway: Gateway, endpoint: EndpointRuntime, version: str | None
) -> VariantRuntime:
    """The named version (variant), or one picked by the traffic weights."""
    if version is None:
        picked = endpoint.pick(gateway.draw())
        if picked is None:
            raise InvalidInput(f"every version (variant) of {endpoint.name} has weight 0")
        return picked
    variant = endpoint.variants.get(version)
    if variant is None:
        versions = sorted(endpoint.variants)
        raise NotFound(f"model {endpoint.name} has no version {version!r} (versions: {versions})")
    return variant


def lookup(
    gateway: Gateway, model: str, version: str | None
) -> tuple[EndpointRuntime, VariantRuntime | None]:
    """The endpoint a v2 model names, and its variant when a version is named."""
    endpoint = gateway.table.endpoints.get(model)
    if endpoint is None:
        if model in gateway.table.cold:  # inferences cold-start it; metadata and ready: 503
            raise ScaledToZero(model)
        raise NotFound(f"model {model!r} is not deployed")
    variant = pick_variant(gateway, endpoint, version) if version is not None else None
    return endpoint, variant


def metadata(gateway: Gateway, model: str, version: str | None) -> dict[str, Any]:
    """`GET /v2/models/{m}[/versions/{v}]`: inputs and outputs of the serving model."""
    endpoint, variant = lookup(gateway, model, version)
    serving = (variant or endpoint.production[0]).serving
    versions = [variant.name] if variant is not None else list(endpoint.variants)
    return model_metadata(endpoint.name, versions, serving.model)


def model_ready(gateway: Gateway, model: str, version: str | None) -> dict[str, Any]:
    endpoint, variant = lookup(gateway, model, version)
    body: dict[str, Any] = {"name": endpoint.name, "ready": True}
    if variant is not None:
        body["version"] = variant.name
    return body


async def metered(
    gateway: Gateway,
    model: str,
    version: str | None,
    raw: bytes,
    run: Callable[[EndpointRuntime, VariantRuntime], Awaitable[T]],
) -> T:
    """One inference on the variant `version` names (or the weights pick), metered per variant."""
    started = time.perf_counter()
    variant: VariantRuntime | None = None
    status = 500
    gateway.in_flight += 1
    try:
        if len(raw) > gateway.settings.max_body_bytes:
            raise InvalidInput(f"request body exceeds {gateway.settings.max_body_bytes} bytes")
        try:
            endpoint, named = lookup(gateway, model, version)
        except ScaledToZero:  # an inference cold-starts it, as an InvokeEndpoint does
            await gateway.table.warm(model)
            endpoint, named = lookup(gateway, model, version)
        variant = named or pick_variant(gateway, endpoint, None)
        answer = await run(endpoint, variant)
        status = 200
        return answer
    except CairnError as error:
        status = error.http_status
        raise
    finally:
        gateway.in_flight -= 1
        if variant is not None:
            variant.meter.observe(time.perf_counter() - started, status)


async def infer(
    gateway: Gateway, model: str, version: str | None, raw: bytes, header_length: str | None
) -> tuple[bytes, int | None]:
    """`POST /v2/models/{m}[/versions/{v}]/infer`: the response body and, when it carries
    binary outputs, the length of its JSON header."""

    async def run(endpoint: EndpointRuntime, variant: VariantRuntime) -> tuple[bytes, int | None]:
        return await _predict(gateway, endpoint, variant, raw, header_length)

    return await metered(gateway, model, version, raw, run)


def _parse(raw: bytes, header_length: str | None) -> InferRequest:
    header, binary = (raw, None) if header_length is None else split_body(raw, header_length)
    try:
        document = json.loads(header)
    except ValueError:
        raise InvalidInput("the inference request is not valid JSON") from None
    return InferRequest(document, binary)


async def _predict(
    gateway: Gateway,
    endpoint: EndpointRuntime,
    variant: VariantRuntime,
    raw: bytes,
    header_length: str | None,
) -> tuple[bytes, int | None]:
    infer_request = _parse(raw, header_length)
    model = variant.serving.model
    matrix = infer_request.matrix(model)
    result = await gateway.predict(variant.serving, matrix)
    contributions = None
    if infer_request.explain:
        contributions = await gateway.explain_matrix(variant.serving, matrix)
    header: dict[str, Any] = {"model_name": endpoint.name, "model_version": variant.name}
    if infer_request.id is not None:
        header["id"] = infer_request.id
    out_body, out_header_length = infer_response(
        header, result, model, infer_request, contributions
    )
    if gateway.draw() < gateway.settings.capture_sample_rate:
        in_json = raw if header_length is None else infer_request.as_json()
        out_json = out_body
        if out_header_length is not None:
            outputs = output_tensors(result, model, infer_request.requested_outputs, contributions)
            out_json = json.dumps({**header, "outputs": outputs}).encode()
        gateway.capture.add(
            Captured(
                endpoint.name,
                variant.name,
                time.time(),
                infer_request.id,
                None,
                JSON,
                in_json,
                JSON,
                out_json,
            )
        )
    return out_body, out_header_length
