"""Registry rules with no I/O: version numbering, approval transitions, aliases and lineage.

Every function takes the current document and returns a new one, so the store layer can run it
inside an optimistic-concurrency retry loop (`DocumentStore.update`) as often as it needs.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from cairn.artifacts.manifest import FiniteJson, ModelManifest
from cairn.contracts.events import ApprovalStatus, EndpointUpdated
from cairn.errors import Conflict, InvalidInput, NotFound
from pydantic import BaseModel, ConfigDict, Field

GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
# An alias must not look like a version number, so `{v}` in a URL is never ambiguous.
ALIAS_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
DecidedStatus = Literal["Approved", "Rejected"]


class Stored(BaseModel):
    """Base of what the registry stores or accepts: no inf or NaN (JSON cannot carry them)."""

    model_config = ConfigDict(allow_inf_nan=False)


class ModelPackageGroupNotFound(NotFound):
    code = "model_package_group_not_found"


class ModelVersionNotFound(NotFound):
    code = "model_version_not_found"


class AliasNotFound(NotFound):
    code = "alias_not_found"


class ModelPackageGroupUnreadable(Conflict):
    """The stored group no longer validates (written before a rule it breaks existed)."""

    code = "model_package_group_unreadable"


class ModelVersionUnreadable(Conflict):
    """The stored version no longer validates (written before a rule it breaks existed)."""

    code = "model_version_unreadable"


class TrainingJobAlreadyRegistered(Conflict):
    code = "training_job_already_registered"


class ApprovalRecord(Stored):
    """One approval decision: what, by whom, when and why."""

    status: ApprovalStatus
    previous_status: ApprovalStatus | None = None
    changed_by: str
    changed_at: datetime
    reason: str = ""


class ModelPackageGroup(Stored):
    """A model package group: the number of the latest version, aliases and registered jobs."""

    name: str
    latest_version: int = Field(default=0, ge=0)
    # Which version each training job got, so a retried registration reuses its number (no gap).
    training_jobs: dict[str, int] = Field(default_factory=dict)
    aliases: dict[str, int] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime


class DatasetRef(Stored):
    """A dataset a model was trained on, as the package manifest names it."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    channel: str = ""
    uri: str
    sha256: str | None = None


class Lineage(Stored):
    """Where a model version came from: datasets -> training job (-> version -> endpoints)."""

    training_job: str | None = None
    algorithm: str | None = None
    hyperparameters: dict[str, FiniteJson] = Field(default_factory=dict)
    datasets: list[DatasetRef] = Field(default_factory=list)


class EndpointRef(Stored):
    """An endpoint that serves this version, as of its `revision`."""

    endpoint_name: str
    variant_names: list[str]
    revision: int
    updated_at: datetime


class ModelVersion(Stored):
    """One registered model version with its approval, metrics, lineage, tags and endpoints."""

    model_package_group: str
    version: int = Field(ge=1)
    artifact_uri: str
    approval_status: ApprovalStatus
    approved_by: str | None = Field(
        default=None, description="The authenticated principal whose approval stands."
    )
    approval_history: list[ApprovalRecord] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    lineage: Lineage = Field(default_factory=Lineage)
    framework: str | None = None
    framework_version: str | None = None
    task: str | None = None
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    endpoints: dict[str, EndpointRef] = Field(default_factory=dict)
    created_at: datetime
    approval_announced: bool = Field(
        default=True,
        description="False from an approval change until its ModelApprovalChanged is published.",
    )


class JobRegistration(Stored):
    """The create-only marker that makes a training job register exactly one version."""

    training_job: str
    model_package_group: str
    version: int
    registered_at: datetime


class EndpointLinks(Stored):
    """Which versions an endpoint served at its latest revision seen (to unlink them later)."""

    endpoint_name: str
    revision: int
    models: list[tuple[str, int]] = Field(default_factory=list)


class RegisterVersion(Stored):
    """A registration: by hand (POST .../versions) or for a completed training job."""

    artifact_uri: str = Field(min_length=1)
    approval_status: ApprovalStatus = "PendingManualApproval"
    metrics: dict[str, float] = Field(default_factory=dict)
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    training_job: str | None = None
    registered_by: str = Field(default="api", min_length=1)


