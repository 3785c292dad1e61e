"""Deployer rules with no I/O: endpoint configs, weights, the rollout state machine and rollback.

Each function maps the current endpoint document (and a clock reading) to the next one, so the
store layer runs it inside a conditional-write retry loop and a restart resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Literal

from cairn.contracts.events import (
    ApprovalStatus,
    DeploymentRequested,
    EndpointMetricsReported,
    EndpointUpdated,
    ModelApprovalChanged,
    ModelPackageRegistered,
    RolloutPolicy,
    VariantSpec,
    VariantState,
)
from cairn.errors import Conflict, InvalidInput, NotFound
from pydantic import BaseModel, Field

EndpointStatus = Literal["Creating", "Updating", "InService", "RollingBack", "Deleted", "Failed"]
BASELINE_SUFFIX = "-previous"
WEIGHT_DIGITS = 6


class EndpointNotFound(NotFound):
    code = "endpoint_not_found"


class EndpointAlreadyExists(Conflict):
    code = "endpoint_already_exists"


class EndpointBusy(Conflict):
    code = "endpoint_busy"


class ModelVersionUnknown(InvalidInput):
    code = "model_version_unknown"


class ModelVersionRejected(Conflict):
    code = "model_version_rejected"


class ModelRecord(BaseModel):
    """The deployer's projection of one registered model version."""

    model_package_group: str
    version: int
    artifact_uri: str | None = None
    approval_status: ApprovalStatus = "PendingManualApproval"
    # Set once a ModelApprovalChanged was applied: a late ModelPackageRegistered must not undo it.
    approval_decided: bool = False
    updated_at: datetime


class EndpointConfig(BaseModel):
    """What the user asked for: variant specs, the shadow and the rollout policy."""

    production_variants: list[VariantSpec]
    shadow_variant: VariantSpec | None = None
    rollout: RolloutPolicy = Field(default_factory=RolloutPolicy)


class RolloutState(BaseModel):
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


class RollbackRecord(BaseModel):
    """Why the last rollout was undone."""

    rolled_back_variant: str
    restored_revision: int
    reason: str
    at: datetime


class EndpointDoc(BaseModel):
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
    created_at: datetime
    updated_at: datetime

    def announcement(self) -> EndpointUpdated:
        """The EndpointUpdated event carrying this full desired state."""
        return EndpointUpdated(
            endpoint_name=self.endpoint_name,
            revision=self.revision,
            status=self.status,
            production_variants=self.production_variants,
            shadow_variant=self.shadow_variant,
        )


