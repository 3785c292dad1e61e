"""The processing-jobs service layer: create, describe, list, logs; run `ProcessingJobRequested`.

Same guarantees as training jobs: one job per name, run once; a worker killed mid-job leaves a
stale heartbeat and the redelivered request is taken over; a request written but never published
is published again by the requeue loop; a redelivery after the outcome republishes that outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any

from cairn.auth import Principal
from cairn.contracts.envelope import Envelope, utc_now
from cairn.contracts.events import DatasetRegistrationRequested
from cairn.contracts.processing_events import (
    ProcessingJobFailed,
    ProcessingJobRequested,
    ProcessingJobStarted,
)
from cairn.documents import DocumentStore, Versioned
from cairn.errors import (
    CairnError,
    Conflict,
    InvalidInput,
    NotFound,
    ObjectNotFound,
    PreconditionFailed,
)
from cairn.namespaces import confine, confine_channel
from cairn.ports import Platform
from cairn.store.base import ObjectStore

from services.trainer.config import TrainerSettings
from services.trainer.processing_domain import (
    PROCESSING_PREFIX,
    ProcessingFailure,
    ProcessingJob,
    ProcessingResult,
    claimed,
    decide,
    finished,
    job_key,
    logs_key,
    outcome_event,
    request_fingerprint,
    requeue_due,
)
from services.trainer.processing_exec import ProcessingContext, run_processing
from services.trainer.runner import JobLog

log = logging.getLogger(__name__)

CREATE_ACTION = "processing_job.create"
ABANDON_WAIT_S = 30
CODE_NAMESPACES = ("code/", "data/")


def confined(request: ProcessingJobRequested, store: ObjectStore) -> ProcessingJobRequested:
    """The request with every store location checked; InvalidInput names the field."""
    inputs = [
        item.model_copy(
            update={
                "source": confine_channel(item.source, field=f"inputs[{i}].source", store=store)
            }
        )
        for i, item in enumerate(request.inputs)
    ]
    outputs = []
    for i, output in enumerate(request.outputs):
        destination = output.destination
        if destination is not None:
            field = f"outputs[{i}].destination"
            destination = confine(destination, field=field, store=store)
            if not destination.startswith("outputs/"):
                raise InvalidInput(f"{field}: {destination!r} must lie under outputs/", field=field)
        outputs.append(output.model_copy(update={"destination": destination}))
    entry_point = request.entry_point
    if entry_point is not None:
        location, hash_, script = entry_point.partition("#")
        key = confine(location, field="entry_point", store=store)
        if not key.startswith(CODE_NAMESPACES) or ".." in script.split("/"):
            raise InvalidInput(
                f"entry_point: {entry_point!r} must be a key under code/ or data/",
                field="entry_point",
            )
        entry_point = f"{key}#{script}" if hash_ else key
    return request.model_copy(
        update={"inputs": inputs, "outputs": outputs, "entry_point": entry_point}
    )


class ProcessingLog(JobLog):
    """The training-job log, kept under the processing job's own attempt."""

    def __init__(self, store: ObjectStore, job_name: str, attempt: int) -> None:
        super().__init__(store, job_name, attempt)
        self.key = logs_key(job_name, attempt)


