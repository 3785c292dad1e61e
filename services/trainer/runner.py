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

from services.trainer.algorithms import TrainingContext, TrainingStopped
from services.trainer.config import TrainerSettings
from services.trainer.domain import (
    RUNNING,
    JobFailure,
    JobResult,
    JobStopped,
    TrainingJob,
    failed_event,
    finished,
    job_key,
    logs_key,
    package_prefix_for,
    progressed,
    resumed,
    stopped_event,
    wait_left_s,
)
from services.trainer.execution import run_job
from services.trainer.gpu import gpu_status
from services.trainer.scale import scale_out_for

log = logging.getLogger(__name__)

PROGRESS_POLL_S = 0.25
ABANDON_WAIT_S = 30

Publish = Callable[[BaseModel, Envelope[Any] | None], Awaitable[Envelope[Any]]]
Progress = collections.deque[TrainingJobProgressed]
Outcome = JobResult | JobFailure | JobStopped


class JobLog:
    """Timestamped job log lines, rewritten whole to the store (object stores do not append)."""

    def __init__(self, store: ObjectStore, job_name: str, attempt: int) -> None:
        self.store = store
        self.key = logs_key(job_name, attempt)
        self._lines: list[str] = []
        self._lock = threading.Lock()

    def write(self, line: str) -> None:
        with self._lock:
            self._lines.append(f"{utc_now().isoformat(timespec='milliseconds')} {line}")

    def flush(self) -> None:
        with self._lock:
            text = "\n".join(self._lines) + "\n"
        self.store.put_bytes(self.key, text.encode(), content_type="text/plain")


