"""Wiring of the registry: event subscribers and HTTP routes; the logic lives in handlers.py."""

from __future__ import annotations

import asyncio
from typing import Any

from cairn.contracts.envelope import Envelope
from cairn.contracts.events import (
    ApprovalStatus,
    EndpointUpdated,
    ModelApprovalRequested,
    TrainingJobCompleted,
)
from cairn.http import require_api_key
from cairn.service import Service, lazy_service
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore
from fastapi import APIRouter, Depends
from pydantic import BaseModel

from services.registry.config import RegistrySettings
from services.registry.domain import ModelPackageGroup, ModelVersion
from services.registry.handlers import AliasTarget, ApprovalDecision, RegisterVersion, Registry


class TagsBody(BaseModel):
    tags: dict[str, str]


def create_service(
    settings: CairnSettings | None = None,
    store: ObjectStore | None = None,
    config: RegistrySettings | None = None,
) -> Service:
    """The registry service: one `Registry` behind its subscribers and its HTTP API."""
    config = config or RegistrySettings()
    service = Service("registry", settings=settings, store=store)
    registry = Registry(service.store, service.publish)
    service.api.state.registry = registry

    @service.on(TrainingJobCompleted, group=f"{config.consumer_group}.training-job-completed")
    async def training_job_completed(envelope: Envelope[TrainingJobCompleted]) -> None:
        await registry.on_training_job_completed(envelope)

    @service.on(EndpointUpdated, group=f"{config.consumer_group}.endpoint-updated")
    async def endpoint_updated(envelope: Envelope[EndpointUpdated]) -> None:
        await registry.on_endpoint_updated(envelope)

    @service.on(ModelApprovalRequested, group=f"{config.consumer_group}.model-approval-requested")
    async def approval_requested(envelope: Envelope[ModelApprovalRequested]) -> None:
        await registry.on_approval_requested(envelope)

    routes = APIRouter(
        prefix="/model-package-groups",
        tags=["registry"],
        dependencies=[Depends(require_api_key)],
    )

    @routes.get("")
    async def list_groups() -> list[ModelPackageGroup]:
        return await asyncio.to_thread(registry.list_groups)

    @routes.get("/{group}")
    async def get_group(group: str) -> ModelPackageGroup:
        return await asyncio.to_thread(registry.get_group, group)

    @routes.get("/{group}/versions")
    async def list_versions(group: str, status: ApprovalStatus | None = None) -> list[ModelVersion]:
        return await asyncio.to_thread(registry.list_versions, group, status)

    @routes.post("/{group}/versions", status_code=201)
    async def register_version(group: str, body: RegisterVersion) -> ModelVersion:
        return await registry.register_by_hand(group, body)

    @routes.get("/{group}/versions/{ref}")
    async def get_version(group: str, ref: str) -> ModelVersion:
        return await asyncio.to_thread(registry.get_version, group, ref)

    @routes.post("/{group}/versions/{ref}/approval")
    async def decide(group: str, ref: str, body: ApprovalDecision) -> ModelVersion:
        return await registry.decide(group, ref, body)

    @routes.put("/{group}/versions/{ref}/tags")
    async def set_tags(group: str, ref: str, body: TagsBody) -> ModelVersion:
        return await asyncio.to_thread(registry.set_tags, group, ref, body.tags)

    @routes.get("/{group}/versions/{ref}/lineage")
    async def lineage(group: str, ref: str) -> dict[str, Any]:
        return await asyncio.to_thread(registry.lineage, group, ref)

    @routes.put("/{group}/aliases/{alias}")
    async def set_alias(group: str, alias: str, body: AliasTarget) -> ModelPackageGroup:
        return await asyncio.to_thread(registry.set_alias, group, alias, body.version)

    @routes.delete("/{group}/aliases/{alias}")
    async def remove_alias(group: str, alias: str) -> ModelPackageGroup:
        return await asyncio.to_thread(registry.remove_alias, group, alias)

    service.api.include_router(routes)
    return service


__getattr__ = lazy_service(create_service)