class ApprovalDecision(Stored):
    """Approve or reject a version; `by` is the authenticated principal that decided."""

    status: DecidedStatus
    by: str = Field(min_length=1)
    reason: str = ""


class ManifestSummary(Stored):
    """What the registry keeps from a model package's manifest.json."""

    framework: str | None = None
    framework_version: str | None = None
    task: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    lineage: Lineage = Field(default_factory=Lineage)


def check_group_name(name: str) -> str:
    if not GROUP_NAME.match(name):
        raise InvalidInput(
            f"invalid model package group name {name!r}: letters, digits and '-', at most 63",
            model_package_group=name,
        )
    return name


def check_alias_name(alias: str) -> str:
    if not ALIAS_NAME.match(alias):
        raise InvalidInput(
            f"invalid alias {alias!r}: starts with a letter; letters, digits, '_' and '-'",
            alias=alias,
        )
    return alias


def allocate_version(
    current: ModelPackageGroup | None,
    group_name: str,
    *,
    now: datetime,
    training_job: str | None = None,
) -> tuple[ModelPackageGroup, int]:
    """The group after allocating the next version number, and that number.

    A training job that already holds a number gets the same one back, so a registration that
    crashed after allocating and is retried leaves no gap.
    """
    group = current or ModelPackageGroup(name=group_name, created_at=now, updated_at=now)
    if training_job is not None and training_job in group.training_jobs:
        return group, group.training_jobs[training_job]
    version = group.latest_version + 1
    jobs = dict(group.training_jobs)
    if training_job is not None:
        jobs[training_job] = version
    return group.model_copy(
        update={"latest_version": version, "training_jobs": jobs, "updated_at": now}
    ), version


def new_version(
    request: RegisterVersion,
    *,
    group_name: str,
    version: int,
    now: datetime,
    manifest: ManifestSummary | None = None,
    algorithm: str | None = None,
) -> ModelVersion:
    """A fresh version; request metrics win over the manifest's, lineage comes from the manifest."""
    summary = manifest or ManifestSummary()
    lineage = summary.lineage.model_copy(
        update={
            "training_job": request.training_job or summary.lineage.training_job,
            "algorithm": algorithm or summary.lineage.algorithm,
        }
    )
    status, by = request.approval_status, request.registered_by
    first = ApprovalRecord(status=status, changed_by=by, changed_at=now, reason="registered")
    return ModelVersion(
        model_package_group=group_name,
        version=version,
        artifact_uri=request.artifact_uri,
        approval_status=status,
        approved_by=by if status == "Approved" else None,
        approval_history=[first],
        metrics={**summary.metrics, **request.metrics},
        lineage=lineage,
        framework=summary.framework,
        framework_version=summary.framework_version,
        task=summary.task,
        description=request.description,
        tags=dict(request.tags),
        created_at=now,
    )


def change_approval(
    version: ModelVersion, status: DecidedStatus, *, by: str, reason: str, now: datetime
) -> ModelVersion:
    """The version with a new approval decision appended; unchanged when the status is the same.

    Any decided status may replace any other (as in SageMaker): a rejected version can be approved
    after review and an approved one revoked. Every decision is kept in `approval_history`.
    """
    if not by.strip():
        raise InvalidInput("an approval decision needs `by`: who made it")
    if status == version.approval_status:
        return version
    record = ApprovalRecord(
        status=status,
        previous_status=version.approval_status,
        changed_by=by,
        changed_at=now,
        reason=reason,
    )
    return version.model_copy(
        update={
            "approval_status": status,
            "approved_by": by if status == "Approved" else None,
            "approval_history": [*version.approval_history, record],
            "approval_announced": False,
        }
    )


def set_alias(
    group: ModelPackageGroup, alias: str, version: int, now: datetime
) -> ModelPackageGroup:
    """Point `alias` at `version` (moves it if it pointed elsewhere)."""
    check_alias_name(alias)
    if not 1 <= version <= group.latest_version:
        raise ModelVersionNotFound(
            f"model package group {group.name!r} has no version {version}",
            model_package_group=group.name,
            version=version,
        )
    return group.model_copy(
        update={"aliases": {**group.aliases, alias: version}, "updated_at": now}
    )


