"""The training-job handler: claim the job, train off the event loop, heartbeat, report once."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from cairn.contracts.envelope import Envelope, utc_now
from cairn.contracts.events import (
    TrainingJobCompleted,
    TrainingJobProgressed,
    TrainingJobRequested,
    TrainingJobStarted,
)
from cairn.documents import DocumentStore, Versioned
from cairn.errors import Conflict, PreconditionFailed
from cairn.store.base import ObjectStore
from pydantic import BaseModel

from services.trainer.algorithms import TrainingContext
from services.trainer.config import TrainerSettings
from services.trainer.domain import (
    JOBS_PREFIX,
    REJECTIONS_PREFIX,
    JobFailure,
    JobRejection,
    TrainingJob,
    claimed,
    decide,
    failed_event,
    job_key,
    logs_key,
    package_prefix_for,
    request_fingerprint,
)
from services.trainer.execution import JobResult, run_job
from services.trainer.gpu import gpu_status

log = logging.getLogger(__name__)

PROGRESS_POLL_S = 0.25

Publish = Callable[[BaseModel, Envelope[Any]], Awaitable[Any]]


class JobLog:
    """Timestamped job log lines, rewritten whole to the store (object stores do not append)."""

    def __init__(self, store: ObjectStore, job_name: str) -> None:
        self.store = store
        self.key = logs_key(job_name)
        self._lines: list[str] = []
        self._lock = threading.Lock()

    def write(self, line: str) -> None:
        with self._lock:
            self._lines.append(f"{utc_now().isoformat(timespec='milliseconds')} {line}")

    def flush(self) -> None:
        with self._lock:
            text = "\n".join(self._lines) + "\n"
        self.store.put_bytes(self.key, text.encode(), content_type="text/plain")


class TrainerHandlers:
    """Handles `TrainingJobRequested` with CreateTrainingJob semantics."""

    def __init__(self, store: ObjectStore, settings: TrainerSettings, publish: Publish) -> None:
        self.store = store
        self.settings = settings
        self.publish = publish
        self.jobs: DocumentStore[TrainingJob] = DocumentStore(store, TrainingJob, JOBS_PREFIX)
        self.rejections: DocumentStore[JobRejection] = DocumentStore(
            store, JobRejection, REJECTIONS_PREFIX
        )

    def create_pending(self, request: TrainingJobRequested) -> TrainingJob:
        """The HTTP API's create: a Pending job doc, or Conflict when the name is taken."""
        job = TrainingJob(
            job_name=request.job_name, request=request, request_sha256=request_fingerprint(request)
        )
        try:
            self.jobs.create(job_key(request.job_name), job)
        except PreconditionFailed:
            raise Conflict(f"training job {request.job_name!r} already exists") from None
        return job

    async def on_requested(self, envelope: Envelope[TrainingJobRequested]) -> None:
        request = envelope.data
        fingerprint = request_fingerprint(request)
        event_id = str(envelope.event_id)
        key = job_key(request.job_name)
        while True:
            current = await asyncio.to_thread(self.jobs.get_or_none, key)
            job = current.doc if current else None
            decision = decide(
                job,
                fingerprint=fingerprint,
                event_id=event_id,
                worker_id=self.settings.worker_id,
                now=utc_now(),
                lease_s=self.settings.lease_s,
            )
            if decision == "done":
                log.info(
                    "job %s is already %s; nothing to do", request.job_name, job and job.status
                )
                return
            if decision == "reject":
                await self._reject(request, event_id, fingerprint)
                return
            if decision == "republish":
                assert job is not None
                await self._publish_outcome(job, envelope)
                return
            if decision == "wait":
                await asyncio.sleep(self.settings.heartbeat_s)
                continue
            now = utc_now()
            try:
                if current is None:
                    base = TrainingJob(
                        job_name=request.job_name, request=request, request_sha256=fingerprint
                    )
                    new = claimed(
                        base,
                        event_id=event_id,
                        worker_id=self.settings.worker_id,
                        now=now,
                        correlation_id=envelope.correlation_id,
                    )
                    mine = await asyncio.to_thread(self.jobs.create, key, new)
                else:
                    new = claimed(
                        current.doc,
                        event_id=event_id,
                        worker_id=self.settings.worker_id,
                        now=now,
                        correlation_id=envelope.correlation_id,
                    )
                    mine = await asyncio.to_thread(self.jobs.replace, key, new, current.etag)
            except PreconditionFailed:
                continue  # another worker moved first: look again
            await self._run(mine, envelope)
            return

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

    async def _run(self, versioned: Versioned[TrainingJob], envelope: Envelope[Any]) -> None:
        job = versioned.doc
        request = job.request
        job_log = JobLog(self.store, job.job_name)
        usable, why = gpu_status()
        if self.settings.device == "cpu":
            usable, why = False, "this worker is in a CPU pool (CAIRN_TRAINER_DEVICE=cpu)"
        device = "gpu" if request.resources.device == "gpu" and usable else "cpu"
        job_log.write(
            f"attempt {job.attempt} on worker {self.settings.worker_id}; "
            f"requested {request.resources.device}, using {device}"
            + ("" if request.resources.device == "cpu" or usable else f" ({why})")
        )
        await self.publish(
            TrainingJobStarted(
                job_name=job.job_name,
                worker_id=self.settings.worker_id,
                device=device,
                attempt=job.attempt,
            ),
            envelope,
        )
        progress: collections.deque[TrainingJobProgressed] = collections.deque()
        stop = threading.Event()
        ctx = TrainingContext(
            device_requested=request.resources.device,
            gpu_available=usable,
            progress=lambda i, total, metrics: progress.append(
                TrainingJobProgressed(
                    job_name=job.job_name, iteration=i, total_iterations=total, metrics=metrics
                )
            ),
            should_stop=stop.is_set,
            log=job_log.write,
        )
        started = time.monotonic()
        prefix = package_prefix_for(request, self.settings.models_prefix)
        work = asyncio.ensure_future(
            asyncio.to_thread(run_job, self.store, request, prefix, ctx, self.settings.scratch_dir)
        )
        heartbeat = asyncio.ensure_future(self._heartbeat(job, job_log, progress, envelope))
        outcome: JobResult | JobFailure
        try:
            outcome = await asyncio.wait_for(
                asyncio.shield(work), timeout=request.stopping_condition.max_runtime_s
            )
        except TimeoutError:
            stop.set()  # the algorithm checks it each iteration; scripts are killed
            outcome = JobFailure(
                "runtime_exceeded",
                f"max_runtime_s={request.stopping_condition.max_runtime_s} passed",
            )
            with _suppress_all():
                await asyncio.wait_for(work, timeout=30)
        except JobFailure as failure:
            outcome = failure
        except Exception as error:
            log.exception("job %s failed unexpectedly", job.job_name)
            outcome = JobFailure("internal", f"{type(error).__name__}: {error}")
        finally:
            heartbeat.cancel()
            with _suppress_all():
                await heartbeat
        await self._drain_progress(progress, envelope)
        total_s = time.monotonic() - started
        final = self._finished(job, outcome, device, total_s)
        job_log.write(
            f"job {final.status}"
            + (f": {final.failure_reason}" if final.failure_reason else f" -> {final.artifact_uri}")
        )
        await asyncio.to_thread(job_log.flush)
        written = await asyncio.to_thread(self.jobs.update, job_key(job.job_name), lambda _: final)
        await self._publish_outcome(written.doc, envelope)

    def _finished(
        self, job: TrainingJob, outcome: JobResult | JobFailure, device: str, total_s: float
    ) -> TrainingJob:
        common: dict[str, Any] = {"ended_at": utc_now(), "total_time_s": total_s, "device": device}
        if isinstance(outcome, JobFailure):
            return job.model_copy(
                update=common
                | {
                    "status": "Failed",
                    "failure_reason": outcome.reason,
                    "failure_code": outcome.code,
                }
            )
        return job.model_copy(
            update=common
            | {
                "status": "Completed",
                "artifact_uri": outcome.artifact_uri,
                "metrics": outcome.metrics,
                "device": outcome.device,
                "training_time_s": outcome.training_time_s,
            }
        )

    async def _publish_outcome(self, job: TrainingJob, envelope: Envelope[Any]) -> None:
        if job.status == "Failed":
            await self.publish(failed_event(job), envelope)
            return
        await self.publish(
            TrainingJobCompleted(
                job_name=job.job_name,
                algorithm=job.request.algorithm,
                artifact_uri=job.artifact_uri or "",
                metrics=job.metrics,
                device=job.device or "cpu",
                training_time_s=job.training_time_s or 0.0,
                total_time_s=job.total_time_s or 0.0,
                registration=job.request.registration,
            ),
            envelope,
        )

    async def _heartbeat(
        self,
        job: TrainingJob,
        job_log: JobLog,
        progress: collections.deque[TrainingJobProgressed],
        envelope: Envelope[Any],
    ) -> None:
        """Keep the job's lease, flush logs and publish progress while it trains."""
        latest: dict[str, Any] = {}
        next_beat = time.monotonic() + self.settings.heartbeat_s
        while True:
            await asyncio.sleep(min(self.settings.heartbeat_s, PROGRESS_POLL_S))
            last = await self._drain_progress(progress, envelope)
            if last is not None:
                latest = {"iteration": last.iteration, "metrics": last.metrics}
            if time.monotonic() < next_beat:
                continue
            next_beat = time.monotonic() + self.settings.heartbeat_s
            update = {"heartbeat_at": utc_now(), **latest}

            def beat(current: TrainingJob | None, update: dict[str, Any] = update) -> TrainingJob:
                base = current or job
                if base.worker_id != self.settings.worker_id or base.status != "InProgress":
                    return base  # taken over or finished: not ours to touch
                return base.model_copy(update=update)

            try:
                await asyncio.to_thread(self.jobs.update, job_key(job.job_name), beat)
                await asyncio.to_thread(job_log.flush)
            except Exception as error:  # a missed beat is retried on the next one
                log.warning("heartbeat of %s failed: %r", job.job_name, error)

    async def _drain_progress(
        self, progress: collections.deque[TrainingJobProgressed], envelope: Envelope[Any]
    ) -> TrainingJobProgressed | None:
        last = None
        while progress:
            last = progress.popleft()
            await self.publish(last, envelope)
        return last


def _suppress_all() -> contextlib.suppress:
    """Swallow errors and cancellation while awaiting a task we are abandoning."""
    return contextlib.suppress(Exception, asyncio.CancelledError)
