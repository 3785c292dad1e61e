"""Registry use cases: register, approve, alias, lineage; state in the store, then events."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

from cairn.contracts.envelope import Envelope, utc_now
from cairn.contracts.events import (
    ApprovalStatus,
    EndpointUpdated,
    ModelApprovalChanged,
    ModelApprovalRequested,
    ModelPackageRegistered,
    TrainingJobCompleted,
)
from cairn.documents import DocumentStore
from cairn.errors import InvalidInput, ObjectNotFound, PreconditionFailed
from cairn.store.base import ObjectStore
from pydantic import BaseModel, Field, ValidationError

from services.registry import domain
from services.registry.domain import (
    DecidedStatus,
    EndpointLinks,
    JobRegistration,
    ManifestSummary,
    ModelPackageGroup,
    ModelPackageGroupNotFound,
    ModelVersion,
    ModelVersionNotFound,
    TrainingJobAlreadyRegistered,
)

log = logging.getLogger("cairn.registry")

MANIFEST_NAME = "manifest.json"


class Publish(Protocol):
    """Publishes one event (the service's `publish`), chaining ids from `cause`."""

    def __call__(
        self, data: BaseModel, cause: Envelope[Any] | None = None
    ) -> Awaitable[Envelope[Any]]: ...


class RegisterVersion(BaseModel):
    """Body of POST /model-package-groups/{g}/versions: register a package by hand."""

    artifact_uri: str = Field(min_length=1)
    approval_status: ApprovalStatus = "PendingManualApproval"
    metrics: dict[str, float] = Field(default_factory=dict)
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    training_job: str | None = None
    registered_by: str = "api"


class ApprovalDecision(BaseModel):
    """Body of POST .../versions/{v}/approval."""

    status: DecidedStatus
    by: str = Field(min_length=1)
    reason: str = ""


class AliasTarget(BaseModel):
    """Body of PUT .../aliases/{alias}."""

    version: int = Field(ge=1)


class Registry:
    """The registry's state in the object store and the events that announce its changes."""

    def __init__(
        self, store: ObjectStore, publish: Publish, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self.store = store
        self.publish = publish
        self.clock = clock
        self.groups = DocumentStore(store, ModelPackageGroup, "registry/groups")
        self.versions = DocumentStore(store, ModelVersion, "registry/groups")
        self.by_job = DocumentStore(store, JobRegistration, "registry/by-job")
        self.endpoint_links = DocumentStore(store, EndpointLinks, "registry/endpoints")

    # Reads -------------------------------------------------------------------------------

    def list_groups(self) -> list[ModelPackageGroup]:
        names = [
            key for key in self.groups.keys(prefix="") if "/" not in key and key.endswith(".json")
        ]
        return [found.doc for key in names if (found := self.groups.get_or_none(key))]

    def get_group(self, group_name: str) -> ModelPackageGroup:
        found = self.groups.get_or_none(f"{group_name}.json")
        if found is None:
            raise ModelPackageGroupNotFound(
                f"no model package group {group_name!r}", model_package_group=group_name
            )
        return found.doc

    def list_versions(
        self, group_name: str, status: ApprovalStatus | None = None
    ) -> list[ModelVersion]:
        self.get_group(group_name)
        found = [item.doc for item in self.versions.list(f"{group_name}/versions/")]
        found.sort(key=lambda version: version.version)
        return [v for v in found if status is None or v.approval_status == status]

    def get_version(self, group_name: str, ref: str) -> ModelVersion:
        """A version by number or alias (`champion`)."""
        number = domain.resolve_version(self.get_group(group_name), ref)
        found = self.versions.get_or_none(_version_key(group_name, number))
        if found is None:
            raise ModelVersionNotFound(
                f"model package group {group_name!r} has no version {number}",
                model_package_group=group_name,
                version=number,
            )
        return found.doc

    def lineage(self, group_name: str, ref: str) -> dict[str, Any]:
        return domain.lineage_view(self.get_version(group_name, ref))

    # Registration ------------------------------------------------------------------------

    def read_manifest(self, artifact_uri: str) -> ManifestSummary | None:
        """The package's manifest.json as the registry keeps it; None when there is none."""
        key = _store_key(self.store, artifact_uri)
        if key is None:
            return None
        try:
            raw = json.loads(self.store.get_bytes(f"{key.rstrip('/')}/{MANIFEST_NAME}"))
            return domain.summarize_manifest(raw)
        except ObjectNotFound:
            return None
        except (ValueError, TypeError, ValidationError) as exc:
            raise InvalidInput(
                f"manifest.json of {artifact_uri!r} is not a valid model manifest: {exc}",
                artifact_uri=artifact_uri,
            ) from exc

    def register(
        self,
        group_name: str,
        request: RegisterVersion,
        *,
        algorithm: str | None = None,
        require_manifest: bool = True,
    ) -> tuple[ModelVersion, bool]:
        """Register a version; returns it and whether this call created it.

        A training job registers at most one version: its `registry/by-job/<job>.json` marker is
        create-only, and the group remembers the number it allocated to the job, so a retry after
        a crash at any step finishes the same version.
        """
        domain.check_group_name(group_name)
        job = request.training_job
        if job is not None:
            marker = self.by_job.get_or_none(f"{job}.json")
            if marker is not None:
                key = _version_key(marker.doc.model_package_group, marker.doc.version)
                return self.versions.get(key).doc, False
        manifest = self.read_manifest(request.artifact_uri)
        if manifest is None and require_manifest:
            raise InvalidInput(
                f"no {MANIFEST_NAME} under {request.artifact_uri!r}: not a model package",
                artifact_uri=request.artifact_uri,
            )
        allocated: list[int] = []

        def allocate(current: ModelPackageGroup | None) -> ModelPackageGroup:
            group, number = domain.allocate_version(
                current, group_name, now=self.clock(), training_job=job
            )
            allocated.append(number)
            return group

        self.groups.update(f"{group_name}.json", allocate)
        number = allocated[-1]
        version = domain.new_version(
            group_name=group_name,
            version=number,
            artifact_uri=request.artifact_uri,
            approval_status=request.approval_status,
            registered_by=request.registered_by,
            now=self.clock(),
            metrics=request.metrics,
            manifest=manifest,
            training_job=job,
            algorithm=algorithm,
            description=request.description,
            tags=request.tags,
        )
        created = True
        try:
            self.versions.create(_version_key(group_name, number), version)
        except PreconditionFailed:
            # Only this job's earlier attempt can hold a number allocated to the job.
            version = self.versions.get(_version_key(group_name, number)).doc
            created = False
        if job is not None:
            marker_doc = JobRegistration(
                training_job=job,
                model_package_group=group_name,
                version=number,
                registered_at=self.clock(),
            )
            try:
                self.by_job.create(f"{job}.json", marker_doc)
            except PreconditionFailed:
                created = False
        return version, created

    async def register_by_hand(self, group_name: str, request: RegisterVersion) -> ModelVersion:
        """POST .../versions: 409 when the training job already has a version."""
        version, created = await asyncio.to_thread(self.register, group_name, request)
        if not created:
            raise TrainingJobAlreadyRegistered(
                f"training job {request.training_job!r} is already registered as version "
                f"{version.version} of {version.model_package_group!r}",
                model_package_group=version.model_package_group,
                version=version.version,
            )
        await self._announce(version, cause=None)
        return version

    async def on_training_job_completed(self, envelope: Envelope[TrainingJobCompleted]) -> None:
        """Register the job's model when it asked for it; redeliveries re-announce, never re-add."""
        completed = envelope.data
        spec = completed.registration
        if spec is None:
            return
        request = RegisterVersion(
            artifact_uri=completed.artifact_uri,
            approval_status=spec.approval_status,
            metrics=completed.metrics,
            description=spec.description,
            training_job=completed.job_name,
            registered_by=f"training-job:{completed.job_name}",
        )
        version, created = await asyncio.to_thread(
            self.register,
            spec.model_package_group,
            request,
            algorithm=completed.algorithm,
            require_manifest=False,
        )
        if not created:
            log.info(
                "training job %s is already version %d of %s; announcing it again",
                completed.job_name,
                version.version,
                version.model_package_group,
            )
        # Published again on a redelivery: the first attempt may have died before publishing.
        await self._announce(version, cause=envelope)

    async def _announce(self, version: ModelVersion, cause: Envelope[Any] | None) -> None:
        await self.publish(
            ModelPackageRegistered(
                model_package_group=version.model_package_group,
                version=version.version,
                artifact_uri=version.artifact_uri,
                approval_status=version.approval_history[0].status,
                metrics=version.metrics,
                training_job=version.lineage.training_job,
            ),
            cause,
        )
        first = version.approval_history[0]
        if first.status == "Approved":
            await self.publish(
                ModelApprovalChanged(
                    model_package_group=version.model_package_group,
                    version=version.version,
                    approval_status="Approved",
                    previous_status=None,
                    changed_by=first.changed_by,
                    reason=first.reason,
                ),
                cause,
            )

    # Approval and aliases ----------------------------------------------------------------

    async def decide(
        self,
        group_name: str,
        ref: str,
        decision: ApprovalDecision,
        cause: Envelope[Any] | None = None,
    ) -> ModelVersion:
        """Approve or reject a version; emits ModelApprovalChanged when the status changes."""
        version, previous = await self._apply_decision(group_name, ref, decision)
        if previous != version.approval_status:
            await self._announce_decision(version, previous, decision, cause)
        return version

    async def on_approval_requested(self, envelope: Envelope[ModelApprovalRequested]) -> None:
        """The event form of POST .../approval: the same decision, chained to its request.

        A redelivery finds the status already applied by this requester and announces it again
        (the first attempt may have died between the write and the publish).
        """
        request = envelope.data
        decision = ApprovalDecision(
            status=request.approval_status, by=request.requested_by, reason=request.reason
        )
        try:
            version, previous = await self._apply_decision(
                request.model_package_group, str(request.version), decision
            )
        except (ModelPackageGroupNotFound, ModelVersionNotFound) as exc:
            log.error("approval request for an unknown version dropped: %s", exc.message)
            return
        latest = version.approval_history[-1]
        if previous != version.approval_status:
            await self._announce_decision(version, previous, decision, envelope)
        elif latest.status == request.approval_status and latest.changed_by == request.requested_by:
            await self._announce_decision(version, latest.previous_status, decision, envelope)

    async def _apply_decision(
        self, group_name: str, ref: str, decision: ApprovalDecision
    ) -> tuple[ModelVersion, ApprovalStatus]:
        """Write the decision with a conditional update; returns the version and its old status."""
        number = (await asyncio.to_thread(self.get_version, group_name, ref)).version
        before: list[ApprovalStatus] = []

        def apply(current: ModelVersion | None) -> ModelVersion:
            if current is None:
                raise ModelVersionNotFound(f"version {number} of {group_name!r} vanished")
            before.append(current.approval_status)
            return domain.change_approval(
                current, decision.status, by=decision.by, reason=decision.reason, now=self.clock()
            )

        written = await asyncio.to_thread(
            self.versions.update, _version_key(group_name, number), apply
        )
        return written.doc, before[-1]

    async def _announce_decision(
        self,
        version: ModelVersion,
        previous: ApprovalStatus | None,
        decision: ApprovalDecision,
        cause: Envelope[Any] | None,
    ) -> None:
        await self.publish(
            ModelApprovalChanged(
                model_package_group=version.model_package_group,
                version=version.version,
                approval_status=version.approval_status,
                previous_status=previous,
                changed_by=decision.by,
                reason=decision.reason,
            ),
            cause,
        )

    def set_alias(self, group_name: str, alias: str, version: int) -> ModelPackageGroup:
        """Move `alias` to `version` in one conditional write of the group document."""
        self.get_version(group_name, str(version))
        return self.groups.update(
            f"{group_name}.json",
            lambda current: domain.set_alias(
                _existing(current, group_name), alias, version, self.clock()
            ),
        ).doc

    def remove_alias(self, group_name: str, alias: str) -> ModelPackageGroup:
        self.get_group(group_name)
        return self.groups.update(
            f"{group_name}.json",
            lambda current: domain.remove_alias(
                _existing(current, group_name), alias, self.clock()
            ),
        ).doc

    def set_tags(self, group_name: str, ref: str, tags: dict[str, str]) -> ModelVersion:
        """Replace a version's free-form tags."""
        number = self.get_version(group_name, ref).version
        return self.versions.update(
            _version_key(group_name, number),
            lambda current: _existing_version(current, group_name, number).model_copy(
                update={"tags": dict(tags)}
            ),
        ).doc

    # Lineage: endpoints ------------------------------------------------------------------

    def apply_endpoint_update(self, update: EndpointUpdated) -> None:
        """Link the versions an endpoint serves now; unlink those it stopped serving."""
        key = f"{update.endpoint_name}.json"
        seen = self.endpoint_links.get_or_none(key)
        if seen is not None and seen.doc.revision >= update.revision:
            return
        serving: dict[tuple[str, int], list[str]] = {}
        if update.status != "Deleted":
            serving = domain.endpoint_models(
                [
                    (v.variant_name, v.model_package_group, v.model_version)
                    for v in update.production_variants
                ],
                (
                    (
                        update.shadow_variant.variant_name,
                        update.shadow_variant.model_package_group,
                        update.shadow_variant.model_version,
                    )
                    if update.shadow_variant
                    else None
                ),
            )
        now = self.clock()
        before = set(seen.doc.models) if seen is not None else set()
        for group_name, number in before - set(serving):
            self._update_if_exists(
                group_name,
                number,
                lambda v: domain.unlink_endpoint(v, update.endpoint_name, update.revision),
            )
        for (group_name, number), variants in serving.items():
            self._update_if_exists(
                group_name,
                number,
                lambda v, variants=variants: domain.link_endpoint(  # type: ignore[misc]
                    v, update.endpoint_name, variants, update.revision, now
                ),
            )
        links = EndpointLinks(
            endpoint_name=update.endpoint_name, revision=update.revision, models=sorted(serving)
        )
        self.endpoint_links.update(
            key,
            lambda current: current if current and current.revision >= update.revision else links,
        )

    async def on_endpoint_updated(self, envelope: Envelope[EndpointUpdated]) -> None:
        await asyncio.to_thread(self.apply_endpoint_update, envelope.data)

    def _update_if_exists(
        self, group_name: str, number: int, fn: Callable[[ModelVersion], ModelVersion]
    ) -> None:
        key = _version_key(group_name, number)
        if self.versions.get_or_none(key) is None:
            return  # a model this registry never registered: nothing to link

        self.versions.update(
            key, lambda current: fn(_existing_version(current, group_name, number))
        )


def _version_key(group_name: str, number: int) -> str:
    return f"{group_name}/versions/{number}.json"


def _existing(current: ModelPackageGroup | None, group_name: str) -> ModelPackageGroup:
    if current is None:
        raise ModelPackageGroupNotFound(
            f"no model package group {group_name!r}", model_package_group=group_name
        )
    return current


def _existing_version(current: ModelVersion | None, group_name: str, number: int) -> ModelVersion:
    if current is None:
        raise ModelVersionNotFound(
            f"model package group {group_name!r} has no version {number}",
            model_package_group=group_name,
            version=number,
        )
    return current


def _store_key(store: ObjectStore, uri: str) -> str | None:
    """The store key an artifact URI names, or None for a URI outside this store."""
    base = store.url.rstrip("/") + "/"
    if uri.startswith(base):
        return uri[len(base) :]
    if "://" in uri:
        return None
    return uri.lstrip("/")
