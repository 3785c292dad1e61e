"""The autoscaler's HTTP API: each pool's replicas, lag and last decision; KEDA manifests."""

from __future__ import annotations

from typing import Annotated, Any

from cairn.auth import requires
from cairn.errors import NotFound
from fastapi import APIRouter, Depends, Query, Request

from services.autoscaler.handlers import Autoscaler
from services.autoscaler.keda import keda_scaled_object

# Everything here reads: policies are the pools' declarations and the autoscaler's settings.
router = APIRouter(tags=["pools"], dependencies=[requires("read")])


def get_autoscaler(request: Request) -> Autoscaler:
    """The autoscaler's service layer, set on the app by `create_service`."""
    autoscaler: Autoscaler = request.app.state.autoscaler
    return autoscaler


AutoscalerDep = Annotated[Autoscaler, Depends(get_autoscaler)]


@router.get("/pools")
async def list_pools(autoscaler: AutoscalerDep) -> dict[str, Any]:
    return {"pools": autoscaler.views()}


@router.get("/pools/{name}")
async def describe_pool(name: str, autoscaler: AutoscalerDep) -> dict[str, Any]:
    status = autoscaler.status.get(name)
    if status is None:
        raise NotFound(f"no worker pool {name!r}")
    return status.view()


@router.get("/keda/scaled-objects")
async def keda_scaled_objects(
    autoscaler: AutoscalerDep,
    bootstrap_servers: Annotated[str, Query(description="Kafka as the cluster's pods reach it.")],
    namespace: str = "cairn",
    pool: Annotated[list[str] | None, Query(description="Only these pools.")] = None,
) -> dict[str, Any]:
    """KEDA `ScaledObject`s for the managed pools (`cairn pools render-keda`)."""
    chosen = [s.pool for s in autoscaler.status.values() if not pool or s.pool.name in pool]
    missing = set(pool or ()) - {p.name for p in chosen}
    if missing:
        raise NotFound(f"no worker pool named {', '.join(sorted(missing))}")
    return {
        "scaled_objects": [
            keda_scaled_object(p, bootstrap_servers=bootstrap_servers, namespace=namespace)
            for p in chosen
        ]
    }
