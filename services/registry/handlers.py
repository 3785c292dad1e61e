"""Registry use cases: register, approve and announce; documents in the store, then events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from cairn.contracts.envelope import Envelope, utc_now
from cairn.contracts.events import (
    ApprovalStatus,
    ModelApprovalChanged,
    ModelApprovalRequested,
    ModelPackageRegistered,
    TrainingJobCompleted,
)
from cairn.contracts.pipeline_events import (
    ModelRegistrationFailed,
    ModelRegistrationRequested,
)
from cairn.contracts.tuner_events import HyperParameterTuningJobCompleted
from cairn.errors import CairnError, ConfigError
from cairn.ports import Authority, Publish
from cairn.store.base import ObjectStore

from services.registry import domain
from services.registry.config import RegistrySettings
from services.registry.domain import (
    ApprovalDecision,
    ModelPackageGroupNotFound,
    ModelVersion,
    ModelVersionNotFound,
    RegisterVersion,
    TrainingJobAlreadyRegistered,
)
from services.registry.repository import RegistryDocuments, existing_version, version_key

log = logging.getLogger("cairn.registry")

APPROVE_ACTION = "model.approve"


class Registry(RegistryDocuments):
    """The registry's service layer: its documents, and the events that announce their changes."""

    def __init__(
        self,
        store: ObjectStore,
        publish: Publish,
        clock: Callable[[], datetime] = utc_now,
        authority: Authority | None = None,
        config: RegistrySettings | None = None,
    ) -> None:
        super().__init__(store, clock)
        self.publish = publish
        self.authority = authority
        self.config = config or RegistrySettings()

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

    async def on_tuning_job_completed(
        self, envelope: Envelope[HyperParameterTuningJobCompleted]
    ) -> None:
        """Register a tuning job's best model when it asked for it (like a training job's)."""
        done = envelope.data
        best = done.best_training_job
        if done.registration is None or best is None or best.artifact_uri is None:
            return
        request = RegisterVersion(
            artifact_uri=best.artifact_uri,
            approval_status=done.registration.approval_status,
            metrics={"objective": best.objective_value},
            description=done.registration.description
            or f"best of tuning job {done.tuning_job_name}",
            training_job=best.training_job_name,
            registered_by=f"tuning-job:{done.tuning_job_name}",
        )
        version, _ = await asyncio.to_thread(
            self.register,
            done.registration.model_package_group,
            request,
            algorithm=done.algorithm,
            require_manifest=False,
        )
        await self._announce(version, cause=envelope)

    async def on_registration_requested(
        self, envelope: Envelope[ModelRegistrationRequested]
    ) -> None:
        """The event form of POST .../versions (a pipeline's RegisterModel step); the training
        job is the idempotency key, so a redelivery re-announces the same version."""
        asked = envelope.data
        request = RegisterVersion(
            artifact_uri=asked.artifact_uri,
            approval_status=asked.approval_status,
            metrics=asked.metrics,
            description=asked.description,
            training_job=asked.training_job,
            registered_by=f"request:{envelope.source}",
        )
        try:
            version, _ = await asyncio.to_thread(
                self.register, asked.model_package_group, request, require_manifest=False
            )
        except CairnError as error:
            if not error.is_refusal:
                raise
            failed = ModelRegistrationFailed(
                model_package_group=asked.model_package_group,
                training_job=asked.training_job,
                reason=error.message,
            )
            await self.publish(failed, envelope)
            return
        await self._announce(version, cause=envelope)

    async def _announce(self, version: ModelVersion, cause: Envelope[Any] | None) -> None:
        first = version.approval_history[0]
        await self.publish(
            ModelPackageRegistered(
                model_package_group=version.model_package_group,
                version=version.version,
                artifact_uri=version.artifact_uri,
                approval_status=first.status,
                metrics=version.metrics,
                training_job=version.lineage.training_job,
            ),
            cause,
        )
        if first.status == "Approved":
            decision = ApprovalDecision(status="Approved", by=first.changed_by, reason=first.reason)
            await self._announce_decision(version, None, decision, cause)

    # Approval ----------------------------------------------------------------------------

    async def decide(
        self,
        group_name: str,
        ref: str,
        decision: ApprovalDecision,
        cause: Envelope[Any] | None = None,
    ) -> ModelVersion:
        """Approve or reject a version; emits ModelApprovalChanged when the status changes.

        The same decision again announces a change still unannounced: the registry may have
        died between the write and the publish.
        """
        version, previous = await self._apply_decision(group_name, ref, decision)
        if previous != version.approval_status:
            await self._announce_decision(version, previous, decision, cause)
        elif not version.approval_announced:
            await self._announce_latest(version, cause)
        return version

    async def on_approval_requested(self, envelope: Envelope[ModelApprovalRequested]) -> None:
        """The event form of POST .../approval, decided in the name of the key that signed it.

        The kernel checked the signature and the `approve` scope before this runs. A redelivery
        finds the status already applied by this principal and announces it again (the first
        attempt may have died between the write and the publish).
        """
        if self.authority is None:
            raise ConfigError("the registry needs its service to act on ModelApprovalRequested")
        request = envelope.data
        principal = await self.authority.principal_of(envelope)
        decision = ApprovalDecision(
            status=request.approval_status, by=principal.name, reason=request.reason
        )
        resource = f"model-package-groups/{request.model_package_group}/versions/{request.version}"
        try:
            await self._decide_requested(request, decision, envelope)
        except (ModelPackageGroupNotFound, ModelVersionNotFound) as exc:
            log.error("approval request for an unknown version dropped: %s", exc.message)
            await self.authority.audit(
                action=APPROVE_ACTION,
                resource=resource,
                principal=principal,
                outcome="failed",
                correlation_id=envelope.correlation_id,
            )
            return
        await self.authority.audit(
            action=APPROVE_ACTION,
            resource=resource,
            principal=principal,
            outcome="success",
            correlation_id=envelope.correlation_id,
        )

    async def _decide_requested(
        self,
        request: ModelApprovalRequested,
        decision: ApprovalDecision,
        envelope: Envelope[ModelApprovalRequested],
    ) -> None:
        version, previous = await self._apply_decision(
            request.model_package_group, str(request.version), decision
        )
        latest = version.approval_history[-1]
        if previous != version.approval_status:
            await self._announce_decision(version, previous, decision, envelope)
        elif latest.status == decision.status and latest.changed_by == decision.by:
            await self._announce_decision(version, latest.previous_status, decision, envelope)

    async def _apply_decision(
        self, group_name: str, ref: str, decision: ApprovalDecision
    ) -> tuple[ModelVersion, ApprovalStatus]:
        """Write the decision with a conditional update; returns the version and its old status."""
        number = (await asyncio.to_thread(self.get_version, group_name, ref)).version
        before: list[ApprovalStatus] = []

        def apply(current: ModelVersion | None) -> ModelVersion:
            version = existing_version(current, group_name, number)
            before.append(version.approval_status)
            return domain.change_approval(
                version, decision.status, by=decision.by, reason=decision.reason, now=self.clock()
            )

        written = await asyncio.to_thread(
            self.versions.update, version_key(group_name, number), apply
        )
        return written.doc, before[-1]

    async def _announce_decision(
        self,
        version: ModelVersion,
        previous: ApprovalStatus | None,
        decision: ApprovalDecision,
        cause: Envelope[Any] | None,
    ) -> None:
        changed = ModelApprovalChanged(
            model_package_group=version.model_package_group,
            version=version.version,
            approval_status=version.approval_status,
            previous_status=previous,
            changed_by=decision.by,
            reason=decision.reason,
        )
        await self._publish_approval(version, changed, cause)

    async def _announce_latest(self, version: ModelVersion, cause: Envelope[Any] | None) -> None:
        """Announce the version's latest decision, as it was first announced (or not)."""
        latest = version.approval_history[-1]
        changed = ModelApprovalChanged(
            model_package_group=version.model_package_group,
            version=version.version,
            approval_status=version.approval_status,
            previous_status=latest.previous_status,
            changed_by=latest.changed_by,
            reason=latest.reason,
        )
        await self._publish_approval(version, changed, cause)

    async def _publish_approval(
        self, version: ModelVersion, changed: ModelApprovalChanged, cause: Envelope[Any] | None
    ) -> None:
        """Publish, then mark the version announced unless a newer decision came meanwhile."""
        await self.publish(changed, cause)
        if version.approval_announced:
            return
        decisions = len(version.approval_history)
        group_name, number = version.model_package_group, version.version

        def announced(current: ModelVersion | None) -> ModelVersion:
            current = existing_version(current, group_name, number)
            if len(current.approval_history) != decisions:
                return current  # a newer decision: its own publish marks it
            return current.model_copy(update={"approval_announced": True})

        await asyncio.to_thread(self.versions.update, version_key(group_name, number), announced)

    async def announce_pending(self, older_than_s: float) -> None:
        """Announce every approval change written at least `older_than_s` ago and never
        published (its writer died between the write and the publish)."""
        for version in await asyncio.to_thread(self._unannounced):
            age_s = (self.clock() - version.approval_history[-1].changed_at).total_seconds()
            if age_s >= older_than_s:
                log.warning(
                    "announcing the approval of %s v%d: it was never published",
                    version.model_package_group,
                    version.version,
                )
                await self._announce_latest(version, None)

    def _unannounced(self) -> list[ModelVersion]:
        return [
            version
            for group in self.list_groups()
            for version in self.list_versions(group.name)
            if not version.approval_announced
        ]

    async def announce_forever(self) -> None:
        """At start every unannounced change (its writer is gone, or repeats the same event),
        then periodically those older than `announce_after_s`."""
        older_than_s = 0.0
        while True:
            try:
                await self.announce_pending(older_than_s)
            except Exception as error:  # the next pass tries again
                log.warning("announcing pending approval changes failed: %r", error)
            older_than_s = self.config.announce_after_s
            await asyncio.sleep(self.config.announce_interval_s)
