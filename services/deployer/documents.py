"""What the deployer stores: endpoint documents, its model projection and auto-deploy policies.

`EndpointDoc` is read by the gateway and the monitor through the kernel's `EndpointStateView`
contract; a unit test keeps the two in step.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Literal, TypeVar

from cairn.contracts.async_events import AsyncInferenceConfig
from cairn.contracts.events import (
    ApprovalStatus,
    EndpointUpdated,
    RolloutPolicy,
    VariantSpec,
    VariantState,
)
from cairn.documents import DocumentStore, Versioned
from cairn.errors import CairnError, Unavailable
from pydantic import BaseModel, ConfigDict, Field, ValidationError, computed_field

from services.deployer.scaling import ScalingActivity, ScalingPolicy

log = logging.getLogger("cairn.deployer")

DocT = TypeVar("DocT", bound=BaseModel)
EndpointStatus = Literal["Creating", "Updating", "InService", "RollingBack", "Deleted", "Failed"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$"


class Stored(BaseModel):
    """Base of what the deployer stores or accepts: no inf or NaN (JSON cannot carry them)."""

    model_config = ConfigDict(allow_inf_nan=False)


class ModelRecord(Stored):
    """The deployer's projection of one registered model version, built from registry events."""

    model_package_group: str
    version: int
    artifact_uri: str | None = None
    approval_status: ApprovalStatus = "PendingManualApproval"
    # Set once a ModelApprovalChanged was applied: a late ModelPackageRegistered must not undo it.
    approval_decided: bool = False
    updated_at: datetime


class EndpointConfig(Stored):
    """What the user asked for: variant specs, the shadow, the rollout policy and approval rule."""

    production_variants: list[VariantSpec]
    shadow_variant: VariantSpec | None = None
    rollout: RolloutPolicy = Field(default_factory=RolloutPolicy)
    allow_unapproved: bool = Field(
        default=False, description="Serve versions not (yet) Approved; Rejected ones never."
    )
    async_inference_config: AsyncInferenceConfig | None = None


class RolloutState(Stored):
    """A canary or linear rollout in progress; lives in the endpoint document."""

    policy: RolloutPolicy
    step: int = Field(ge=1)
    traffic_percent: float = Field(gt=0, le=100)
    started_at: datetime
    phase_started_at: datetime
    target_variants: list[VariantState]
    target_shadow: VariantState | None = None
    watched_variants: list[str]
    baseline_variants: list[VariantState]
    baseline_shadow: VariantState | None = None
    baseline_config: EndpointConfig
    baseline_revision: int
    observed_requests: int = 0
    observed_errors: int = 0
    worst_p99_latency_ms: float = 0.0
    correlation_id: str | None = Field(
        default=None, description="Workflow of the request that started it (its steps carry it)."
    )
    causation_id: str | None = None


class RollbackRecord(Stored):
    """Why the last rollout was undone."""

    rolled_back_variant: str
    restored_revision: int
    reason: str
    at: datetime


class EndpointDoc(Stored):
    """`deployer/endpoints/<name>.json`: the desired state last announced, plus rollout state."""

    endpoint_name: str
    revision: int = Field(ge=1)
    status: EndpointStatus
    production_variants: list[VariantState] = Field(default_factory=list)
    shadow_variant: VariantState | None = None
    config: EndpointConfig | None = None
    rollout: RolloutState | None = None
    last_rollback: RollbackRecord | None = None
    published_revision: int = 0
    scaling_policies: dict[str, ScalingPolicy] = Field(
        default_factory=dict, description="Target-tracking policies by variant name."
    )
    scaling_activities: list[ScalingActivity] = Field(
        default_factory=list, description="The latest changes of instance counts, oldest first."
    )
    created_at: datetime
    updated_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def async_inference_config(self) -> AsyncInferenceConfig | None:
        """The current config's, stored at the top for `EndpointStateView` readers (the gateway)."""
        return self.config.async_inference_config if self.config is not None else None

    def announcement(self) -> EndpointUpdated:
        """The EndpointUpdated event carrying this full desired state."""
        return EndpointUpdated(
            endpoint_name=self.endpoint_name,
            revision=self.revision,
            status=self.status,
            production_variants=self.production_variants,
            shadow_variant=self.shadow_variant,
        )


class AutoDeployPolicy(Stored):
    """`deployer/auto-deploy/<group>.json`: deploy each approved version of a group."""

    model_package_group: str = ""
    endpoint_name: str = Field(pattern=NAME_PATTERN)
    rollout: RolloutPolicy = Field(default_factory=RolloutPolicy)
    variant_name: str = Field(default="AllTraffic", pattern=NAME_PATTERN)
    instance_count: int = Field(default=1, ge=1)


class WeightChange(Stored):
    """One entry of UpdateEndpointWeightsAndCapacities."""

    variant_name: str
    weight: float | None = Field(default=None, ge=0)
    instance_count: int | None = Field(default=None, ge=1)


def invalid_fields(exc: CairnError) -> str | None:
    """`field: problem; ...` when `exc` is a stored document failing validation, else None."""
    if not isinstance(exc.__cause__, ValidationError):
        return None
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
        for error in exc.__cause__.errors(include_url=False)
    )


def last_revision(raw: bytes) -> int:
    """The revision an unreadable endpoint document still names, 0 when it names none."""
    try:
        revision = json.loads(raw).get("revision")
    except (ValueError, AttributeError):
        return 0
    return revision if isinstance(revision, int) and revision > 0 else 0


def readable(documents: DocumentStore[DocT]) -> list[Versioned[DocT]]:
    """Every document of `documents`, skipping (and logging) any that no longer validates."""
    found: list[Versioned[DocT]] = []
    for key in documents.keys(""):
        try:
            versioned = documents.get_or_none(key)
        except Unavailable:
            raise
        except CairnError as exc:
            log.error("skipping unreadable document %s%s: %s", documents.prefix, key, exc.message)
            continue
        if versioned is not None:
            found.append(versioned)
    return found
