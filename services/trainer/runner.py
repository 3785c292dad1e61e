"""Running one claimed job: train off the event loop, heartbeat, publish progress, report once."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from cairn.contracts.envelope import Envelope, utc_now
from cairn.contracts.events import (
    TrainingJobCompleted,
    TrainingJobProgressed,
    TrainingJobStarted,
)
from cairn.documents import DocumentStore, Versioned
from cairn.store.base import ObjectStore
from pydantic import BaseModel

from services.trainer.algorithms import TrainingContext
from services.trainer.config import TrainerSettings
from services.trainer.domain import (
    JobFailure,
    JobResult,
    TrainingJob,
    failed_event,
    finished,
    job_key,
    logs_key,
    package_prefix_for,
)
from services.trainer.execution import run_job
from services.trainer.gpu import gpu_status

log = logging.getLogger(__name__)

PROGRESS_POLL_S = 0.25
ABANDON_WAIT_S = 30

Publish = Callable[[BaseModel, Envelope[Any] | None], Awaitable[Envelope[Any]]]
Progress = collections.deque[TrainingJobProgressed]


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


class JobRunner:
    """Trains a job this worker has claimed and records and publishes its one outcome."""

    def __init__(
        self,
        store: ObjectStore,
        settings: TrainerSettings,
        jobs: DocumentStore[TrainingJob],
        publish: Publish,
    ) -> None:
        self.store = store
        self.settings = settings
        self.jobs = jobs
        self.publish = publish

    async def run(self, versioned: Versioned[TrainingJob], envelope: Envelope[Any]) -> None:
        job = versioned.doc
        job_log = JobLog(self.store, job.job_name)
        device, usable = self._device(job, job_log)
        await self.publish(
            TrainingJobStarted(
                job_name=job.job_name,
                worker_id=self.settings.worker_id,
                device=device,
                attempt=job.attempt,
            ),
            envelope,
        )
        progress: Progress = collections.deque()
        started = time.monotonic()
        heartbeat = asyncio.ensure_future(self._heartbeat(job, job_log, progress, envelope))
        try:
            outcome = await self._train(job, job_log, progress, usable)
        finally:
            heartbeat.cancel()
            with _suppress_all():
                await heartbeat
        await self._drain_progress(progress, envelope)
        final = finished(job, outcome, device, time.monotonic() - started)
        job_log.write(
            f"job {final.status}"
            + (f": {final.failure_reason}" if final.failure_reason else f" -> {final.artifact_uri}")
        )
        await asyncio.to_thread(job_log.flush)
        written = await asyncio.to_thread(self.jobs.update, job_key(job.job_name), lambda _: final)
        await self.publish_outcome(written.doc, envelope)

    def _device(self, job: TrainingJob, job_log: JobLog) -> tuple[Literal["cpu", "gpu"], bool]:
        """The device this attempt trains on (a GPU only when asked for and usable here)."""
        requested = job.request.resources.device
        usable, why = gpu_status()
        if self.settings.device == "cpu":
            usable, why = False, "this worker is in a CPU pool (CAIRN_TRAINER_DEVICE=cpu)"
        device: Literal["cpu", "gpu"] = "gpu" if requested == "gpu" and usable else "cpu"
        job_log.write(
            f"attempt {job.attempt} on worker {self.settings.worker_id}; "
            f"requested {requested}, using {device}"
            + ("" if requested == "cpu" or usable else f" ({why})")
        )
        return device, usable

    async def _train(
        self, job: TrainingJob, job_log: JobLog, progress: Progress, usable: bool
    ) -> JobResult | JobFailure:
        """The job's outcome; the runtime limit stops the algorithm (or kills the script)."""
        request = job.request
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
        prefix = package_prefix_for(request, self.settings.models_prefix)
        work = asyncio.ensure_future(
            asyncio.to_thread(run_job, self.store, request, prefix, ctx, self.settings.scratch_dir)
        )
        limit_s = request.stopping_condition.max_runtime_s
        try:
            return await asyncio.wait_for(asyncio.shield(work), timeout=limit_s)
        except TimeoutError:
            stop.set()  # the algorithm checks it each iteration; scripts are killed
            with _suppress_all():
                await asyncio.wait_for(work, timeout=ABANDON_WAIT_S)
            return JobFailure("runtime_exceeded", f"max_runtime_s={limit_s} passed")
        except JobFailure as failure:
            return failure
        except Exception as error:
            log.exception("job %s failed unexpectedly", job.job_name)
            return JobFailure("internal", f"{type(error).__name__}: {error}")

    async def publish_outcome(self, job: TrainingJob, envelope: Envelope[Any]) -> None:
        """`TrainingJobCompleted` or `TrainingJobFailed` for a finished job."""
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
        self, job: TrainingJob, job_log: JobLog, progress: Progress, envelope: Envelope[Any]
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
            try:
                await self._beat(job, {"heartbeat_at": utc_now(), **latest})
                await asyncio.to_thread(job_log.flush)
            except Exception as error:  # a missed beat is retried on the next one
                log.warning("heartbeat of %s failed: %r", job.job_name, error)

    async def _beat(self, job: TrainingJob, update: dict[str, Any]) -> None:
        def beat(current: TrainingJob | None) -> TrainingJob:
            base = current or job
            if base.worker_id != self.settings.worker_id or base.status != "InProgress":
                return base  # taken over or finished: not ours to touch
            return base.model_copy(update=update)

        await asyncio.to_thread(self.jobs.update, job_key(job.job_name), beat)

    async def _drain_progress(
        self, progress: Progress, envelope: Envelope[Any]
    ) -> TrainingJobProgressed | None:
        last = None
        while progress:
            last = progress.popleft()
            await self.publish(last, envelope)
        return last


def _suppress_all() -> contextlib.suppress:
    """Swallow errors and cancellation while awaiting a task we are abandoning."""
    return contextlib.suppress(Exception, asyncio.CancelledError)
