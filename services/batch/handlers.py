"""The batch service layer: create, describe, list and stop jobs; plan them; assemble them.

`TransformJobRequested` (HTTP or straight on the bus) is planned into shard documents, then one
`TransformShardRequested` per unfinished shard goes to the worker pool. Every
`TransformShardCompleted` adds its counts to the job; when all shards are done the outputs are
assembled and `TransformJobCompleted` published. The same request again resumes the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Literal

from cairn.auth import Principal
from cairn.contracts.batch_events import (
    TransformJobCompleted,
    TransformJobFailed,
    TransformJobRequested,
    TransformJobStarted,
    TransformJobStopped,
    TransformShardCompleted,
    TransformShardRequested,
)
from cairn.contracts.envelope import Envelope, utc_now
from cairn.documents import DocumentStore, Versioned
from cairn.errors import CairnError, Conflict, InvalidInput, NotFound, PreconditionFailed
from cairn.ports import Platform
from cairn.store.base import ObjectStore

from services.batch.config import BatchSettings
from services.batch.domain import (
    JOBS_PREFIX,
    TERMINAL,
    Shard,
    ShardCounts,
    TransformJob,
    job_key,
    request_fingerprint,
    shard_key,
    too_many_failures,
)
from services.batch.inputs import LocalCopies, list_inputs
from services.batch.planning import ModelNotFound, assemble, plan_shards, resolve_model
from services.batch.validation import Plan, checked

log = logging.getLogger("cairn.batch")

CREATE_ACTION = "transform_job.create"
STOP_ACTION = "transform_job.stop"
MB = 1024 * 1024
RefusalCode = Literal["invalid_input", "model_not_found"]


@dataclass(frozen=True)
class Accepted:
    job: TransformJob
    envelope: Envelope[Any]
    resumed: bool


class BatchHandlers:
    """Transform jobs with CreateTransformJob semantics, plus resume and per-record errors."""

    def __init__(
        self, store: ObjectStore, settings: BatchSettings, platform: Platform, copies: LocalCopies
    ) -> None:
        self.store = store
        self.settings = settings
        self.platform = platform
        self.copies = copies
        self.jobs: DocumentStore[TransformJob] = DocumentStore(store, TransformJob, JOBS_PREFIX)
        self.shards: DocumentStore[Shard] = DocumentStore(store, Shard, JOBS_PREFIX)

    # HTTP ------------------------------------------------------------------------------------

    async def create(self, request: TransformJobRequested) -> Accepted:
        """Check everything a user can get wrong, then store the job and publish the request.

        Raises:
            InvalidInput: a bad field (named), or an input location holding nothing.
            ModelNotFound: the model version is not registered.
            Conflict: the name belongs to a different or completed job.
        """
        plan = checked(request, self.store)
        assert request.model_package_group is not None and request.model_version is not None
        await asyncio.to_thread(
            resolve_model, self.store, request.model_package_group, request.model_version
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
            job = existing.doc
            self._check_resumable(job, fingerprint)
        envelope = await self.platform.publish(request)
        return Accepted(job, envelope, resumed=existing is not None)

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
        return await asyncio.to_thread(self._list_jobs)

    def _list_jobs(self) -> list[TransformJob]:
        found = []
        for info in self.store.list(JOBS_PREFIX + "/", recursive=False):
            if not info.key.endswith(".json"):
                continue
            try:
                versioned = self.jobs.get_or_none(info.key[len(JOBS_PREFIX) + 1 :])
            except CairnError as error:
                log.warning("skipping unreadable job document %s: %s", info.key, error)
                continue
            if versioned is not None:
                found.append(versioned.doc)
        return found

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
        try:
            job = await asyncio.to_thread(self._start, envelope, plan, existing)
        except (ModelNotFound, InvalidInput) as error:
            code: RefusalCode = (
                "model_not_found" if isinstance(error, ModelNotFound) else "invalid_input"
            )
            await self._refuse(envelope, error.message, code)
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
            assert request.model_package_group is not None and request.model_version is not None
            group, version = request.model_package_group, request.model_version
            model_uri = resolve_model(self.store, group, version)
            files = list_inputs(self.store, plan.input_location, plan.output_prefix)
            shard_mb = request.shard_size_mb or self.settings.shard_size_mb
            shards = plan_shards(self.copies, request.job_name, plan, files, int(shard_mb * MB))
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
            await self._maybe_finish(job, envelope)

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

    # Assembler -------------------------------------------------------------------------------

    async def on_shard_completed(self, envelope: Envelope[TransformShardCompleted]) -> None:
        """Count the shard in; fail past the failure limit; assemble when every shard is done."""
        done = envelope.data
        counts = ShardCounts(
            records_in=done.records_in,
            records_out=done.records_out,
            records_failed=done.records_failed,
        )

        def counted(current: TransformJob | None) -> TransformJob:
            if current is None:
                raise NotFound(f"no transform job {done.job_name!r}")
            if current.status == "Completed":
                return current
            return current.model_copy(
                update={"done": current.done | {str(done.shard_index): counts}}
            )

        try:
            job = (await asyncio.to_thread(self.jobs.update, job_key(done.job_name), counted)).doc
        except NotFound:
            await self.platform.dead_letter(envelope, "no such transform job")
            return
        await self._maybe_finish(job, envelope)

    async def _maybe_finish(self, job: TransformJob, cause: Envelope[Any]) -> None:
        if job.status != "InProgress":
            return
        if too_many_failures(job, final=False):
            await self._fail_for_records(job, cause)
            return
        if len(job.done) < job.shards_total:
            return
        if too_many_failures(job, final=True):
            await self._fail_for_records(job, cause)
            return
        plan = checked(job.request, self.store)
        stored = await asyncio.to_thread(self.shards.list, f"{job.job_name}/shards/")
        shards = [versioned.doc for versioned in stored]
        manifest = await asyncio.to_thread(assemble, self.store, job, plan, shards)
        job = await self._end(job.job_name, "Completed", manifest_key=manifest)
        totals = job.totals()
        elapsed = (job.ended_at or utc_now()) - (job.started_at or job.created_at)
        event = TransformJobCompleted(
            job_name=job.job_name,
            output_path=plan.output_prefix,
            manifest_key=manifest,
            **totals.model_dump(),
            elapsed_s=elapsed.total_seconds(),
        )
        await self.platform.publish(event, cause)

    async def _fail_for_records(self, job: TransformJob, cause: Envelope[Any]) -> None:
        totals = job.totals()
        reason = (
            f"{totals.records_failed} records failed (of {totals.records_in} read), over the "
            f"limit; see {checked(job.request, self.store).output_prefix}/errors/"
        )
        await self._end(
            job.job_name, "Failed", failure_reason=reason, failure_code="too_many_failed_records"
        )
        event = TransformJobFailed(
            job_name=job.job_name,
            reason=reason,
            failure_code="too_many_failed_records",
            records_failed=totals.records_failed,
        )
        await self.platform.publish(event, cause)

    async def _end(self, job_name: str, status: str, **fields: Any) -> TransformJob:
        def ended(current: TransformJob | None) -> TransformJob:
            assert current is not None
            update = {"status": status, "ended_at": utc_now(), **fields}
            return current.model_copy(update=update)

        return (await asyncio.to_thread(self.jobs.update, job_key(job_name), ended)).doc
