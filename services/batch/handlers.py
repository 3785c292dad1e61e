"""The batch service layer: create, describe, list and stop jobs; plan them.

`TransformJobRequested` (HTTP or straight on the bus) is planned into shard documents, then one
`TransformShardRequested` per unfinished shard goes to the worker pool; the `Assembler`
(`assembler.py`) counts their completions in and ends the job. The same request again resumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Literal

from cairn.auth import Principal
from cairn.contracts.batch_events import (
    TransformJobFailed,
    TransformJobRequested,
    TransformJobStarted,
    TransformJobStopped,
    TransformShardRequested,
)
from cairn.contracts.envelope import Envelope, utc_now
from cairn.documents import DocumentStore, Versioned
from cairn.errors import (
    CairnError,
    Conflict,
    InvalidInput,
    NotFound,
    PreconditionFailed,
)
from cairn.ports import Platform
from cairn.store.base import ObjectStore

from services.batch.assembler import Assembler
from services.batch.config import BatchSettings
from services.batch.domain import (
    JOBS_PREFIX,
    TERMINAL,
    Shard,
    TransformJob,
    job_key,
    request_fingerprint,
    shard_key,
)
from services.batch.inputs import list_inputs
from services.batch.planning import (
    EndpointNotFound,
    ModelNotFound,
    check_endpoint,
    plan_shards,
    resolve_model,
)
from services.batch.validation import Plan, check_invoke, checked

log = logging.getLogger("cairn.batch")

CREATE_ACTION = "transform_job.create"
STOP_ACTION = "transform_job.stop"
MB = 1024 * 1024
RefusalCode = Literal["invalid_input", "model_not_found", "endpoint_not_found", "forbidden"]


@dataclass(frozen=True)
class Accepted:
    job: TransformJob
    envelope: Envelope[Any]
    resumed: bool


class BatchHandlers:
    """Transform jobs with CreateTransformJob semantics, plus resume and per-record errors."""

    def __init__(self, store: ObjectStore, settings: BatchSettings, platform: Platform) -> None:
        self.store = store
        self.settings = settings
        self.platform = platform
        self.assembler = Assembler(store, platform)
        self.jobs: DocumentStore[TransformJob] = DocumentStore(store, TransformJob, JOBS_PREFIX)
        self.shards: DocumentStore[Shard] = DocumentStore(store, Shard, JOBS_PREFIX)

    # HTTP ------------------------------------------------------------------------------------

    async def create(self, request: TransformJobRequested, principal: Principal) -> Accepted:
        """Check everything a user can get wrong, then store the job and publish the request.

        Raises:
            InvalidInput: a bad field (named), or an input location holding nothing.
            Forbidden: scoring against an endpoint the principal may not invoke (403).
            ModelNotFound: the model version is not registered.
            EndpointNotFound: the endpoint does not exist.
            Conflict: the name belongs to a different or completed job.
        """
        plan = checked(request, self.store)
        if request.endpoint_name is not None:
            check_invoke(principal, request.endpoint_name)
            await asyncio.to_thread(check_endpoint, self.store, request.endpoint_name)
        else:
            assert request.model_package_group is not None and request.model_version is not None
            await asyncio.to_thread(
                resolve_model,
                self.store,
                request.model_package_group,
                request.model_version,
                plan.content_type,
            )
        await asyncio.to_thread(list_inputs, self.store, plan.input_location, plan.output_prefix)
        fingerprint = request_fingerprint(request)
        existing = await asyncio.to_thread(self.jobs.get_or_none, job_key(request.job_name))
        if existing is None:
            job = TransformJob(
                job_name=request.job_name, request=request, request_sha256=fingerprint
            )
            try:
                await asyncio.to_thread(self.jobs.create, job_key(request.job_name), job)
            except PreconditionFailed:
                raise Conflict(f"transform job {request.job_name!r} already exists") from None
        else:
            self._check_resumable(existing.doc, fingerprint)
            job = await asyncio.to_thread(self._reopen, request.job_name)
        envelope = await self.platform.publish(request)
        return Accepted(job, envelope, resumed=existing is not None)

    def _reopen(self, job_name: str) -> TransformJob:
        """A stopped or failed job asked for again is Pending until the planner resumes it, so
        a waiter (`--wait`) does not take the last attempt's end for this one's."""

        def reopened(current: TransformJob | None) -> TransformJob:
            assert current is not None, "job documents are never deleted"
            if current.status not in ("Stopped", "Failed"):
                return current
            update = {"status": "Pending", "ended_at": None}
            return current.model_copy(
                update=update | {"failure_reason": None, "failure_code": None}
            )

        return self.jobs.update(job_key(job_name), reopened).doc

    @staticmethod
    def _check_resumable(job: TransformJob, fingerprint: str) -> None:
        if job.request_sha256 != fingerprint:
            raise Conflict(
                f"transform job {job.job_name!r} exists with a different request; "
                "only the same request (failure limits aside) resumes it"
            )
        if job.status == "Completed":
            raise Conflict(f"transform job {job.job_name!r} already completed")

    async def describe(self, job_name: str) -> TransformJob:
        found = await asyncio.to_thread(self.jobs.get_or_none, job_key(job_name))
        if found is None:
            raise NotFound(f"no transform job {job_name!r}")
        return found.doc

    async def list_jobs(self) -> list[TransformJob]:
        return await asyncio.to_thread(self.jobs.top_level)

    async def stop(self, job_name: str) -> TransformJob:
        """Stop a running job: workers leave its remaining shards; a re-request resumes it."""
        await self.describe(job_name)

        def stopped(current: TransformJob | None) -> TransformJob:
            assert current is not None
            if current.status in TERMINAL:
                return current
            return current.model_copy(update={"status": "Stopped", "ended_at": utc_now()})

        job = (await asyncio.to_thread(self.jobs.update, job_key(job_name), stopped)).doc
        if job.status == "Stopped":
            event = TransformJobStopped(
                job_name=job_name, shards_done=len(job.done), shards_total=job.shards_total
            )
            await self.platform.publish(event, correlation_id=job.correlation_id)
        return job

    # Planner ---------------------------------------------------------------------------------

    async def on_requested(self, envelope: Envelope[TransformJobRequested]) -> None:
        """Plan the job (once), mark it in progress and publish its unfinished shards."""
        request = envelope.data
        try:
            plan = checked(request, self.store)
        except InvalidInput as error:
            await self._refuse(envelope, error.message, "invalid_input")
            return
        existing = await asyncio.to_thread(self.jobs.get_or_none, job_key(request.job_name))
        if existing is not None and existing.doc.request_sha256 != request_fingerprint(request):
            await self.platform.dead_letter(envelope, "the job name is taken by another request")
            return
        if existing is not None and existing.doc.status == "Completed":
            log.info("transform job %s is already complete", request.job_name)
            return
        if request.endpoint_name is not None and not await self._may_invoke(envelope, existing):
            return
        try:
            job = await asyncio.to_thread(self._start, envelope, plan, existing)
        except (ModelNotFound, EndpointNotFound, InvalidInput) as error:
            await self._refuse(envelope, error.message, _refusal_code(error))
            return
        if existing is None:
            await self._audit_created(envelope)
        await self._publish_shards(envelope, job)

    def _start(
        self,
        envelope: Envelope[TransformJobRequested],
        plan: Plan,
        existing: Versioned[TransformJob] | None,
    ) -> TransformJob:
        request = envelope.data
        job = existing.doc if existing is not None else None
        if job is None or not job.planned:
            model_uri = self._model_uri(request, plan.content_type)
            files = list_inputs(self.store, plan.input_location, plan.output_prefix)
            shard_mb = request.shard_size_mb or self.settings.shard_size_mb
            shards = plan_shards(self.store, request.job_name, plan, files, int(shard_mb * MB))
            for shard in shards:  # the plan is deterministic: a replanner writes the same docs
                with contextlib.suppress(PreconditionFailed):
                    self.shards.create(shard_key(request.job_name, shard.index), shard)
            planned = {"model_uri": model_uri, "input_files": files, "shards_total": len(shards)}
        else:
            planned = {}
        event_id = str(envelope.event_id)

        def begin(current: TransformJob | None) -> TransformJob:
            base = current or TransformJob(
                job_name=request.job_name,
                request=request,
                request_sha256=request_fingerprint(request),
            )
            again = base.last_event_id == event_id and base.status == "InProgress"
            return base.model_copy(
                update={
                    **planned,
                    "planned": True,
                    "request": request,
                    "status": "InProgress",
                    "attempt": base.attempt if again else base.attempt + 1,
                    "last_event_id": event_id,
                    "correlation_id": envelope.correlation_id,
                    "started_at": base.started_at if again and base.started_at else utc_now(),
                    "ended_at": None,
                    "failure_reason": None,
                    "failure_code": None,
                }
            )

        return self.jobs.update(job_key(request.job_name), begin).doc

    def _model_uri(self, request: TransformJobRequested, content_type: str) -> str | None:
        """The package a worker loads, or None when the job scores against an endpoint."""
        if request.endpoint_name is not None:
            check_endpoint(self.store, request.endpoint_name)
            return None
        assert request.model_package_group is not None and request.model_version is not None
        return resolve_model(
            self.store, request.model_package_group, request.model_version, content_type
        )

    async def _may_invoke(
        self,
        envelope: Envelope[TransformJobRequested],
        existing: Versioned[TransformJob] | None,
    ) -> bool:
        """A request on the bus against an endpoint needs its signer's `invoke` on it, as over
        HTTP; the batch service's own requests were checked when they came in over HTTP."""
        request = envelope.data
        assert request.endpoint_name is not None
        who: Principal | str = f"unverified:{envelope.source}"
        try:
            who = await self.platform.principal_of(envelope)
            if who.kind != "service":
                check_invoke(who, request.endpoint_name)
            return True
        except CairnError as error:
            reason = error.message
        await self.platform.audit(
            action=CREATE_ACTION,
            resource=f"/transform-jobs/{request.job_name}",
            principal=who,
            outcome="denied",
            correlation_id=envelope.correlation_id,
            details={"event_id": str(envelope.event_id), "via": "bus", "reason": reason},
        )
        if existing is None:
            await self._refuse(envelope, reason, "forbidden")
        else:  # someone else's job: announce the refusal, leave the job as it is
            event = TransformJobFailed(
                job_name=request.job_name, reason=reason, failure_code="forbidden"
            )
            await self.platform.publish(event, envelope)
        await self.platform.dead_letter(envelope, reason, error="Forbidden")
        return False

    async def _publish_shards(
        self, envelope: Envelope[TransformJobRequested], job: TransformJob
    ) -> None:
        shards = await asyncio.to_thread(self.shards.list, f"{job.job_name}/shards/")
        pending = [s.doc for s in shards if s.doc.status != "Done"]
        started = TransformJobStarted(
            job_name=job.job_name,
            attempt=job.attempt,
            input_files=len(job.input_files),
            shards_total=job.shards_total,
            shards_pending=len(pending),
        )
        await self.platform.publish(started, envelope)
        for shard in pending:
            work = TransformShardRequested(
                shard_id=f"{job.job_name}/{shard.index}",
                job_name=job.job_name,
                shard_index=shard.index,
                attempt=job.attempt,
            )
            await self.platform.publish(work, envelope)
        if not pending:  # every shard was done before (a crash between the last and assembly)
            await self.assembler.maybe_finish(job, envelope)

    async def _refuse(self, envelope: Envelope[Any], reason: str, code: RefusalCode) -> None:
        name = envelope.data.job_name
        log.warning("refusing transform request %s: %s", envelope.event_id, reason)

        def failed(current: TransformJob | None) -> TransformJob:
            base = current or TransformJob(
                job_name=name,
                request=envelope.data,
                request_sha256=request_fingerprint(envelope.data),
            )
            return base.model_copy(
                update={
                    "status": "Failed",
                    "failure_reason": reason,
                    "failure_code": code,
                    "ended_at": utc_now(),
                }
            )

        await asyncio.to_thread(self.jobs.update, job_key(name), failed)
        event = TransformJobFailed(job_name=name, reason=reason, failure_code=code)
        await self.platform.publish(event, envelope)
        if code == "invalid_input":
            await self.platform.dead_letter(envelope, reason, error="InvalidInput")

    async def _audit_created(self, envelope: Envelope[TransformJobRequested]) -> None:
        principal: Principal | str
        try:
            principal = await self.platform.principal_of(envelope)
        except CairnError:
            principal = f"unverified:{envelope.source}"
        await self.platform.audit(
            action=CREATE_ACTION,
            resource=f"/transform-jobs/{envelope.data.job_name}",
            principal=principal,
            correlation_id=envelope.correlation_id,
            details={"event_id": str(envelope.event_id), "via": "bus"},
        )


def _refusal_code(error: CairnError) -> RefusalCode:
    if isinstance(error, ModelNotFound):
        return "model_not_found"
    if isinstance(error, EndpointNotFound):
        return "endpoint_not_found"
    return "invalid_input"
