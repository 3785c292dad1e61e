"""The trainer's service layer: create, describe and list jobs; handle `TrainingJobRequested`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cairn.auth import Principal
from cairn.contracts.envelope import Envelope, utc_now
from cairn.contracts.events import TrainingJobFailed, TrainingJobRequested
from cairn.contracts.training_events import GpuTrainingJobRequested
from cairn.contracts.tuner_events import TrainingJobStopRequested
from cairn.documents import DocumentStore, Versioned
from cairn.errors import (
    CairnError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    ObjectNotFound,
    PreconditionFailed,
)
from cairn.ports import Platform
from cairn.store.base import ObjectStore

from services.trainer.config import TrainerSettings
from services.trainer.domain import (
    JOBS_PREFIX,
    REJECTIONS_PREFIX,
    JobRejection,
    TrainingJob,
    claimed,
    decide,
    job_key,
    logs_key,
    request_fingerprint,
    request_stop,
    requeue_due,
    stopped_event,
)
from services.trainer.gpu import gpu_status
from services.trainer.locations import approval_allowed, confined_request
from services.trainer.requests import check_scaling, claim_checkpoint_prefix
from services.trainer.runner import JobRunner

log = logging.getLogger(__name__)

CREATE_ACTION = "training_job.create"
STOP_ACTION = "training_job.stop"


@dataclass(frozen=True)
class CreatedJob:
    """A job created over HTTP and the envelope of the request published for it."""

    job: TrainingJob
    envelope: Envelope[Any]


class TrainerHandlers:
    """Training jobs with CreateTrainingJob semantics: one job per name, trained once."""

    def __init__(self, store: ObjectStore, settings: TrainerSettings, platform: Platform) -> None:
        self.store = store
        self.settings = settings
        self.platform = platform
        self.jobs: DocumentStore[TrainingJob] = DocumentStore(store, TrainingJob, JOBS_PREFIX)
        self.rejections: DocumentStore[JobRejection] = DocumentStore(
            store, JobRejection, REJECTIONS_PREFIX
        )
        self.runner = JobRunner(store, settings, self.jobs, platform.publish)

    async def create(self, request: TrainingJobRequested) -> CreatedJob:
        """A Pending job document, then the request on the bus.

        The same request again while no worker has claimed the job publishes it again: the
        first attempt may have died between the write and the publish. Workers train the job
        once whichever copy they read first (`decide`).

        Raises:
            InvalidInput: a location the request may not name (the field is in the message).
            Conflict: the job name is taken by another request, or its job has started.
        """
        request = await self._checked(request)
        job = TrainingJob(
            job_name=request.job_name, request=request, request_sha256=request_fingerprint(request)
        )
        try:
            await asyncio.to_thread(self.jobs.create, job_key(request.job_name), job)
        except PreconditionFailed:
            job = await self._unclaimed(request.job_name, job.request_sha256)
        return CreatedJob(job, await self.platform.publish(request))

    async def _checked(self, request: TrainingJobRequested) -> TrainingJobRequested:
        """The request with its locations confined and its scale-out asks checked.

        Raises:
            InvalidInput: a field the trainer cannot honour (the message names it).
        """
        request = confined_request(request, self.store)
        check_scaling(request, self.settings)
        await asyncio.to_thread(claim_checkpoint_prefix, request, self.store)
        return request

    def runs_gpu_jobs_here(self) -> bool:
        """Whether this worker may train a GPU job itself (a GPU-pool member or a usable GPU)."""
        if self.settings.device == "gpu":
            return True
        return self.settings.device == "auto" and gpu_status()[0]

    async def _unclaimed(self, job_name: str, fingerprint: str) -> TrainingJob:
        """The existing job when it holds this very request and no worker has claimed it."""
        found = await asyncio.to_thread(self.jobs.get_or_none, job_key(job_name))
        if found is None or found.doc.request_sha256 != fingerprint:
            raise Conflict(f"training job {job_name!r} already exists")
        if found.doc.status != "Pending":
            raise Conflict(f"training job {job_name!r} already exists ({found.doc.status})")
        return found.doc

    async def requeue_unclaimed(self) -> None:
        """Publish again the request of every job left Pending past `requeue_after_s`.

        A trainer killed between writing a job and publishing its request leaves the job
        Pending with nothing on the bus. A conditional stamp (`requeued_at`) elects one
        replica per period to publish; a crash after the stamp only delays the next try.
        """
        grace = timedelta(seconds=self.settings.requeue_after_s)
        for job in await self.list_jobs():
            if not requeue_due(job, utc_now(), grace):
                continue
            if await asyncio.to_thread(self._stamp_requeued, job.job_name, grace):
                log.warning("job %s is still Pending: publishing its request again", job.job_name)
                await self.platform.publish(job.request)

    def _stamp_requeued(self, job_name: str, grace: timedelta) -> bool:
        """Stamp `requeued_at` if the job is still due; True when this call stamped it."""
        stamped: list[bool] = []

        def stamp(current: TrainingJob | None) -> TrainingJob:
            assert current is not None, "job documents are never deleted"
            now = utc_now()
            stamped.append(requeue_due(current, now, grace))
            return current.model_copy(update={"requeued_at": now}) if stamped[-1] else current

        self.jobs.update(job_key(job_name), stamp)
        return stamped[-1]

    async def requeue_forever(self) -> None:
        while True:
            try:
                await self.requeue_unclaimed()
            except Exception as error:  # the next pass tries again
                log.warning("requeue of pending training jobs failed: %r", error)
            await asyncio.sleep(self.settings.requeue_interval_s)

    async def describe(self, job_name: str) -> TrainingJob:
        versioned = await asyncio.to_thread(self.jobs.get_or_none, job_key(job_name))
        if versioned is None:
            raise NotFound(f"no training job {job_name!r}")
        return versioned.doc

    async def logs(self, job_name: str, attempt: int | None = None) -> str:
        """One attempt's log so far (default: the latest; empty before a worker wrote any)."""
        job = await self.describe(job_name)
        chosen = job.attempt if attempt is None else attempt
        if attempt is not None and not 1 <= attempt <= max(job.attempt, 1):
            raise NotFound(f"training job {job_name!r} has no attempt {attempt}")
        try:
            text = await asyncio.to_thread(self.store.get_bytes, logs_key(job_name, chosen))
        except ObjectNotFound:
            return ""
        return text.decode(errors="replace")

    async def stop(self, request: TrainingJobStopRequested) -> TrainingJob:
        """StopTrainingJob: a Pending job is Stopped now, a running one within a poll interval.

        Raises:
            NotFound: no such job.
            Conflict: the job already Completed or Failed.
        """
        key = job_key(request.job_name)
        stopped_while_pending = False

        def stopping(current: TrainingJob | None) -> TrainingJob:
            nonlocal stopped_while_pending
            if current is None:
                raise NotFound(f"no training job {request.job_name!r}")
            stopped_while_pending = current.status == "Pending"
            return request_stop(
                current,
                reason=request.reason,
                keep_partial_model=request.keep_partial_model,
                now=utc_now(),
            )

        written = (await asyncio.to_thread(self.jobs.update, key, stopping)).doc
        signal = self.runner.active.get(request.job_name)
        if signal is not None:  # trained in this process: no need to wait for the poll
            signal.request(written.keep_partial_model)
        if stopped_while_pending:  # no worker will ever report it
            await self.platform.publish(stopped_event(written))
        return written

    async def on_stop_requested(self, envelope: Envelope[TrainingJobStopRequested]) -> None:
        """A stop request from the bus (the tuner's pruner): stopped and audited like the route."""
        try:
            job = await self.stop(envelope.data)
        except (NotFound, Conflict) as error:
            log.info("stop of %s: %s", envelope.data.job_name, error.message)
            return
        principal: Principal | str
        try:
            principal = await self.platform.principal_of(envelope)
        except CairnError:
            principal = f"unverified:{envelope.source}"
        await self.platform.audit(
            action=STOP_ACTION,
            resource=f"/training-jobs/{job.job_name}/stop",
            principal=principal,
            correlation_id=envelope.correlation_id,
            details={"event_id": str(envelope.event_id), "via": "bus", "status": job.status},
        )

    async def list_jobs(self) -> list[TrainingJob]:
        return await asyncio.to_thread(self.jobs.top_level)

    async def on_requested(self, envelope: Envelope[TrainingJobRequested]) -> None:
        """Claim the job and train it, unless it is done, taken by another request or busy."""
        try:
            request = await self._checked(envelope.data)
            approval_allowed(request, await self.platform.principal_of(envelope))
        except (InvalidInput, Forbidden) as error:
            await self._refuse(envelope, error)
            return
        envelope = envelope.model_copy(update={"data": request})
        resources = request.resources
        gpu_only = resources.device == "gpu" and not resources.allow_cpu_fallback
        if gpu_only and not self.runs_gpu_jobs_here():
            await self._to_gpu_pool(envelope)
            return
        mine = await self._claim(envelope)
        if mine is not None:
            await self.runner.run(mine, envelope)

    async def _to_gpu_pool(self, envelope: Envelope[TrainingJobRequested]) -> None:
        """Hand a GPU job to the GPU pool's topic; a redelivery hands it on again, harmlessly."""
        request = envelope.data
        log.info("job %s needs a GPU: handing it to the GPU pool", request.job_name)
        await self.platform.publish(
            GpuTrainingJobRequested(job_name=request.job_name, request=request), envelope
        )

    async def on_gpu_requested(self, envelope: Envelope[GpuTrainingJobRequested]) -> None:
        """A GPU-pool worker trains a job handed on by a worker without a GPU."""
        request = envelope.data.request
        try:
            request = await self._checked(request)
        except InvalidInput as error:
            log.warning("refusing GPU job %s: %s", request.job_name, error.message)
            await self.platform.dead_letter(envelope, error.message, error=type(error).__name__)
            return
        forwarded = Envelope[TrainingJobRequested].model_validate(
            envelope.model_dump() | {"type": "TrainingJobRequested", "data": request}
        )
        mine = await self._claim(forwarded)
        if mine is not None:
            await self.runner.run(mine, forwarded)

    async def _refuse(
        self, envelope: Envelope[TrainingJobRequested], error: InvalidInput | Forbidden
    ) -> None:
        """A request naming a location it may not: dead-lettered, and failed if no job has the name.

        A job that already holds the name (the request may be an attempt to reuse it) is left
        alone and hears nothing about it.
        """
        name = envelope.data.job_name
        log.warning("refusing training request %s: %s", envelope.event_id, error.message)
        if await asyncio.to_thread(self.jobs.get_or_none, job_key(name)) is None:
            failed = TrainingJobFailed(
                job_name=name, reason=error.message, failure_code="invalid_input"
            )
            await self.platform.publish(failed, envelope)
        await self.platform.dead_letter(envelope, error.message, error=type(error).__name__)

    async def _claim(
        self, envelope: Envelope[TrainingJobRequested]
    ) -> Versioned[TrainingJob] | None:
        """The job claimed for a new attempt by this worker, or None when there is nothing to do."""
        request = envelope.data
        fingerprint = request_fingerprint(request)
        while True:
            current = await asyncio.to_thread(self.jobs.get_or_none, job_key(request.job_name))
            job = current.doc if current else None
            decision = decide(
                job,
                fingerprint=fingerprint,
                event_id=str(envelope.event_id),
                worker_id=self.settings.worker_id,
                now=utc_now(),
                lease_s=self.settings.lease_s,
            )
            if decision == "wait":
                await asyncio.sleep(self.settings.heartbeat_s)
                continue
            if decision not in ("create", "claim"):
                await self._settled(decision, job, envelope, fingerprint)
                return None
            try:
                return await self._take(current, envelope, fingerprint)
            except PreconditionFailed:
                continue  # another worker moved first: look again

    async def _take(
        self,
        current: Versioned[TrainingJob] | None,
        envelope: Envelope[TrainingJobRequested],
        fingerprint: str,
    ) -> Versioned[TrainingJob]:
        """Write the job as this worker's new attempt, conditional on the version just read."""
        request = envelope.data
        key = job_key(request.job_name)
        new = claimed(
            current.doc
            if current
            else TrainingJob(
                job_name=request.job_name, request=request, request_sha256=fingerprint
            ),
            event_id=str(envelope.event_id),
            worker_id=self.settings.worker_id,
            now=utc_now(),
            correlation_id=envelope.correlation_id,
        )
        if current is not None:
            return await asyncio.to_thread(self.jobs.replace, key, new, current.etag)
        mine = await asyncio.to_thread(self.jobs.create, key, new)
        await self._audit_created(envelope)
        return mine

    async def _audit_created(self, envelope: Envelope[TrainingJobRequested]) -> None:
        """A job created from the bus (not through the audited HTTP route) names its requester."""
        principal: Principal | str
        try:
            principal = await self.platform.principal_of(envelope)
        except CairnError:  # authentication is off and the request is unsigned
            principal = f"unverified:{envelope.source}"
        await self.platform.audit(
            action=CREATE_ACTION,
            resource=f"/training-jobs/{envelope.data.job_name}",
            principal=principal,
            correlation_id=envelope.correlation_id,
            details={"event_id": str(envelope.event_id), "via": "bus"},
        )

    async def _settled(
        self,
        decision: str,
        job: TrainingJob | None,
        envelope: Envelope[TrainingJobRequested],
        fingerprint: str,
    ) -> None:
        """A delivery that trains nothing: a duplicate, a lost outcome or a taken name."""
        if decision == "reject":
            await self._reject(envelope.data, str(envelope.event_id), fingerprint)
        elif decision == "republish" and job is not None:
            await self.runner.publish_outcome(job, envelope)
        else:
            log.info(
                "job %s is already %s; nothing to do", envelope.data.job_name, job and job.status
            )

    async def _reject(self, request: TrainingJobRequested, event_id: str, fingerprint: str) -> None:
        reason = (
            f"job name {request.job_name!r} is taken by a different request; "
            "the existing job is left as it is"
        )
        log.warning("rejecting request %s: %s", event_id, reason)
        rejection = JobRejection(
            job_name=request.job_name, event_id=event_id, request_sha256=fingerprint, reason=reason
        )
        # A redelivery of this very request finds its rejection already recorded.
        with contextlib.suppress(PreconditionFailed):
            await asyncio.to_thread(
                self.rejections.create, f"{request.job_name}/{event_id}.json", rejection
            )
