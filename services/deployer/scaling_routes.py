"""Scaling policies per variant (Application Auto Scaling's target tracking) and their history.

`PUT /endpoints/{name}/variants/{variant}/scaling-policy` registers the variant as a scalable
target with its bounds and puts its target-tracking policy in one call; `GET
/endpoints/{name}/scaling` is DescribeScalingPolicies plus DescribeScalingActivities.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from cairn.auth import requires
from fastapi import APIRouter, Body, Depends, Request
from pydantic import ValidationError

from services.deployer.autoscaling import VariantScaler
from services.deployer.documents import EndpointDoc
from services.deployer.handlers import Deployer
from services.deployer.routes import invalid_input
from services.deployer.scaling import ScalingPolicy


def get_scaler(request: Request) -> VariantScaler:
    scaler: VariantScaler = request.app.state.scaler
    return scaler


ScalerDep = Annotated[VariantScaler, Depends(get_scaler)]
router = APIRouter(prefix="/endpoints", tags=["deployer"])


def scaling_view(doc: EndpointDoc, limit: int | None = None) -> dict[str, Any]:
    """Each variant's instance count and policy, then the recent activities (newest first)."""
    activities = list(reversed(doc.scaling_activities))[:limit]
    return {
        "endpoint_name": doc.endpoint_name,
        "revision": doc.revision,
        "variants": [
            {
                "variant_name": variant.variant_name,
                "instance_count": variant.instance_count,
                "policy": (
                    policy.model_dump(mode="json")
                    if (policy := doc.scaling_policies.get(variant.variant_name))
                    else None
                ),
            }
            for variant in doc.production_variants
        ],
        "activities": [activity.model_dump(mode="json") for activity in activities],
    }


@router.get("/{name}/scaling", dependencies=[requires("read")])
async def describe_scaling(name: str, request: Request, limit: int = 20) -> dict[str, Any]:
    deployer: Deployer = request.app.state.deployer
    doc = await asyncio.to_thread(deployer.get_endpoint, name)
    return scaling_view(doc, max(0, limit))


@router.put(
    "/{name}/variants/{variant}/scaling-policy",
    dependencies=[requires("deploy", action="endpoint.scaling_policy.put")],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ScalingPolicy.model_json_schema()}},
        }
    },
)
async def put_scaling_policy(
    name: str, variant: str, scaler: ScalerDep, body: Annotated[Any, Body()]
) -> dict[str, Any]:
    """A bad policy is a 400 naming each field (as the deployer's other refusals)."""
    try:
        policy = ScalingPolicy.model_validate(body)
    except ValidationError as exc:
        raise invalid_input(exc) from exc
    return scaling_view(await scaler.put_policy(name, variant, policy))


@router.delete(
    "/{name}/variants/{variant}/scaling-policy",
    dependencies=[requires("deploy", action="endpoint.scaling_policy.delete")],
)
async def delete_scaling_policy(name: str, variant: str, scaler: ScalerDep) -> dict[str, Any]:
    return scaling_view(await scaler.delete_policy(name, variant))
