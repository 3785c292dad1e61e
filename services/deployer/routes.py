"""The deployer's HTTP API: endpoints (Create/Update/DeleteEndpoint, weights) and auto-deploy.

Each route declares its scope; the kernel authenticates every request and audits every change.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from cairn.auth import requires
from cairn.contracts.async_events import AsyncInferenceConfig
from cairn.contracts.events import DeploymentRequested, RolloutPolicy, VariantSpec
from cairn.errors import InvalidInput
from fastapi import APIRouter, Depends, Request, Response
from pydantic import Field, ValidationError

from services.deployer.documents import (
    NAME_PATTERN,
    AutoDeployPolicy,
    EndpointDoc,
    Stored,
    WeightChange,
)
from services.deployer.handlers import Deployer


class EndpointBody(Stored):
    """PUT /endpoints/{name}: the new endpoint config."""

    production_variants: list[VariantSpec] = Field(min_length=1)
    shadow_variant: VariantSpec | None = None
    rollout: RolloutPolicy = Field(default_factory=RolloutPolicy)
    allow_unapproved: bool = Field(
        default=False, description="Serve versions not yet Approved (never Rejected ones)."
    )
    async_inference_config: AsyncInferenceConfig | None = Field(
        default=None, description="InvokeEndpointAsync settings (SageMaker's AsyncInferenceConfig)."
    )


class CreateEndpointBody(EndpointBody):
    """POST /endpoints: a name and its config (like DeploymentRequested)."""

    endpoint_name: str = Field(pattern=NAME_PATTERN)


class WeightsBody(Stored):
    """POST /endpoints/{name}/weights (UpdateEndpointWeightsAndCapacities)."""

    variants: list[WeightChange] = Field(min_length=1)


def get_deployer(request: Request) -> Deployer:
    deployer: Deployer = request.app.state.deployer
    return deployer


DeployerDep = Annotated[Deployer, Depends(get_deployer)]


def _request(
    name: str, action: Literal["create", "update", "delete"], body: EndpointBody | None
) -> DeploymentRequested:
    fields: dict[str, Any] = (
        body.model_dump(exclude={"endpoint_name", "allow_unapproved"}) if body else {}
    )
    try:
        return DeploymentRequested(endpoint_name=name, action=action, **fields)
    except ValidationError as exc:  # the path's name: the body was validated already
        raise invalid_input(exc) from exc


def invalid_input(exc: ValidationError) -> InvalidInput:
    """A 400 naming each field that failed, like the kernel's answer to a bad body."""
    fields = [
        {"field": ".".join(str(part) for part in error["loc"]) or "<root>", "message": error["msg"]}
        for error in exc.errors(include_url=False)
    ]
    summary = "; ".join(f"{item['field']}: {item['message']}" for item in fields)
    return InvalidInput(f"invalid request: {summary}", fields=fields)


endpoints = APIRouter(prefix="/endpoints", tags=["deployer"])


@endpoints.get("", dependencies=[requires("read")])
async def list_endpoints(deployer: DeployerDep) -> list[EndpointDoc]:
    return await asyncio.to_thread(deployer.list_endpoints)


@endpoints.post("", status_code=201, dependencies=[requires("deploy", action="endpoint.create")])
async def create_endpoint(body: CreateEndpointBody, deployer: DeployerDep) -> EndpointDoc:
    request = _request(body.endpoint_name, "create", body)
    return await deployer.deploy(request, allow_unapproved=body.allow_unapproved)


@endpoints.get("/{name}", dependencies=[requires("read")])
async def get_endpoint(name: str, deployer: DeployerDep) -> EndpointDoc:
    return await asyncio.to_thread(deployer.get_endpoint, name)


@endpoints.put("/{name}", dependencies=[requires("deploy", action="endpoint.update")])
async def update_endpoint(name: str, body: EndpointBody, deployer: DeployerDep) -> EndpointDoc:
    request = _request(name, "update", body)
    return await deployer.deploy(request, allow_unapproved=body.allow_unapproved)


@endpoints.delete("/{name}", dependencies=[requires("deploy", action="endpoint.delete")])
async def delete_endpoint(name: str, deployer: DeployerDep) -> EndpointDoc:
    await asyncio.to_thread(deployer.check_deletable, name)  # 404 for an unknown endpoint
    return await deployer.deploy(_request(name, "delete", None))


@endpoints.post("/{name}/weights", dependencies=[requires("deploy", action="endpoint.weights")])
async def set_weights(name: str, body: WeightsBody, deployer: DeployerDep) -> EndpointDoc:
    return await deployer.set_weights(name, body.variants)


class RollbackBody(Stored):
    """POST /endpoints/{name}/rollback: why (kept in the endpoint's last_rollback)."""

    reason: str = Field(default="rolled back by hand", min_length=1, max_length=500)


@endpoints.post("/{name}/rollback", dependencies=[requires("deploy", action="endpoint.rollback")])
async def roll_back(name: str, body: RollbackBody, deployer: DeployerDep) -> EndpointDoc:
    """Undo the rollout in progress: restore the revision it started from (409 when none)."""
    return await deployer.roll_back(name, body.reason)


auto_deploy = APIRouter(prefix="/auto-deploy", tags=["deployer"])


@auto_deploy.get("/{group}", dependencies=[requires("read")])
async def get_policy(group: str, deployer: DeployerDep) -> AutoDeployPolicy:
    return await asyncio.to_thread(deployer.policies.get, group)


@auto_deploy.put("/{group}", dependencies=[requires("deploy", action="auto_deploy.put")])
async def put_policy(group: str, body: AutoDeployPolicy, deployer: DeployerDep) -> AutoDeployPolicy:
    return await asyncio.to_thread(deployer.policies.put, group, body)


@auto_deploy.delete(
    "/{group}", status_code=204, dependencies=[requires("deploy", action="auto_deploy.delete")]
)
async def delete_policy(group: str, deployer: DeployerDep) -> Response:
    await asyncio.to_thread(deployer.policies.delete, group)
    return Response(status_code=204)


ROUTERS = (endpoints, auto_deploy)
