"""The registry's documents in the store: groups, versions and job markers (no events)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from cairn.artifacts import MANIFEST_FILE, read_manifest
from cairn.contracts.envelope import utc_now
from cairn.contracts.events import ApprovalStatus
from cairn.documents import DocumentStore, Versioned
from cairn.errors import CairnError, InvalidInput, ObjectNotFound, PreconditionFailed, Unavailable
from cairn.store.base import ObjectStore
from pydantic import BaseModel, ValidationError

from services.registry import domain
from services.registry.domain import (
    JobRegistration,
    ManifestSummary,
    ModelPackageGroup,
    ModelPackageGroupNotFound,
    ModelPackageGroupUnreadable,
    ModelVersion,
    ModelVersionNotFound,
    ModelVersionUnreadable,
    RegisterVersion,
)

log = logging.getLogger("cairn.registry")

DocT = TypeVar("DocT", bound=BaseModel)


class RegistryDocuments:
    """Reads and conditional writes of the registry's documents; the service layer builds on it."""

    def __init__(self, store: ObjectStore, clock: Callable[[], datetime] = utc_now) -> None:
        self.store = store
        self.clock = clock
        self.groups = DocumentStore(store, ModelPackageGroup, "registry/groups")
        self.versions = DocumentStore(store, ModelVersion, "registry/groups")
        self.by_job = DocumentStore(store, JobRegistration, "registry/by-job")

    # Reads -------------------------------------------------------------------------------

    def list_groups(self) -> list[ModelPackageGroup]:
        names = [key for key in self.groups.keys("") if "/" not in key and key.endswith(".json")]
        return [found.doc for found in readable(self.groups, names)]

    def get_group(self, group_name: str) -> ModelPackageGroup:
        try:
            found = self.groups.get_or_none(f"{group_name}.json")
        except CairnError as exc:
            raise unreadable(exc, ModelPackageGroupUnreadable, f"group {group_name!r}") from exc
        return existing_group(found.doc if found else None, group_name)

    def list_versions(
        self, group_name: str, status: ApprovalStatus | None = None
    ) -> list[ModelVersion]:
        self.get_group(group_name)
        keys = self.versions.keys(f"{group_name}/versions/")
        found = [item.doc for item in readable(self.versions, keys)]
        found.sort(key=lambda version: version.version)
        return [v for v in found if status is None or v.approval_status == status]

    def get_version(self, group_name: str, ref: str) -> ModelVersion:
        """A version by number or alias (`champion`)."""
        number = domain.resolve_version(self.get_group(group_name), ref)
        try:
            found = self.versions.get_or_none(version_key(group_name, number))
        except CairnError as exc:
            what = f"version {number} of {group_name!r}"
            raise unreadable(exc, ModelVersionUnreadable, what) from exc
        return existing_version(found.doc if found else None, group_name, number)

    def lineage(self, group_name: str, ref: str) -> dict[str, Any]:
        return domain.lineage_view(self.get_version(group_name, ref))

    # Registration ------------------------------------------------------------------------

    def read_manifest(self, artifact_uri: str) -> ManifestSummary | None:
        """The package's manifest as the registry keeps it; None when there is none."""
        try:
            return domain.summarize_manifest(read_manifest(self.store, artifact_uri))
        except ObjectNotFound:
            return None
        except ValidationError as exc:
            raise InvalidInput(
                f"{MANIFEST_FILE} of {artifact_uri!r} is not a valid model manifest: {exc}",
                artifact_uri=artifact_uri,
            ) from exc

    def _manifest_for(self, artifact_uri: str, required: bool) -> ManifestSummary | None:
        manifest = self.read_manifest(artifact_uri)
        if manifest is None and required:
            raise InvalidInput(
                f"no {MANIFEST_FILE} under {artifact_uri!r}: not a model package",
                artifact_uri=artifact_uri,
            )
        return manifest

    def _registered_for(self, job: str | None) -> ModelVersion | None:
        """The version a training job already registered, from its create-only marker."""
        marker = self.by_job.get_or_none(f"{job}.json") if job is not None else None
        if marker is None:
            return None
        key = version_key(marker.doc.model_package_group, marker.doc.version)
        return self.versions.get(key).doc

    def _allocate(self, group_name: str, job: str | None) -> int:
        allocated: list[int] = []

        def allocate(current: ModelPackageGroup | None) -> ModelPackageGroup:
            group, number = domain.allocate_version(
                current, group_name, now=self.clock(), training_job=job
            )
            allocated.append(number)
            return group

        self.groups.update(f"{group_name}.json", allocate)
        return allocated[-1]

    def _store_version(self, version: ModelVersion, job: str | None) -> tuple[ModelVersion, bool]:
        """Create the version and its job's marker; False when an earlier attempt had."""
        key = version_key(version.model_package_group, version.version)
        created = True
        try:
            self.versions.create(key, version)
        except PreconditionFailed:
            # Only this job's earlier attempt can hold a number allocated to the job.
            version, created = self.versions.get(key).doc, False
        if job is None:
            return version, created
        marker = JobRegistration(
            training_job=job,
            model_package_group=version.model_package_group,
            version=version.version,
            registered_at=self.clock(),
        )
        try:
            self.by_job.create(f"{job}.json", marker)
        except PreconditionFailed:
            created = False
        return version, created

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
        earlier = self._registered_for(request.training_job)
        if earlier is not None:
            return earlier, False
        manifest = self._manifest_for(request.artifact_uri, require_manifest)
        version = domain.new_version(
            request,
            group_name=group_name,
            version=self._allocate(group_name, request.training_job),
            now=self.clock(),
            manifest=manifest,
            algorithm=algorithm,
        )
        return self._store_version(version, request.training_job)

    # Aliases and tags --------------------------------------------------------------------

    def set_alias(self, group_name: str, alias: str, version: int) -> ModelPackageGroup:
        """Move `alias` to `version` in one conditional write of the group document."""
        self.get_version(group_name, str(version))
        return self.groups.update(
            f"{group_name}.json",
            lambda current: domain.set_alias(
                existing_group(current, group_name), alias, version, self.clock()
            ),
        ).doc

    def remove_alias(self, group_name: str, alias: str) -> ModelPackageGroup:
        self.get_group(group_name)
        return self.groups.update(
            f"{group_name}.json",
            lambda current: domain.remove_alias(
                existing_group(current, group_name), alias, self.clock()
            ),
        ).doc

    def set_tags(self, group_name: str, ref: str, tags: dict[str, str]) -> ModelVersion:
        """Replace a version's free-form tags."""
        number = self.get_version(group_name, ref).version
        return self.versions.update(
            version_key(group_name, number),
            lambda current: existing_version(current, group_name, number).model_copy(
                update={"tags": dict(tags)}
            ),
        ).doc


