"""The gateway's FastAPI routes: what a replica serves, Open Inference Protocol v2, KServe v1.

SageMaker invocations (`/endpoints/{name}/invocations`, `/invocations`, `/ping`) never reach these:
`Gateway.asgi` answers them before FastAPI. The kernel's guard authenticates every route here; v2
and v1 routes need `invoke` (on the model, i.e. the endpoint, where one is named). Their errors
are the protocols' `{"error": "..."}`, because v2 and v1 clients read exactly that.
"""

from __future__ import annotations

from typing import Annotated, Any

from cairn.auth import requires
from cairn.errors import CairnError
from cairn.inference.tensors import BINARY_MEDIA_TYPE, HEADER_LENGTH
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from services.gateway import v1, v2
from services.gateway.gateway import Gateway
from services.gateway.graph import graph_steps_header
from services.gateway.instances import cold_view
from services.gateway.runtime import loaded_models


def get_gateway(request: Request) -> Gateway:
    """The replica's Gateway, set on the app by `create_service`."""
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]

endpoints_router = APIRouter(tags=["endpoints"])
v2_router = APIRouter(prefix="/v2", tags=["v2"])
v2_models_router = APIRouter(prefix="/v2/models", tags=["v2"])
v1_models_router = APIRouter(prefix="/v1/models", tags=["v1"])
_INVOKE = [requires("invoke")]
_INVOKE_MODEL = [requires("invoke", endpoint_param="model")]


@endpoints_router.get("/endpoints", dependencies=[requires("read")])
async def list_endpoints(gateway: GatewayDep) -> list[dict[str, Any]]:
    """What this replica serves: endpoints, revisions, variants and weights (and those scaled
    to zero, with nothing loaded: `scaled_to_zero` names their variants at 0 instances)."""
    loaded = [endpoint.describe() for endpoint in gateway.table.endpoints.values()]
    return [*loaded, *(cold_view(update) for update in gateway.table.cold.values())]


@endpoints_router.get("/endpoints/{name}/models", dependencies=[requires("read")])
async def endpoint_models(name: str, gateway: GatewayDep) -> dict[str, Any]:
    """The models an endpoint serves on this replica (its Target-Model choices) and their size."""
    return {**loaded_models(gateway.table.get(name), gateway.cache), "gpu": gateway.gpu.describe()}


def _v2_error(error: CairnError) -> JSONResponse:
    return JSONResponse({"error": error.message}, status_code=error.http_status)


@v2_router.get("", dependencies=_INVOKE)
async def server_metadata() -> dict[str, Any]:
    return v2.server_metadata()


@v2_router.get("/health/live", dependencies=_INVOKE)
async def server_live() -> dict[str, Any]:
    return {"live": True}


@v2_router.get("/health/ready", dependencies=_INVOKE)
async def server_ready(gateway: GatewayDep) -> Response:
    """The spec: 200 means ready, a 4xx means not (yet)."""
    return JSONResponse({"ready": gateway.ready}, status_code=200 if gateway.ready else 400)


@v2_models_router.get("/{model}", dependencies=_INVOKE_MODEL)
async def model_metadata(model: str, gateway: GatewayDep) -> Response:
    return _metadata(gateway, model, None)


@v2_models_router.get("/{model}/versions/{version}", dependencies=_INVOKE_MODEL)
async def version_metadata(model: str, version: str, gateway: GatewayDep) -> Response:
    return _metadata(gateway, model, version)


@v2_models_router.get("/{model}/ready", dependencies=_INVOKE_MODEL)
async def model_ready(model: str, gateway: GatewayDep) -> Response:
    return _ready(gateway, model, None)


@v2_models_router.get("/{model}/versions/{version}/ready", dependencies=_INVOKE_MODEL)
async def version_ready(model: str, version: str, gateway: GatewayDep) -> Response:
    return _ready(gateway, model, version)


@v2_models_router.post("/{model}/infer", dependencies=_INVOKE_MODEL)
async def model_infer(model: str, request: Request, gateway: GatewayDep) -> Response:
    return await _infer(gateway, request, model, None)


@v2_models_router.post("/{model}/versions/{version}/infer", dependencies=_INVOKE_MODEL)
async def version_infer(
    model: str, version: str, request: Request, gateway: GatewayDep
) -> Response:
    return await _infer(gateway, request, model, version)


def _metadata(gateway: Gateway, model: str, version: str | None) -> Response:
    try:
        return JSONResponse(v2.metadata(gateway, model, version))
    except CairnError as error:
        return _v2_error(error)


def _ready(gateway: Gateway, model: str, version: str | None) -> Response:
    try:
        return JSONResponse(v2.model_ready(gateway, model, version))
    except CairnError as error:
        return _v2_error(error)


async def _infer(gateway: Gateway, request: Request, model: str, version: str | None) -> Response:
    try:
        raw = await request.body()
        header = request.headers.get(HEADER_LENGTH)
        body, header_length = await v2.infer(gateway, model, version, raw, header)
    except CairnError as error:
        return _v2_error(error)
    steps = {name.decode(): value.decode() for name, value in graph_steps_header()}
    if header_length is None:
        return Response(body, media_type=v2.JSON, headers=steps)
    headers = {"Inference-Header-Content-Length": str(header_length), **steps}
    return Response(body, media_type=BINARY_MEDIA_TYPE, headers=headers)


@v1_models_router.get("/{model}", dependencies=_INVOKE_MODEL)
async def v1_model_ready(model: str, gateway: GatewayDep) -> Response:
    try:
        return JSONResponse(v1.model_ready(gateway, model))
    except CairnError as error:
        return _v2_error(error)


@v1_models_router.post("/{model}:predict", dependencies=_INVOKE_MODEL)
async def v1_predict(model: str, request: Request, gateway: GatewayDep) -> Response:
    return await _v1_predict(gateway, request, model, explain=False)


@v1_models_router.post("/{model}:explain", dependencies=_INVOKE_MODEL)
async def v1_explain(model: str, request: Request, gateway: GatewayDep) -> Response:
    return await _v1_predict(gateway, request, model, explain=True)


async def _v1_predict(gateway: Gateway, request: Request, model: str, *, explain: bool) -> Response:
    try:
        raw = await request.body()
        answer = await v1.predict(gateway, model, raw, explain=explain)
        steps = {name.decode(): value.decode() for name, value in graph_steps_header()}
        return Response(answer, media_type=v2.JSON, headers=steps)
    except CairnError as error:
        return _v2_error(error)
