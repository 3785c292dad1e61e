"""Wiring of the deployer: subscribers, HTTP routes and the rollout driver's lifespan task."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from cairn.contracts.envelope import Envelope
from cairn.contracts.events import (
    DeploymentRequested,
    EndpointMetricsReported,
    ModelApprovalChanged,
    ModelPackageRegistered,
    RolloutPolicy,
    VariantSpec,
)
from cairn.http import require_api_key
from cairn.service import Service, lazy_service
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore
from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field

from services.deployer.config import DeployerSettings
from services.deployer.domain import AutoDeployPolicy, EndpointDoc, WeightChange
from services.deployer.handlers import Deployer


class EndpointBody(BaseModel):
    """PUT /endpoints/{name}: the new endpoint config."""

    production_variants: list[VariantSpec] = Field(min_length=1)
    shadow_variant: VariantSpec | None = None
    rollout: RolloutPolicy = Field(default_factory=RolloutPolicy)


class CreateEndpointBody(EndpointBody):
    """POST /endpoints: a name and its config (like DeploymentRequested)."""

    endpoint_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")


class WeightsBody(BaseModel):
    """POST /endpoints/{name}/weights (UpdateEndpointWeightsAndCapacities)."""

    variants: list[WeightChange] = Field(min_length=1)


def _request(
    name: str, action: Literal["create", "update", "delete"], body: EndpointBody | None
) -> DeploymentRequested:
    fields: dict[str, Any] = body.model_dump(exclude={"endpoint_name"}) if body else {}
    return DeploymentRequested(endpoint_name=name, action=action, **fields)


def create_service(
    settings: CairnSettings | None = None,
    store: ObjectStore | None = None,
    config: DeployerSettings | None = None,
) -> Service:
    """The deployer service: one `Deployer` behind subscribers, HTTP and the rollout driver."""
    config = config or DeployerSettings()
    service = Service("deployer", settings=settings, store=store)
    deployer = Deployer(service.store, service.publish, config)
    service.api.state.deployer = deployer

    @service.on(DeploymentRequested, group=f"{config.consumer_group}.deployment-requested")
    async def deployment_requested(envelope: Envelope[DeploymentRequested]) -> None:
        await deployer.deploy(envelope.data, cause=envelope)

    @service.on(ModelPackageRegistered, group=f"{config.consumer_group}.model-package-registered")
    async def model_registered(envelope: Envelope[ModelPackageRegistered]) -> None:
        await deployer.on_model_registered(envelope)

    @service.on(ModelApprovalChanged, group=f"{config.consumer_group}.model-approval-changed")
    async def approval_changed(envelope: Envelope[ModelApprovalChanged]) -> None:
        await deployer.on_approval_changed(envelope)

    @service.on(EndpointMetricsReported, group=f"{config.consumer_group}.endpoint-metrics-reported")
    async def metrics_reported(envelope: Envelope[EndpointMetricsReported]) -> None:
        await deployer.on_metrics(envelope)

    routes = APIRouter(tags=["deployer"], dependencies=[Depends(require_api_key)])

    @routes.get("/endpoints")
    async def list_endpoints() -> list[EndpointDoc]:
        return await asyncio.to_thread(deployer.list_endpoints)

    @routes.post("/endpoints", status_code=201)
    async def create_endpoint(body: CreateEndpointBody) -> EndpointDoc:
        return await deployer.deploy(_request(body.endpoint_name, "create", body))

    @routes.get("/endpoints/{name}")
    async def get_endpoint(name: str) -> EndpointDoc:
        return await asyncio.to_thread(deployer.get_endpoint, name)

    @routes.put("/endpoints/{name}")
    async def update_endpoint(name: str, body: EndpointBody) -> EndpointDoc:
        return await deployer.deploy(_request(name, "update", body))

    @routes.delete("/endpoints/{name}")
    async def delete_endpoint(name: str) -> EndpointDoc:
        await asyncio.to_thread(deployer.get_endpoint, name)  # 404 for an unknown endpoint
        return await deployer.deploy(_request(name, "delete", None))

    @routes.post("/endpoints/{name}/weights")
    async def set_weights(name: str, body: WeightsBody) -> EndpointDoc:
        return await deployer.set_weights(name, body.variants)

    @routes.get("/auto-deploy/{group}")
    async def get_policy(group: str) -> AutoDeployPolicy:
        return await asyncio.to_thread(deployer.get_policy, group)

    @routes.put("/auto-deploy/{group}")
    async def put_policy(group: str, body: AutoDeployPolicy) -> AutoDeployPolicy:
        return await asyncio.to_thread(deployer.put_policy, group, body)

    @routes.delete("/auto-deploy/{group}", status_code=204)
    async def delete_policy(group: str) -> Response:
        await asyncio.to_thread(deployer.delete_policy, group)
        return Response(status_code=204)

    service.api.include_router(routes)
    service.background("deployer-rollouts", deployer.run_rollouts)
    return service


__getattr__ = lazy_service(create_service)
