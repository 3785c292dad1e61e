"""Open Inference Protocol v2 routes (KServe / Triton REST), errors as `{"error": "..."}`.

Plain Starlette routes: v2 clients expect the spec's exact bodies, not Cairn's error envelope.
"""

from __future__ import annotations

import json
import time
from typing import Any

from cairn import __version__
from cairn.errors import CairnError, InvalidInput, NotFound
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.gateway.capture import Captured
from services.gateway.gateway import Gateway
from services.gateway.oip import InferRequest, model_metadata, output_tensors
from services.gateway.runtime import EndpointRuntime, VariantRuntime

_JSON = "application/json"


def _error(error: CairnError) -> JSONResponse:
    return JSONResponse({"error": error.message}, status_code=error.http_status)


def _variant(gateway: Gateway, endpoint: EndpointRuntime, version: str | None) -> VariantRuntime:
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


def v2_routes(gateway: Gateway) -> list[Route]:
    """The v2 routes bound to one gateway."""

    async def server_metadata(request: Request) -> Response:
        return JSONResponse({"name": "cairn-gateway", "version": __version__, "extensions": []})

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        # The spec: 200 means true, a 4xx means false.
        return JSONResponse({"ready": gateway.ready}, status_code=200 if gateway.ready else 400)

    def lookup(request: Request) -> tuple[EndpointRuntime, VariantRuntime | None]:
        params = request.path_params
        endpoint_name = params["model"]
        endpoint = gateway.table.endpoints.get(endpoint_name)
        if endpoint is None:
            raise NotFound(f"model {endpoint_name!r} is not deployed")
        version = params.get("version")
        variant = _variant(gateway, endpoint, version) if version is not None else None
        return endpoint, variant

    async def metadata(request: Request) -> Response:
        try:
            endpoint, variant = lookup(request)
        except CairnError as error:
            return _error(error)
        serving = (variant or endpoint.production[0]).serving
        versions = [variant.name] if variant is not None else list(endpoint.variants)
        return JSONResponse(model_metadata(endpoint.name, versions, serving.model))

    async def model_ready(request: Request) -> Response:
        try:
            endpoint, variant = lookup(request)
        except CairnError as error:
            return _error(error)
        body: dict[str, Any] = {"name": endpoint.name, "ready": True}
        if variant is not None:
            body["version"] = variant.name
        return JSONResponse(body)

    async def infer(request: Request) -> Response:
        started = time.perf_counter()
        meter = None
        status = 500
        gateway.in_flight += 1
        try:
            raw = await request.body()
            if len(raw) > gateway.settings.max_body_bytes:
                raise InvalidInput(f"request body exceeds {gateway.settings.max_body_bytes} bytes")
            headers = {name: value for name, value in request.headers.items()}
            gateway.auth.authenticate(
                method="POST",
                raw_path=request.scope.get("raw_path", b"").decode("latin-1") or request.url.path,
                raw_query=request.scope["query_string"].decode("latin-1"),
                headers=headers,
                body=raw,
            )
            endpoint, variant = lookup(request)
            variant = variant or _variant(gateway, endpoint, None)
            meter = variant.meter
            try:
                document = json.loads(raw)
            except ValueError:
                raise InvalidInput("the inference request is not valid JSON") from None
            infer_request = InferRequest(document)
            model = variant.serving.model
            matrix = infer_request.matrix(model)
            result = await gateway.predict(variant.serving, matrix)
            contributions = None
            if infer_request.explain:
                contributions = await gateway.explain_matrix(variant.serving, matrix)
            response: dict[str, Any] = {
                "model_name": endpoint.name,
                "model_version": variant.name,
                "outputs": output_tensors(
                    result, model, infer_request.requested_outputs, contributions
                ),
            }
            if infer_request.id is not None:
                response["id"] = infer_request.id
            out_body = json.dumps(response).encode()
            status = 200
            if gateway.draw() < gateway.settings.capture_sample_rate:
                gateway.capture.add(
                    Captured(
                        endpoint.name,
                        variant.name,
                        time.time(),
                        infer_request.id,
                        None,
                        _JSON,
                        raw,
                        _JSON,
                        out_body,
                    )
                )
            return Response(out_body, media_type=_JSON)
        except CairnError as error:
            status = error.http_status
            return _error(error)
        finally:
            gateway.in_flight -= 1
            if meter is not None:
                meter.observe(time.perf_counter() - started, status)

    return [
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2/models/{model}", metadata, methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}", metadata, methods=["GET"]),
        Route("/v2/models/{model}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{model}/infer", infer, methods=["POST"]),
        Route("/v2/models/{model}/versions/{version}/infer", infer, methods=["POST"]),
    ]