class StopSignal:
    """What ends an attempt early: the runtime limit, or a stop request (keeping the model?)."""

    def __init__(self, job: TrainingJob) -> None:
        self.runtime = threading.Event()
        self.requested = threading.Event()
        self.keep_partial_model = job.keep_partial_model
        self.last_iteration: int | None = None
        self.last_metrics: dict[str, float] = {}
        if job.stop_requested_at is not None:  # a takeover of a job already asked to stop
            self.requested.set()

    def request(self, keep_partial_model: bool) -> None:
        self.keep_partial_model = keep_partial_model
        self.requested.set()

    def progressed(
        self, job: TrainingJob, iteration: int, total: int | None, metrics: dict[str, float]
    ) -> TrainingJobProgressed:
        """The progress event, remembered: a stopped job reports the rounds it used."""
        self.last_iteration, self.last_metrics = iteration, metrics
        return TrainingJobProgressed(
            job_name=job.job_name, iteration=iteration, total_iterations=total, metrics=metrics
        )

    def any_set(self) -> bool:
        return self.runtime.is_set() or self.requested.is_set()


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
        self.active: dict[str, StopSignal] = {}  # jobs training in this process, by name

    async def run(self, versioned: Versioned[TrainingJob], envelope: Envelope[Any]) -> None:
        job = versioned.doc
        job_log = JobLog(self.store, job.job_name, job.attempt)
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
        stop = StopSignal(job)
        self.active[job.job_name] = stop
        started = time.monotonic()
        heartbeat = asyncio.ensure_future(self._heartbeat(job, job_log, progress, envelope, stop))
        try:
            outcome = await self._train(job, job_log, progress, usable, stop)
        finally:
            self.active.pop(job.job_name, None)
            heartbeat.cancel()
            with _suppress_all():
                await heartbeat
        await self._drain_progress(progress, envelope)
        await self._finish(job, outcome, device, time.monotonic() - started, job_log, envelope)

    async def _finish(
        self,
        job: TrainingJob,
        outcome: Outcome,
        device: str,
        total_s: float,
        job_log: JobLog,
        envelope: Envelope[Any],
    ) -> None:
        """Record the attempt's outcome on the job as it is now (keeping its stop request)."""

        def final(current: TrainingJob | None) -> TrainingJob:
            base = current if current is not None and current.attempt == job.attempt else job
            return finished(base, outcome, device, total_s)

        written = await asyncio.to_thread(self.jobs.update, job_key(job.job_name), final)
        done = written.doc
        job_log.write(
            f"job {done.status}"
            + (f": {done.failure_reason}" if done.failure_reason else "")
            + (f" -> {done.artifact_uri}" if done.artifact_uri else "")
        )
        await asyncio.to_thread(job_log.flush)
        await self.publish_outcome(done, envelope)

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
        self,
        job: TrainingJob,
        job_log: JobLog,
        progress: Progress,
        usable: bool,
        stop: StopSignal,
    ) -> Outcome:
        """The job's outcome; the runtime limit or a stop request ends the algorithm early."""
        request = job.request
        ctx = TrainingContext(
            device_requested=request.resources.device,
            gpu_available=usable,
            progress=lambda i, total, metrics: progress.append(
                stop.progressed(job, i, total, metrics)
            ),
            should_stop=stop.any_set,
            log=job_log.write,
            stop_requested=stop.requested.is_set,
            keep_partial_model=lambda: stop.keep_partial_model,
        )
        prefix = package_prefix_for(request, self.settings.models_prefix)
        limit_s: float = request.stopping_condition.max_runtime_s
        wait_left = wait_left_s(job, utc_now())
        if wait_left is not None and wait_left <= 0:
            return JobFailure(
                "max_wait_exceeded",
                f"max_wait_time_s={request.stopping_condition.max_wait_time_s} passed "
                f"before attempt {job.attempt} could start",
            )
        by_wait = wait_left is not None and wait_left < limit_s
        limit_s = min(limit_s, wait_left) if wait_left is not None else limit_s
        scale = scale_out_for(
            self.store, self.settings, request, on_resume=self._on_resume(job, job_log)
        )
        work = asyncio.ensure_future(
            asyncio.to_thread(
                run_job, self.store, request, prefix, ctx, self.settings.scratch_dir, scale
            )
        )
        try:
            result = await asyncio.wait_for(asyncio.shield(work), timeout=limit_s)
        except TimeoutError:
            stop.runtime.set()  # the algorithm checks it each iteration; scripts are killed
            with _suppress_all():
                await asyncio.wait_for(work, timeout=ABANDON_WAIT_S)
            if by_wait:
                return JobFailure(
                    "max_wait_exceeded",
                    f"max_wait_time_s={request.stopping_condition.max_wait_time_s} passed",
                )
            return JobFailure("runtime_exceeded", f"max_runtime_s={limit_s:g} passed")
        except TrainingStopped:
            return JobStopped(metrics=stop.last_metrics, iteration=stop.last_iteration)
        except JobFailure as failure:
            return failure
        except Exception as error:
            log.exception("job %s failed unexpectedly", job.job_name)
            return JobFailure("internal", f"{type(error).__name__}: {error}")
        if stop.requested.is_set():
            kept = result.artifact_uri if stop.keep_partial_model else None
            return JobStopped(kept, result.metrics, result.training_time_s, stop.last_iteration)
        return result

    def _on_resume(self, job: TrainingJob, job_log: JobLog) -> Callable[[int], None]:
        """Record, from the training thread, that this attempt resumed from a checkpoint."""

        def record(rounds: int) -> None:
            def update(current: TrainingJob | None) -> TrainingJob:
                base = current or job
                if base.worker_id != self.settings.worker_id or base.attempt != job.attempt:
                    return base
                return resumed(base, job.attempt, rounds)

            written = self.jobs.update(job_key(job.job_name), update).doc
            job_log.write(
                f"attempt {job.attempt} resumed at round {rounds}; "
                f"rounds saved by resuming so far: {written.rounds_saved_by_resume}"
            )

        return record

    async def publish_outcome(self, job: TrainingJob, envelope: Envelope[Any]) -> None:
        """The finished job's one outcome event: Completed, Failed or Stopped."""
        if job.status == "Failed":
            await self.publish(failed_event(job), envelope)
            return
        if job.status == "Stopped":
            await self.publish(stopped_event(job), envelope)
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
        progress: Progress,
        envelope: Envelope[Any],
        stop: StopSignal,
    ) -> None:
        """Keep the job's lease, flush logs, publish progress and notice a stop request."""
        latest: dict[str, Any] = {}
        next_beat = time.monotonic() + self.settings.heartbeat_s
        next_stop_check = time.monotonic() + self.settings.stop_poll_s
        while True:
            await asyncio.sleep(min(self.settings.heartbeat_s, PROGRESS_POLL_S))
            last = await self._drain_progress(progress, envelope)
            if last is not None:
                latest = {"iteration": last.iteration, "metrics": last.metrics}
            now = time.monotonic()
            if now >= next_stop_check and not stop.requested.is_set():
                next_stop_check = now + self.settings.stop_poll_s
                await self._check_stop(job, job_log, stop)
            if now < next_beat:
                continue
            next_beat = now + self.settings.heartbeat_s
            try:
                await self._beat(job, {"heartbeat_at": utc_now(), **latest})
                await asyncio.to_thread(job_log.flush)
            except Exception as error:  # a missed beat is retried on the next one
                log.warning("heartbeat of %s failed: %r", job.job_name, error)

    async def _check_stop(self, job: TrainingJob, job_log: JobLog, stop: StopSignal) -> None:
        """A stop request written to the job document by any replica stops this attempt."""
        try:
            current = await asyncio.to_thread(self.jobs.get_or_none, job_key(job.job_name))
        except Exception as error:  # looked at again on the next poll
            log.warning("stop check of %s failed: %r", job.job_name, error)
            return
        if current is not None and current.doc.stop_requested_at is not None:
            job_log.write(f"stop requested: {current.doc.stop_reason or ''}")
            stop.request(current.doc.keep_partial_model)

    async def _beat(self, job: TrainingJob, update: dict[str, Any]) -> None:
        def beat(current: TrainingJob | None) -> TrainingJob:
            base = current or job
            if base.worker_id != self.settings.worker_id or base.status not in RUNNING:
                return base  # taken over or finished: not ours to touch
            return progressed(base.model_copy(update=update), job.attempt, update.get("iteration"))

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