class AutoDeployPolicy(BaseModel):
    """`deployer/auto-deploy/<group>.json`: deploy each approved version of a group."""

    model_package_group: str = ""
    endpoint_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
    rollout: RolloutPolicy = Field(default_factory=RolloutPolicy)
    variant_name: str = Field(default="AllTraffic", pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
    instance_count: int = Field(default=1, ge=1)


# Model projection ------------------------------------------------------------------------


def apply_registered(
    current: ModelRecord | None, event: ModelPackageRegistered, now: datetime
) -> ModelRecord:
    """Learn a version's artifact; its registration status counts only until a decision arrives."""
    record = current or ModelRecord(
        model_package_group=event.model_package_group, version=event.version, updated_at=now
    )
    status = record.approval_status if record.approval_decided else event.approval_status
    if record.artifact_uri == event.artifact_uri and record.approval_status == status:
        return record
    return record.model_copy(
        update={"artifact_uri": event.artifact_uri, "approval_status": status, "updated_at": now}
    )


def apply_approval_changed(
    current: ModelRecord | None, event: ModelApprovalChanged, now: datetime
) -> ModelRecord:
    record = current or ModelRecord(
        model_package_group=event.model_package_group, version=event.version, updated_at=now
    )
    if record.approval_decided and record.approval_status == event.approval_status:
        return record
    return record.model_copy(
        update={
            "approval_status": event.approval_status,
            "approval_decided": True,
            "updated_at": now,
        }
    )


ModelIndex = Mapping[tuple[str, int], ModelRecord]


def resolve_variant(
    spec: VariantSpec, models: ModelIndex, weight: float | None = None
) -> VariantState:
    """A variant's served state; refuses versions it does not know or that are Rejected."""
    record = models.get((spec.model_package_group, spec.model_version))
    name = f"version {spec.model_version} of model package group {spec.model_package_group!r}"
    if record is None or record.artifact_uri is None:
        raise ModelVersionUnknown(
            f"{name} is not registered (variant {spec.variant_name!r})",
            model_package_group=spec.model_package_group,
            model_version=spec.model_version,
        )
    if record.approval_status == "Rejected":
        raise ModelVersionRejected(
            f"{name} is Rejected and cannot be deployed (variant {spec.variant_name!r})",
            model_package_group=spec.model_package_group,
            model_version=spec.model_version,
        )
    return VariantState(
        variant_name=spec.variant_name,
        model_package_group=spec.model_package_group,
        model_version=spec.model_version,
        artifact_uri=record.artifact_uri,
        weight=spec.initial_weight if weight is None else weight,
        instance_count=spec.instance_count,
    )


def config_of(request: DeploymentRequested) -> EndpointConfig:
    """The request's endpoint config, validated: variants present, names unique, weight > 0."""
    variants = request.production_variants
    if not variants:
        raise InvalidInput(
            f"endpoint {request.endpoint_name!r} needs at least one production variant"
        )
    names = [v.variant_name for v in variants]
    if request.shadow_variant is not None:
        names.append(request.shadow_variant.variant_name)
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InvalidInput(f"variant names must be unique; repeated: {', '.join(duplicates)}")
    if any(name.endswith(BASELINE_SUFFIX) for name in names):
        raise InvalidInput(f"variant names ending in {BASELINE_SUFFIX!r} are reserved for rollouts")
    if sum(v.initial_weight for v in variants) <= 0:
        raise InvalidInput("the production variants' weights must add up to more than 0")
    return EndpointConfig(
        production_variants=variants, shadow_variant=request.shadow_variant, rollout=request.rollout
    )


def _served(
    config: EndpointConfig, models: ModelIndex
) -> tuple[list[VariantState], VariantState | None]:
    production = [resolve_variant(spec, models) for spec in config.production_variants]
    shadow = resolve_variant(config.shadow_variant, models) if config.shadow_variant else None
    return production, shadow


# Endpoint lifecycle ----------------------------------------------------------------------


def is_live(doc: EndpointDoc | None) -> bool:
    return doc is not None and doc.status != "Deleted"


def require_live(doc: EndpointDoc | None, endpoint_name: str) -> EndpointDoc:
    if doc is None or doc.status == "Deleted":
        raise EndpointNotFound(f"no endpoint {endpoint_name!r}", endpoint_name=endpoint_name)
    return doc


def create_endpoint(
    current: EndpointDoc | None, request: DeploymentRequested, models: ModelIndex, now: datetime
) -> EndpointDoc:
    """A new endpoint serving the config at once; repeating the same create changes nothing."""
    config = config_of(request)
    if current is not None and is_live(current):
        if current.config == config:
            return current
        raise EndpointAlreadyExists(
            f"endpoint {request.endpoint_name!r} already exists; update it instead",
            endpoint_name=request.endpoint_name,
        )
    production, shadow = _served(config, models)
    return EndpointDoc(
        endpoint_name=request.endpoint_name,
        revision=(current.revision if current else 0) + 1,
        status="InService",
        production_variants=production,
        shadow_variant=shadow,
        config=config,
        created_at=now,
        updated_at=now,
    )


def update_endpoint(
    current: EndpointDoc | None, request: DeploymentRequested, models: ModelIndex, now: datetime
) -> EndpointDoc:
    """Move an endpoint to a new config: at once, or by starting a canary / linear rollout."""
    doc = require_live(current, request.endpoint_name)
    config = config_of(request)
    if doc.config == config:
        return doc
    if doc.rollout is not None:
        raise EndpointBusy(
            f"endpoint {doc.endpoint_name!r} is rolling out revision {doc.revision}; "
            "wait for it to finish or roll back",
            endpoint_name=doc.endpoint_name,
        )
    production, shadow = _served(config, models)
    baseline = {v.variant_name: v for v in doc.production_variants}
    watched = [
        v.variant_name
        for v in production
        if v.variant_name not in baseline or baseline[v.variant_name].artifact_uri != v.artifact_uri
    ]
    base = doc.model_copy(
        update={"revision": doc.revision + 1, "updated_at": now, "config": config}
    )
    if config.rollout.mode == "all_at_once" or not watched:
        return base.model_copy(
            update={
                "status": "InService",
                "production_variants": production,
                "shadow_variant": shadow,
            }
        )
    percent = first_step_percent(config.rollout)
    rollout = RolloutState(
        policy=config.rollout,
        step=1,
        traffic_percent=percent,
        started_at=now,
        phase_started_at=now,
        target_variants=production,
        target_shadow=shadow,
        watched_variants=watched,
        baseline_variants=doc.production_variants,
        baseline_shadow=doc.shadow_variant,
        baseline_config=doc.config or config,
        baseline_revision=doc.revision,
    )
    return base.model_copy(
        update={
            "status": "Updating",
            "rollout": rollout,
            "production_variants": blend(doc.production_variants, production, percent),
            "shadow_variant": shadow,
        }
    )


def delete_endpoint(current: EndpointDoc | None, endpoint_name: str, now: datetime) -> EndpointDoc:
    """A tombstone: status Deleted, nothing served; the revision keeps counting for a re-create."""
    doc = require_live(current, endpoint_name)
    return doc.model_copy(
        update={
            "revision": doc.revision + 1,
            "status": "Deleted",
            "production_variants": [],
            "shadow_variant": None,
            "rollout": None,
            "updated_at": now,
        }
    )


def apply_request(
    current: EndpointDoc | None, request: DeploymentRequested, models: ModelIndex, now: datetime
) -> EndpointDoc:
    """Dispatch a DeploymentRequested by its action."""
    if request.action == "create":
        return create_endpoint(current, request, models, now)
    if request.action == "update":
        return update_endpoint(current, request, models, now)
    if current is not None and current.status == "Deleted":
        return current  # deleting twice is a no-op
    return delete_endpoint(current, request.endpoint_name, now)


class WeightChange(BaseModel):
    """One entry of UpdateEndpointWeightsAndCapacities."""

    variant_name: str
    weight: float | None = Field(default=None, ge=0)
    instance_count: int | None = Field(default=None, ge=1)


def update_weights(
    current: EndpointDoc | None, endpoint_name: str, changes: list[WeightChange], now: datetime
) -> EndpointDoc:
    """New weights / instance counts on the served variants, with no redeploy of any model."""
    doc = require_live(current, endpoint_name)
    if doc.rollout is not None:
        raise EndpointBusy(
            f"endpoint {endpoint_name!r} is rolling out; its weights belong to the rollout",
            endpoint_name=endpoint_name,
        )
    by_name = {change.variant_name: change for change in changes}
    served = {v.variant_name for v in doc.production_variants}
    unknown = sorted(set(by_name) - served)
    if not changes or unknown:
        raise InvalidInput(
            f"endpoint {endpoint_name!r} has no production variant named {', '.join(unknown)}"
            if unknown
            else "give at least one variant to change",
            endpoint_name=endpoint_name,
            variants=sorted(served),
        )

    def changed_state(variant: VariantState) -> VariantState:
        change = by_name.get(variant.variant_name)
        if change is None:
            return variant
        return variant.model_copy(
            update={
                "weight": variant.weight if change.weight is None else change.weight,
                "instance_count": change.instance_count or variant.instance_count,
            }
        )

    production = [changed_state(v) for v in doc.production_variants]
    if sum(v.weight for v in production) <= 0:
        raise InvalidInput("the production variants' weights must add up to more than 0")
    config = doc.config
    if config is not None:
        specs = [
            spec.model_copy(
                update={
                    "initial_weight": state.weight,
                    "instance_count": state.instance_count,
                }
            )
            for spec, state in zip(config.production_variants, production, strict=False)
            if spec.variant_name == state.variant_name
        ]
        if len(specs) == len(config.production_variants):
            config = config.model_copy(update={"production_variants": specs})
    if production == doc.production_variants:
        return doc
    return doc.model_copy(
        update={
            "revision": doc.revision + 1,
            "production_variants": production,
            "config": config,
            "updated_at": now,
        }
    )


# Rollouts --------------------------------------------------------------------------------


def first_step_percent(policy: RolloutPolicy) -> float:
    return policy.canary_percent if policy.mode == "canary" else policy.linear_step_percent


def next_step_percent(policy: RolloutPolicy, current_percent: float) -> float:
    """Traffic share of the new variants after the next bake: canary jumps to 100, linear steps."""
    if policy.mode == "canary":
        return 100.0
    return min(100.0, current_percent + policy.linear_step_percent)


def _scaled(variants: list[VariantState], share: float) -> list[VariantState]:
    total = sum(v.weight for v in variants)
    if total <= 0:
        return [v.model_copy(update={"weight": 0.0}) for v in variants]
    return [
        v.model_copy(update={"weight": round(share * v.weight / total, WEIGHT_DIGITS)})
        for v in variants
    ]


def blend(
    baseline: list[VariantState], target: list[VariantState], percent: float
) -> list[VariantState]:
    """Serve `percent`% of traffic with the target variants and the rest with the baseline.

    A baseline variant whose name the target reuses is served as `<name>-previous` meanwhile, so
    the new model's metrics and captures carry the name it will keep.
    """
    if percent >= 100:
        return target
    names = {v.variant_name for v in target}
    old = [
        v.model_copy(update={"variant_name": v.variant_name + BASELINE_SUFFIX})
        if v.variant_name in names
        else v
        for v in baseline
    ]
    return _scaled(target, percent / 100) + _scaled(old, 1 - percent / 100)


def advance_rollout(doc: EndpointDoc, now: datetime) -> EndpointDoc:
    """The endpoint after the bake time of the current step, if it has passed: next step or done."""
    rollout = doc.rollout
    if (
        rollout is None
        or (now - rollout.phase_started_at).total_seconds() < rollout.policy.bake_time_s
    ):
        return doc
    percent = next_step_percent(rollout.policy, rollout.traffic_percent)
    base = doc.model_copy(update={"revision": doc.revision + 1, "updated_at": now})
    if percent >= 100:
        return base.model_copy(
            update={
                "status": "InService",
                "rollout": None,
                "production_variants": rollout.target_variants,
                "shadow_variant": rollout.target_shadow,
            }
        )
    return base.model_copy(
        update={
            "rollout": rollout.model_copy(
                update={
                    "step": rollout.step + 1,
                    "traffic_percent": percent,
                    "phase_started_at": now,
                }
            ),
            "production_variants": blend(
                rollout.baseline_variants, rollout.target_variants, percent
            ),
        }
    )


def observe_metrics(
    doc: EndpointDoc,
    report: EndpointMetricsReported,
    reported_at: datetime,
    min_requests: int,
) -> tuple[EndpointDoc, str | None, str | None]:
    """Add a traffic report to the rollout's tally; the alarm's reason and variant if it trips.

    The error-rate alarm needs at least `min_requests` requests on the new variants, so one early
    failure does not roll back a healthy model; the latency alarm fires on a window's p99.
    """
    rollout = doc.rollout
    if rollout is None or reported_at < rollout.started_at:
        return doc, None, None
    watched = [v for v in report.variants if v.variant_name in rollout.watched_variants]
    if not watched:
        return doc, None, None
    requests = rollout.observed_requests + sum(v.requests for v in watched)
    errors = rollout.observed_errors + sum(v.errors for v in watched)
    worst = max([rollout.worst_p99_latency_ms, *(v.p99_latency_ms for v in watched if v.requests)])
    updated = doc.model_copy(
        update={
            "rollout": rollout.model_copy(
                update={
                    "observed_requests": requests,
                    "observed_errors": errors,
                    "worst_p99_latency_ms": worst,
                }
            )
        }
    )
    policy = rollout.policy
    if requests >= min_requests and errors / requests > policy.max_error_rate:
        variant = max(watched, key=lambda v: v.errors).variant_name
        reason = (
            f"error rate {errors / requests:.1%} over {requests} requests on the new variants "
            f"exceeds max_error_rate {policy.max_error_rate:.1%}"
        )
        return updated, reason, variant
    slow = [
        v
        for v in watched
        if policy.max_p99_latency_ms is not None
        and v.requests > 0
        and requests >= min_requests
        and v.p99_latency_ms > policy.max_p99_latency_ms
    ]
    if slow:
        variant = slow[0]
        reason = (
            f"p99 latency {variant.p99_latency_ms:.1f} ms of variant {variant.variant_name!r} "
            f"exceeds max_p99_latency_ms {policy.max_p99_latency_ms:.1f}"
        )
        return updated, reason, variant.variant_name
    return updated, None, None


def roll_back(doc: EndpointDoc, variant_name: str, reason: str, now: datetime) -> EndpointDoc:
    """Restore the revision the rollout started from, as a new revision, recording why."""
    rollout = doc.rollout
    if rollout is None:
        return doc
    return doc.model_copy(
        update={
            "revision": doc.revision + 1,
            "status": "InService",
            "production_variants": rollout.baseline_variants,
            "shadow_variant": rollout.baseline_shadow,
            "config": rollout.baseline_config,
            "rollout": None,
            "last_rollback": RollbackRecord(
                rolled_back_variant=variant_name,
                restored_revision=rollout.baseline_revision,
                reason=reason,
                at=now,
            ),
            "updated_at": now,
        }
    )


# Auto-deploy -----------------------------------------------------------------------------


def auto_deploy_request(
    policy: AutoDeployPolicy, version: int, current: EndpointDoc | None
) -> DeploymentRequested | None:
    """The deployment an approval of `version` calls for; None when it is already served."""
    spec = VariantSpec(
        variant_name=policy.variant_name,
        model_package_group=policy.model_package_group,
        model_version=version,
        instance_count=policy.instance_count,
    )
    if not is_live(current):
        return DeploymentRequested(
            endpoint_name=policy.endpoint_name,
            action="create",
            production_variants=[spec],
            rollout=policy.rollout,
        )
    assert current is not None
    serving = current.rollout.target_variants if current.rollout else current.production_variants
    if [(v.model_package_group, v.model_version) for v in serving] == [
        (policy.model_package_group, version)
    ]:
        return None
    return DeploymentRequested(
        endpoint_name=policy.endpoint_name,
        action="update",
        production_variants=[spec],
        shadow_variant=current.config.shadow_variant if current.config else None,
        rollout=policy.rollout,
    )
