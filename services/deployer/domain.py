"""Deployer rules with no I/O: endpoint configs, approval checks, weights and auto-deploy.

Each function maps the current endpoint document (and a clock reading) to the next one, so the
store layer runs it inside a conditional-write retry loop and a restart resumes where it stopped.
The rollout state machine is in `rollout.py`; the stored documents in `documents.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from cairn.contracts.events import (
    ContainerState,
    DeploymentRequested,
    ModelApprovalChanged,
    ModelPackageRegistered,
    VariantSpec,
    VariantState,
)
from cairn.contracts.graph import InferenceGraph
from cairn.errors import Conflict, InvalidInput, NotFound

from services.deployer import rollout
from services.deployer.documents import (
    AutoDeployPolicy,
    EndpointConfig,
    EndpointDoc,
    ModelRecord,
    WeightChange,
)
from services.deployer.graph import resolve_graph

ModelIndex = Mapping[tuple[str, int], ModelRecord]
Served = tuple[list[VariantState], VariantState | None]


class EndpointNotFound(NotFound):
    code = "endpoint_not_found"


class EndpointAlreadyExists(Conflict):
    code = "endpoint_already_exists"


class EndpointBusy(Conflict):
    code = "endpoint_busy"


class NoRolloutInProgress(Conflict):
    code = "no_rollout_in_progress"


class EndpointDocumentUnreadable(Conflict):
    """The stored endpoint no longer validates (written before a rule it breaks existed)."""

    code = "endpoint_document_unreadable"


class ModelVersionUnknown(InvalidInput):
    code = "model_version_unknown"


class ModelVersionRejected(Conflict):
    code = "model_version_rejected"


class ModelVersionNotApproved(Conflict):
    code = "model_version_not_approved"


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


def _check_deployable(spec: VariantSpec, record: ModelRecord | None, allow_unapproved: bool) -> str:
    """The version's artifact; refuses unknown and Rejected versions, and unapproved ones unless
    the endpoint allows them."""
    name = f"version {spec.model_version} of model package group {spec.model_package_group!r}"
    where = {"model_package_group": spec.model_package_group, "model_version": spec.model_version}
    if record is None or record.artifact_uri is None:
        raise ModelVersionUnknown(
            f"{name} is not registered (variant {spec.variant_name!r})", **where
        )
    if record.approval_status == "Rejected":
        raise ModelVersionRejected(
            f"{name} is Rejected and cannot be deployed (variant {spec.variant_name!r})", **where
        )
    if record.approval_status != "Approved" and not allow_unapproved:
        raise ModelVersionNotApproved(
            f"{name} is {record.approval_status}, not Approved (variant {spec.variant_name!r}); "
            "approve it, or set allow_unapproved on the endpoint",
            approval_status=record.approval_status,
            **where,
        )
    return record.artifact_uri


def resolve_variant(
    spec: VariantSpec, models: ModelIndex, allow_unapproved: bool = False
) -> VariantState:
    """A variant's served state, once its version passed `_check_deployable`."""
    record = models.get((spec.model_package_group, spec.model_version))
    artifact_uri = _check_deployable(spec, record, allow_unapproved)
    return VariantState(
        variant_name=spec.variant_name,
        model_package_group=spec.model_package_group,
        model_version=spec.model_version,
        artifact_uri=artifact_uri,
        weight=spec.initial_weight,
        instance_count=spec.instance_count,
        containers=_containers(spec, models, allow_unapproved),
        graph=_graph(spec, models, allow_unapproved),
    )


def _containers(
    spec: VariantSpec, models: ModelIndex, allow_unapproved: bool
) -> list[ContainerState]:
    """An inference pipeline's steps, each held to the same approval rule as a single model."""
    steps = []
    for container in spec.containers:
        ref = (container.model_package_group, container.model_version)
        step = spec.model_copy(update={"model_package_group": ref[0], "model_version": ref[1]})
        artifact_uri = _check_deployable(step, models.get(ref), allow_unapproved)
        steps.append(ContainerState(**container.model_dump(), artifact_uri=artifact_uri))
    return steps


def _graph(spec: VariantSpec, models: ModelIndex, allow_unapproved: bool) -> InferenceGraph | None:
    """An inference graph's model steps, each held to the same approval rule as a single model."""
    if spec.graph is None:
        return None

    def artifact_of(ref: tuple[str, int]) -> str:
        step = spec.model_copy(update={"model_package_group": ref[0], "model_version": ref[1]})
        return _check_deployable(step, models.get(ref), allow_unapproved)

    return resolve_graph(spec.graph, artifact_of)


def config_of(request: DeploymentRequested, allow_unapproved: bool = False) -> EndpointConfig:
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
    if any(name.endswith(rollout.BASELINE_SUFFIX) for name in names):
        raise InvalidInput(
            f"variant names ending in {rollout.BASELINE_SUFFIX!r} are reserved for rollouts"
        )
    if sum(v.initial_weight for v in variants) <= 0:
        raise InvalidInput("the production variants' weights must add up to more than 0")
    return EndpointConfig(
        production_variants=variants,
        shadow_variant=request.shadow_variant,
        rollout=request.rollout,
        allow_unapproved=allow_unapproved,
        async_inference_config=request.async_inference_config,
    )


def _served(config: EndpointConfig, models: ModelIndex) -> Served:
    allow = config.allow_unapproved
    production = [resolve_variant(spec, models, allow) for spec in config.production_variants]
    shadow_spec = config.shadow_variant
    shadow = resolve_variant(shadow_spec, models, allow) if shadow_spec else None
    return production, shadow


# Endpoint lifecycle ----------------------------------------------------------------------


def is_live(doc: EndpointDoc | None) -> bool:
    return doc is not None and doc.status != "Deleted"