class ProcessingHandlers:
    """Processing jobs with CreateProcessingJob semantics, run on the trainer's workers."""

    def __init__(self, store: ObjectStore, settings: TrainerSettings, platform: Platform) -> None:
        self.store = store
        self.settings = settings
        self.platform = platform
        self.jobs: DocumentStore[ProcessingJob] = DocumentStore(
            store, ProcessingJob, PROCESSING_PREFIX
        )

    async def create(self, request: ProcessingJobRequested) -> tuple[ProcessingJob, Envelope[Any]]:
        """A Pending job document, then the request on the bus (again, while unclaimed).

        Raises:
            InvalidInput: a location the request may not name.
            Conflict: the name is taken by another request, or its job has started.
        """
        request = confined(request, self.store)
        job = ProcessingJob(
            job_name=request.job_name, request=request, request_sha256=request_fingerprint(request)
        )
        try:
            await asyncio.to_thread(self.jobs.create, job_key(request.job_name), job)
        except PreconditionFailed:
            found = await asyncio.to_thread(self.jobs.get_or_none, job_key(request.job_name))
            if found is None or found.doc.request_sha256 != job.request_sha256:
                raise Conflict(f"processing job {request.job_name!r} already exists") from None
            if found.doc.status != "Pending":
                raise Conflict(
                    f"processing job {request.job_name!r} already exists ({found.doc.status})"
                ) from None
            job = found.doc
        return job, await self.platform.publish(request)

    async def describe(self, job_name: str) -> ProcessingJob:
        found = await asyncio.to_thread(self.jobs.get_or_none, job_key(job_name))
        if found is None:
            raise NotFound(f"no processing job {job_name!r}")
        return found.doc

    async def list_jobs(self) -> list[ProcessingJob]:
        return await asyncio.to_thread(self.jobs.top_level)

    async def logs(self, job_name: str) -> str:
        """The latest attempt's log: the script's stdout and stderr (empty before it ran)."""
        job = await self.describe(job_name)
        try:
            text = await asyncio.to_thread(self.store.get_bytes, logs_key(job_name, job.attempt))
        except ObjectNotFound:
            return ""
        return text.decode(errors="replace")

    async def requeue_forever(self) -> None:
        """Publish again every job left Pending past `requeue_after_s` (one replica per period)."""
        grace = timedelta(seconds=self.settings.requeue_after_s)
        while True:
            try:
                for job in await self.list_jobs():
                    if requeue_due(job, utc_now(), grace) and await asyncio.to_thread(
                        self._stamp, job.job_name, grace
                    ):
                        log.warning("processing job %s is still Pending: requeued", job.job_name)
                        await self.platform.publish(job.request)
            except Exception as error:  # the next pass tries again
                log.warning("requeue of pending processing jobs failed: %r", error)
            await asyncio.sleep(self.settings.requeue_interval_s)

    def _stamp(self, job_name: str, grace: timedelta) -> bool:
        stamped: list[bool] = []

        def stamp(current: ProcessingJob | None) -> ProcessingJob:
            assert current is not None, "job documents are never deleted"
            stamped.append(requeue_due(current, utc_now(), grace))
            return current.model_copy(update={"requeued_at": utc_now()}) if stamped[-1] else current

        self.jobs.update(job_key(job_name), stamp)
        return stamped[-1]

    async def on_requested(self, envelope: Envelope[ProcessingJobRequested]) -> None:
        """Claim the job and run it, unless it is done, taken by another request or busy."""
        try:
            request = confined(envelope.data, self.store)
        except InvalidInput as error:
            await self._refuse(envelope, error)
            return
        envelope = envelope.model_copy(update={"data": request})
        mine = await self._claim(envelope)
        if mine is not None:
            await self._run(mine, envelope)

    async def _refuse(
        self, envelope: Envelope[ProcessingJobRequested], error: InvalidInput
    ) -> None:
        name = envelope.data.job_name
        log.warning("refusing processing request %s: %s", envelope.event_id, error.message)
        if await asyncio.to_thread(self.jobs.get_or_none, job_key(name)) is None:
            failed = ProcessingJobFailed(
                job_name=name, reason=error.message, failure_code="invalid_input"
            )
            await self.platform.publish(failed, envelope)
        await self.platform.dead_letter(envelope, error.message, error=type(error).__name__)

    async def _claim(
        self, envelope: Envelope[ProcessingJobRequested]
    ) -> Versioned[ProcessingJob] | None:
        request = envelope.data
        fingerprint = request_fingerprint(request)
        key = job_key(request.job_name)
        while True:
            current = await asyncio.to_thread(self.jobs.get_or_none, key)
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
            if decision == "republish" and job is not None:
                await self.platform.publish(outcome_event(job), envelope)
            if decision == "reject":
                log.warning("processing job %s: name taken by another request", request.job_name)
            if decision not in ("create", "claim"):
                return None
            base = job or ProcessingJob(
                job_name=request.job_name, request=request, request_sha256=fingerprint
            )
            new = claimed(
                base,
                event_id=str(envelope.event_id),
                worker_id=self.settings.worker_id,
                now=utc_now(),
                correlation_id=envelope.correlation_id,
            )
            try:
                if current is not None:
                    return await asyncio.to_thread(self.jobs.replace, key, new, current.etag)
                mine = await asyncio.to_thread(self.jobs.create, key, new)
            except PreconditionFailed:
                continue  # another worker moved first: look again
            await self._audit_created(envelope)
            return mine

    async def _audit_created(self, envelope: Envelope[ProcessingJobRequested]) -> None:
        principal: Principal | str
        try:
            principal = await self.platform.principal_of(envelope)
        except CairnError:
            principal = f"unverified:{envelope.source}"
        await self.platform.audit(
            action=CREATE_ACTION,
            resource=f"/processing-jobs/{envelope.data.job_name}",
            principal=principal,
            correlation_id=envelope.correlation_id,
            details={"event_id": str(envelope.event_id), "via": "bus"},
        )

    async def _run(self, versioned: Versioned[ProcessingJob], envelope: Envelope[Any]) -> None:
        job = versioned.doc
        job_log = ProcessingLog(self.store, job.job_name, job.attempt)
        job_log.write(f"attempt {job.attempt} on worker {self.settings.worker_id}")
        await self.platform.publish(
            ProcessingJobStarted(
                job_name=job.job_name, worker_id=self.settings.worker_id, attempt=job.attempt
            ),
            envelope,
        )
        heartbeat = asyncio.ensure_future(self._heartbeat(job, job_log))
        try:
            outcome = await self._execute(job, job_log)
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
        if isinstance(outcome, ProcessingResult):
            outcome = await self._register_outputs(outcome, job, envelope, job_log)

        def final(current: ProcessingJob | None) -> ProcessingJob:
            base = current if current is not None and current.attempt == job.attempt else job
            return finished(base, outcome)

        done = (await asyncio.to_thread(self.jobs.update, job_key(job.job_name), final)).doc
        job_log.write(
            f"job {done.status}" + (f": {done.failure_reason}" if done.failure_reason else "")
        )
        await asyncio.to_thread(job_log.flush)
        await self.platform.publish(outcome_event(done), envelope)

    async def _execute(
        self, job: ProcessingJob, job_log: ProcessingLog
    ) -> ProcessingResult | ProcessingFailure:
        deadline = time.monotonic() + job.request.max_runtime_s
        ctx = ProcessingContext(log=job_log.write, should_stop=lambda: time.monotonic() > deadline)
        work = asyncio.to_thread(
            run_processing, self.store, job.request, ctx, self.settings.scratch_dir
        )
        try:
            return await asyncio.wait_for(work, timeout=job.request.max_runtime_s + ABANDON_WAIT_S)
        except ProcessingFailure as failure:
            return failure
        except TimeoutError:
            return ProcessingFailure("runtime_exceeded", "the job did not end after its runtime")
        except Exception as error:
            log.exception("processing job %s failed unexpectedly", job.job_name)
            return ProcessingFailure("internal", f"{type(error).__name__}: {error}")

    async def _register_outputs(
        self,
        result: ProcessingResult,
        job: ProcessingJob,
        envelope: Envelope[Any],
        job_log: ProcessingLog,
    ) -> ProcessingResult:
        """Ask the ingest service to register outputs as dataset versions (it dedupes content)."""
        for prefix, dataset in result.registrations:
            await self.platform.publish(
                DatasetRegistrationRequested(
                    dataset_name=dataset.dataset_name, source_uri=prefix, format=dataset.format
                ),
                envelope,
            )
            job_log.write(f"requested registration of {prefix} as dataset {dataset.dataset_name}")
        return result

    async def _heartbeat(self, job: ProcessingJob, job_log: ProcessingLog) -> None:
        """Keep the job's lease and flush its log while it runs."""
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)

            def beat(current: ProcessingJob | None) -> ProcessingJob:
                base = current or job
                if base.worker_id != self.settings.worker_id or base.status != "InProgress":
                    return base
                return base.model_copy(update={"heartbeat_at": utc_now()})

            try:
                await asyncio.to_thread(self.jobs.update, job_key(job.job_name), beat)
                await asyncio.to_thread(job_log.flush)
            except Exception as error:  # a missed beat is retried on the next one
                log.warning("heartbeat of %s failed: %r", job.job_name, error)