def readable(documents: DocumentStore[DocT], keys: list[str]) -> list[Versioned[DocT]]:
    """The documents at `keys`, skipping (and logging) any that no longer validate."""
    found: list[Versioned[DocT]] = []
    for key in keys:
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


def unreadable(exc: CairnError, error: type[CairnError], what: str) -> CairnError:
    """`error` (logged) naming the invalid fields when `exc` is a failed validation, else `exc`."""
    if not isinstance(exc.__cause__, ValidationError):
        return exc
    problems = "; ".join(
        f"{'.'.join(str(part) for part in detail['loc'])}: {detail['msg']}"
        for detail in exc.__cause__.errors(include_url=False)
    )
    log.error("stored %s is unreadable: %s", what, problems)
    return error(f"the stored {what} cannot be read ({problems})", key=exc.details.get("key"))


def version_key(group_name: str, number: int) -> str:
    """A version's key under `registry/groups/`."""
    return f"{group_name}/versions/{number}.json"


def existing_group(current: ModelPackageGroup | None, group_name: str) -> ModelPackageGroup:
    if current is None:
        raise ModelPackageGroupNotFound(
            f"no model package group {group_name!r}", model_package_group=group_name
        )
    return current


def existing_version(current: ModelVersion | None, group_name: str, number: int) -> ModelVersion:
    if current is None:
        raise ModelVersionNotFound(
            f"model package group {group_name!r} has no version {number}",
            model_package_group=group_name,
            version=number,
        )
    return current