def require_live(doc: EndpointDoc | None, endpoint_name: str) -> EndpointDoc:
    if doc is None or doc.status == "Deleted":
        raise EndpointNotFound(f"no endpoint {endpoint_name!r}", endpoint_name=endpoint_name)
    return doc


def create_endpoint(
    current: EndpointDoc | None,
    request: DeploymentRequested,
    models: ModelIndex,
    now: datetime,
    allow_unapproved: bool = False,
) -> EndpointDoc:
    """A new endpoint serving the config at once; repeating the same create changes nothing."""
    config = config_of(request, allow_unapproved)
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


def _changed_variants(doc: EndpointDoc, production: list[VariantState]) -> list[str]:
    """Names of the variants whose model a new config changes (the ones a rollout watches)."""
    baseline = {v.variant_name: v for v in doc.production_variants}
    return [
        v.variant_name
        for v in production
        if v.variant_name not in baseline
        or (
            baseline[v.variant_name].artifact_uri,
            baseline[v.variant_name].containers,
            baseline[v.variant_name].graph,
        )
        != (v.artifact_uri, v.containers, v.graph)
    ]


def update_endpoint(
    current: EndpointDoc | None,
    request: DeploymentRequested,
    models: ModelIndex,
    now: datetime,
    allow_unapproved: bool = False,
) -> EndpointDoc:
    """Move an endpoint to a new config: at once, or by starting a canary / linear rollout."""
    doc = require_live(current, request.endpoint_name)
    config = config_of(request, allow_unapproved)
    if doc.config == config:
        return doc
    if doc.rollout is not None:
        raise EndpointBusy(
            f"endpoint {doc.endpoint_name!r} is rolling out revision {doc.revision}; "
            "wait for it to finish or roll back",
            endpoint_name=doc.endpoint_name,
        )
    production, shadow = _served(config, models)
    watched = _changed_variants(doc, production)
    if config.rollout.mode != "all_at_once" and watched:
        return rollout.start(doc, config, (production, shadow), watched, now)
    return doc.model_copy(
        update={
            "revision": doc.revision + 1,
            "updated_at": now,
            "config": config,
            "status": "InService",
            "production_variants": production,
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


def tombstone(endpoint_name: str, last_revision: int, now: datetime) -> EndpointDoc:
    """A Deleted endpoint replacing an unreadable document, one revision past what it held."""
    return EndpointDoc(
        endpoint_name=endpoint_name,
        revision=last_revision + 1,
        status="Deleted",
        created_at=now,
        updated_at=now,
    )


def apply_request(
    current: EndpointDoc | None,
    request: DeploymentRequested,
    models: ModelIndex,
    now: datetime,
    allow_unapproved: bool = False,
) -> EndpointDoc:
    """Dispatch a DeploymentRequested by its action."""
    if request.action == "create":
        return create_endpoint(current, request, models, now, allow_unapproved)
    if request.action == "update":
        return update_endpoint(current, request, models, now, allow_unapproved)
    if current is not None and current.status == "Deleted":
        return current  # deleting twice is a no-op
    return delete_endpoint(current, request.endpoint_name, now)


# Weights ---------------------------------------------------------------------------------


def _check_weight_changes(doc: EndpointDoc, changes: list[WeightChange]) -> None:
    if doc.rollout is not None:
        raise EndpointBusy(
            f"endpoint {doc.endpoint_name!r} is rolling out; its weights belong to the rollout",
            endpoint_name=doc.endpoint_name,
        )
    served = {v.variant_name for v in doc.production_variants}
    unknown = sorted({change.variant_name for change in changes} - served)
    if not changes or unknown:
        raise InvalidInput(
            f"endpoint {doc.endpoint_name!r} has no production variant named {', '.join(unknown)}"
            if unknown
            else "give at least one variant to change",
            endpoint_name=doc.endpoint_name,
            variants=sorted(served),
        )


def _reweighted(variant: VariantState, change: WeightChange | None) -> VariantState:
    if change is None:
        return variant
    return variant.model_copy(
        update={
            "weight": variant.weight if change.weight is None else change.weight,
            "instance_count": change.instance_count or variant.instance_count,
        }
    )


def _config_with(
    config: EndpointConfig | None, production: list[VariantState]
) -> EndpointConfig | None:
    """The stored config with the served weights and counts, so a later diff sees them."""
    if config is None:
        return None
    specs = [
        spec.model_copy(
            update={"initial_weight": state.weight, "instance_count": state.instance_count}
        )
        for spec, state in zip(config.production_variants, production, strict=False)
        if spec.variant_name == state.variant_name
    ]
    if len(specs) != len(config.production_variants):
        return config
    return config.model_copy(update={"production_variants": specs})


def update_weights(
    current: EndpointDoc | None, endpoint_name: str, changes: list[WeightChange], now: datetime
) -> EndpointDoc:
    """New weights / instance counts on the served variants, with no redeploy of any model."""
    doc = require_live(current, endpoint_name)
    _check_weight_changes(doc, changes)
    by_name = {change.variant_name: change for change in changes}
    production = [_reweighted(v, by_name.get(v.variant_name)) for v in doc.production_variants]
    if sum(v.weight for v in production) <= 0:
        raise InvalidInput("the production variants' weights must add up to more than 0")
    if production == doc.production_variants:
        return doc
    return doc.model_copy(
        update={
            "revision": doc.revision + 1,
            "production_variants": production,
            "config": _config_with(doc.config, production),
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
    if current is None or not is_live(current):
        return DeploymentRequested(
            endpoint_name=policy.endpoint_name,
            action="create",
            production_variants=[spec],
            rollout=policy.rollout,
        )
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