def remove_alias(group: ModelPackageGroup, alias: str, now: datetime) -> ModelPackageGroup:
    if alias not in group.aliases:
        raise AliasNotFound(
            f"model package group {group.name!r} has no alias {alias!r}",
            model_package_group=group.name,
            alias=alias,
        )
    aliases = {name: target for name, target in group.aliases.items() if name != alias}
    return group.model_copy(update={"aliases": aliases, "updated_at": now})


def resolve_version(group: ModelPackageGroup, ref: str) -> int:
    """A version number from `ref`: digits, or an alias such as `champion`."""
    if ref.isdigit():
        return int(ref)
    if ref in group.aliases:
        return group.aliases[ref]
    raise AliasNotFound(
        f"model package group {group.name!r} has no version or alias {ref!r}",
        model_package_group=group.name,
        alias=ref,
    )


def endpoint_models(
    production: list[tuple[str, str, int]], shadow: tuple[str, str, int] | None
) -> dict[tuple[str, int], list[str]]:
    """(group, version) -> the variant names serving it, from (variant, group, version) triples."""
    served: dict[tuple[str, int], list[str]] = {}
    for variant, group, version in [*production, *([shadow] if shadow else [])]:
        served.setdefault((group, version), []).append(variant)
    return served


def served_by(update: EndpointUpdated) -> dict[tuple[str, int], list[str]]:
    """The versions an EndpointUpdated serves, with their variant names (none once Deleted)."""
    if update.status == "Deleted":
        return {}
    shadow = update.shadow_variant
    return endpoint_models(
        [
            (v.variant_name, v.model_package_group, v.model_version)
            for v in update.production_variants
        ],
        (shadow.variant_name, shadow.model_package_group, shadow.model_version) if shadow else None,
    )


def link_endpoint(
    version: ModelVersion, endpoint_name: str, variants: list[str], revision: int, now: datetime
) -> ModelVersion:
    """Record that `endpoint_name` serves this version (newer revisions only)."""
    existing = version.endpoints.get(endpoint_name)
    if existing is not None and existing.revision >= revision:
        return version
    ref = EndpointRef(
        endpoint_name=endpoint_name, variant_names=variants, revision=revision, updated_at=now
    )
    return version.model_copy(update={"endpoints": {**version.endpoints, endpoint_name: ref}})


def unlink_endpoint(version: ModelVersion, endpoint_name: str, revision: int) -> ModelVersion:
    """Forget `endpoint_name` unless a newer revision linked it again meanwhile."""
    existing = version.endpoints.get(endpoint_name)
    if existing is None or existing.revision > revision:
        return version
    endpoints = {name: ref for name, ref in version.endpoints.items() if name != endpoint_name}
    return version.model_copy(update={"endpoints": endpoints})


def summarize_manifest(manifest: ModelManifest) -> ManifestSummary:
    """What the registry keeps of a package manifest (`cairn.artifacts`, written by the trainer)."""
    lineage = manifest.lineage
    return ManifestSummary(
        framework=manifest.framework,
        framework_version=manifest.framework_version,
        task=manifest.task,
        metrics=dict(manifest.metrics),
        lineage=Lineage(
            training_job=lineage.training_job,
            algorithm=lineage.algorithm or manifest.algorithm,
            hyperparameters=dict(lineage.hyperparameters),
            datasets=[
                DatasetRef(channel=d.channel, uri=d.uri, sha256=d.sha256) for d in lineage.datasets
            ],
        ),
    )


def lineage_view(version: ModelVersion) -> dict[str, Any]:
    """The lineage graph of one version, in the order data flowed: datasets to endpoints."""
    return {
        "datasets": [dataset.model_dump() for dataset in version.lineage.datasets],
        "training_job": {
            "job_name": version.lineage.training_job,
            "algorithm": version.lineage.algorithm,
            "hyperparameters": version.lineage.hyperparameters,
        },
        "model_version": {
            "model_package_group": version.model_package_group,
            "version": version.version,
            "artifact_uri": version.artifact_uri,
            "approval_status": version.approval_status,
        },
        "endpoints": [
            ref.model_dump(mode="json")
            for ref in sorted(version.endpoints.values(), key=lambda ref: ref.endpoint_name)
        ],
    }
