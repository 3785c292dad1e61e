"""The registry's HTTP API: model package groups, versions, approval, tags, aliases, lineage.

Each route declares its scope; the kernel authenticates every request and audits every change.
Decisions and hand registrations are recorded in the name of the authenticated principal.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from cairn.auth import Principal, current_principal, requires
from cairn.contracts.events import ApprovalStatus
from cairn.errors import Forbidden
from fastapi import APIRouter, Depends, Request
from pydantic import Field

from services.registry.domain import (
    ApprovalDecision,
    DecidedStatus,
    ModelPackageGroup,
    ModelVersion,
    RegisterVersion,
    Stored,
)
from services.registry.handlers import Registry


class RegisterVersionBody(Stored):
    """Body of POST /model-package-groups/{g}/versions: register a package by hand."""

    artifact_uri: str = Field(min_length=1)
    approval_status: ApprovalStatus = "PendingManualApproval"
    metrics: dict[str, float] = Field(default_factory=dict)
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    training_job: str | None = None


class ApprovalBody(Stored):
    """Body of POST .../versions/{v}/approval; who decided is the caller's key, not a field."""

    status: DecidedStatus
    reason: str = ""


class AliasTarget(Stored):
    """Body of PUT .../aliases/{alias}."""

    version: int = Field(ge=1)


class TagsBody(Stored):
    tags: dict[str, str]


def get_registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


RegistryDep = Annotated[Registry, Depends(get_registry)]
PrincipalDep = Annotated[Principal, Depends(current_principal)]

groups = APIRouter(prefix="/model-package-groups", tags=["registry"])


@groups.get("", dependencies=[requires("read")])
async def list_groups(registry: RegistryDep) -> list[ModelPackageGroup]:
    return await asyncio.to_thread(registry.list_groups)


@groups.get("/{group}", dependencies=[requires("read")])
async def get_group(group: str, registry: RegistryDep) -> ModelPackageGroup:
    return await asyncio.to_thread(registry.get_group, group)


@groups.get("/{group}/versions", dependencies=[requires("read")])
async def list_versions(
    group: str, registry: RegistryDep, status: ApprovalStatus | None = None
) -> list[ModelVersion]:
    return await asyncio.to_thread(registry.list_versions, group, status)


@groups.post(
    "/{group}/versions",
    status_code=201,
    dependencies=[requires("train", action="model.register")],
)
async def register_version(
    group: str, body: RegisterVersionBody, registry: RegistryDep, principal: PrincipalDep
) -> ModelVersion:
    if body.approval_status != "PendingManualApproval" and not principal.allows("approve"):
        raise Forbidden(
            f"registering a version as {body.approval_status} needs the 'approve' scope",
            required_scope="approve",
        )
    request = RegisterVersion(**body.model_dump(), registered_by=principal.name)
    return await registry.register_by_hand(group, request)


@groups.get("/{group}/versions/{ref}", dependencies=[requires("read")])
async def get_version(group: str, ref: str, registry: RegistryDep) -> ModelVersion:
    return await asyncio.to_thread(registry.get_version, group, ref)


@groups.post(
    "/{group}/versions/{ref}/approval",
    dependencies=[requires("approve", action="model.approve")],
)
async def decide(
    group: str, ref: str, body: ApprovalBody, registry: RegistryDep, principal: PrincipalDep
) -> ModelVersion:
    decision = ApprovalDecision(status=body.status, by=principal.name, reason=body.reason)
    return await registry.decide(group, ref, decision)


@groups.put("/{group}/versions/{ref}/tags", dependencies=[requires("approve", action="model.tags")])
async def set_tags(group: str, ref: str, body: TagsBody, registry: RegistryDep) -> ModelVersion:
    return await asyncio.to_thread(registry.set_tags, group, ref, body.tags)


@groups.get("/{group}/versions/{ref}/lineage", dependencies=[requires("read")])
async def lineage(group: str, ref: str, registry: RegistryDep) -> dict[str, Any]:
    return await asyncio.to_thread(registry.lineage, group, ref)


@groups.put(
    "/{group}/aliases/{alias}", dependencies=[requires("approve", action="model.alias.set")]
)
async def set_alias(
    group: str, alias: str, body: AliasTarget, registry: RegistryDep
) -> ModelPackageGroup:
    return await asyncio.to_thread(registry.set_alias, group, alias, body.version)


@groups.delete(
    "/{group}/aliases/{alias}", dependencies=[requires("approve", action="model.alias.delete")]
)
async def remove_alias(group: str, alias: str, registry: RegistryDep) -> ModelPackageGroup:
    return await asyncio.to_thread(registry.remove_alias, group, alias)


ROUTERS = (groups,)
