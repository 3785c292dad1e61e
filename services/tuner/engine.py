"""Moving a tuning job forward: one conditional write at a time, publishing what it owes.

`advance` looks at the stored job and does the next thing: announce the start, request a trial,
stop a trial, report a finished trial, sample a new trial, end the job, announce the end. Every
publication is an outbox entry on the document (`requested`, `stop_sent`, `reported`, ...): it is
published, then marked; a tuner killed in between publishes it again after a restart (the trainer
takes a repeated request or stop as a no-op). A new trial is appended with a write conditional on
the version it was sampled from, so two tuners can never start the same trial number twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from cairn.contracts.envelope import Envelope, utc_now
from cairn.contracts.events import (
    ResourceConfig,
    StoppingCondition,
    TrainingJobRequested,
)
from cairn.contracts.tuner_events import (
    HyperParameterTuningJobCompleted,
    HyperParameterTuningJobFailed,
    HyperParameterTuningJobStarted,
    HyperParameterTuningJobStopped,
    TrainingJobStopRequested,
    TuningTrialCompleted,
)
from cairn.documents import DocumentStore, Versioned
from cairn.errors import PreconditionFailed
from pydantic import BaseModel

from services.tuner.domain import (
    TERMINAL_TRIAL,
    TERMINAL_TUNING,
    Trial,
    TuningJob,
    best_trial,
    completion_reason,
    job_key,
    overall_best,
    trial_hyperparameters,
    trial_job_name,
)
from services.tuner.study import ask

log = logging.getLogger(__name__)

Publish = Callable[..., Awaitable[Envelope[Any]]]
MAX_STEPS = 10_000


class TuningEngine:
    """Advances tuning jobs stored in `jobs`, publishing through `publish`."""

    def __init__(self, jobs: DocumentStore[TuningJob], publish: Publish) -> None:
        self.jobs = jobs
        self.publish = publish
        self._locks: dict[str, asyncio.Lock] = {}

    async def advance(self, name: str) -> TuningJob | None:
        """Do everything the job is owed now; the job as it was left."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            for _ in range(MAX_STEPS):
                current = await asyncio.to_thread(self.jobs.get_or_none, job_key(name))
                if current is None:
                    return None
                try:
                    if not await self._step(current):
                        return current.doc
                except PreconditionFailed:
                    continue  # another writer moved first: look again
            raise RuntimeError(f"tuning job {name} did not settle")

    async def _step(self, current: Versioned[TuningJob]) -> bool:
        """One thing done (True), or nothing left to do now (False)."""
        job = current.doc
        for owed in (self._announce_start, self._request, self._stop, self._report):
            if await owed(current):
                return True
        if job.status in TERMINAL_TUNING:
            return await self._announce_end(current)
        if job.end_as is None and await self._maybe_end(current):
            return True
        if job.end_as is not None:
            return await self._finish(current) if not job.running else False
        return await self._launch(current)

    async def _write(self, current: Versioned[TuningJob], job: TuningJob) -> None:
        await asyncio.to_thread(self.jobs.replace, current.key, job, current.etag)

    async def _send(self, job: TuningJob, data: BaseModel) -> None:
        await self.publish(data, None, job.correlation_id)

    # Outbox --------------------------------------------------------------------------------

    async def _announce_start(self, current: Versioned[TuningJob]) -> bool:
        job = current.doc
        if job.started_published:
            return False
        await self._send(
            job,
            HyperParameterTuningJobStarted(
                tuning_job_name=job.tuning_job_name,
                strategy=job.request.strategy,
                max_number_of_training_jobs=job.max_trials,
                warm_start_trials=len(job.warm_start_trials),
            ),
        )
        await self._write(current, job.model_copy(update={"started_published": True}))
        return True

    async def _request(self, current: Versioned[TuningJob]) -> bool:
        job = current.doc
        trial = next((t for t in job.trials if t.status == "Pending" and not t.requested), None)
        if trial is None:
            return False
        await self._send(job, trial_request(job, trial))
        await self._write(current, _with_trial(job, trial.model_copy(update={"requested": True})))
        return True

    async def _stop(self, current: Versioned[TuningJob]) -> bool:
        job = current.doc
        trial = next((t for t in job.trials if t.status == "Stopping" and not t.stop_sent), None)
        if trial is None:
            return False
        reason = "early stopping" if trial.early_stopped else f"tuning job: {job.end_reason}"
        await self._send(
            job, TrainingJobStopRequested(job_name=trial.training_job_name, reason=reason)
        )
        await self._write(current, _with_trial(job, trial.model_copy(update={"stop_sent": True})))
        return True

    async def _report(self, current: Versioned[TuningJob]) -> bool:
        job = current.doc
        trial = next((t for t in job.trials if t.status in TERMINAL_TRIAL and not t.reported), None)
        if trial is None:
            return False
        await self._send(
            job,
            TuningTrialCompleted(
                tuning_job_name=job.tuning_job_name,
                trial_number=trial.number,
                training_job_name=trial.training_job_name,
                status=trial.status,
                parameters=trial.parameters,
                objective_value=trial.objective_value,
                rounds_used=trial.rounds_used,
                early_stopped=trial.early_stopped,
                failure_reason=trial.failure_reason,
            ),
        )
        await self._write(current, _with_trial(job, trial.model_copy(update={"reported": True})))
        return True

    async def _announce_end(self, current: Versioned[TuningJob]) -> bool:
        job = current.doc
        if job.outcome_published:
            return False
        await self._send(job, outcome_event(job))
        await self._write(current, job.model_copy(update={"outcome_published": True}))
        return True

    # Decisions -----------------------------------------------------------------------------

    async def _maybe_end(self, current: Versioned[TuningJob]) -> bool:
        """Completion criteria or too many failures: no new trial, the running ones stopped."""
        job = current.doc
        ending = completion_reason(job)
        if ending is not None:
            end_as, reason = ending
        elif len(job.trials) < job.max_trials or job.running:
            return False
        else:
            end_as, reason = "Completed", f"all {job.max_trials} trials ran"
        await self._write(current, ending_job(job, end_as, reason))
        return True

    async def _finish(self, current: Versioned[TuningJob]) -> bool:
        job = current.doc
        status = job.end_as or "Completed"
        await self._write(current, job.model_copy(update={"status": status, "ended_at": utc_now()}))
        log.info("tuning job %s %s: %s", job.tuning_job_name, status, job.end_reason)
        return True

    async def _launch(self, current: Versioned[TuningJob]) -> bool:
        job = current.doc
        limits = job.request.resource_limits
        if (
            len(job.running) >= limits.max_parallel_training_jobs
            or len(job.trials) >= job.max_trials
        ):
            return False
        parameters, system_attrs = await asyncio.to_thread(ask, job)
        number = len(job.trials)
        trial = Trial(
            number=number,
            training_job_name=trial_job_name(job.tuning_job_name, number),
            parameters=parameters,
            system_attrs=system_attrs,
        )
        await self._write(current, job.model_copy(update={"trials": [*job.trials, trial]}))
        return True


def ending_job(job: TuningJob, end_as: str, reason: str) -> TuningJob:
    """The job once no trial may start: running trials get a stop request, unsent ones end."""
    now = utc_now()

    def ended(trial: Trial) -> Trial:
        if trial.status == "Pending" and not trial.requested:
            return trial.model_copy(update={"status": "Stopped", "ended_at": now})
        if trial.status in ("Pending", "InProgress"):
            return trial.model_copy(update={"status": "Stopping"})
        return trial

    trials = [ended(t) for t in job.trials]
    update: dict[str, Any] = {"end_as": end_as, "end_reason": reason, "trials": trials}
    if any(t.status not in TERMINAL_TRIAL for t in trials):
        update["status"] = "Stopping"
    return job.model_copy(update=update)


def _with_trial(job: TuningJob, trial: Trial) -> TuningJob:
    trials = list(job.trials)
    trials[trial.number] = trial
    return job.model_copy(update={"trials": trials})


def trial_request(job: TuningJob, trial: Trial) -> TrainingJobRequested:
    """The trial's training job: the same content every time, so a repeat is a no-op."""
    request = job.request
    definition = request.training_job_definition
    return TrainingJobRequested(
        job_name=trial.training_job_name,
        algorithm=definition.algorithm,
        hyperparameters=trial_hyperparameters(request, trial.parameters),
        input_channels=definition.input_channels,
        output_uri=definition.output_uri,
        resources=ResourceConfig(device=definition.device),
        stopping_condition=StoppingCondition(max_runtime_s=definition.max_runtime_s),
        entry_point=definition.entry_point,
        metric_definitions=definition.metric_definitions,
        tags={
            **request.tags,
            "cairn:tuning-job": job.tuning_job_name,
            "cairn:trial": str(trial.number),
        },
    )


def outcome_event(job: TuningJob) -> BaseModel:
    """The job's one outcome event, by how it ended."""
    best = best_trial(job)
    if job.status == "Failed":
        return HyperParameterTuningJobFailed(
            tuning_job_name=job.tuning_job_name, reason=job.end_reason, best_training_job=best
        )
    if job.status == "Stopped":
        return HyperParameterTuningJobStopped(
            tuning_job_name=job.tuning_job_name, reason=job.end_reason, best_training_job=best
        )
    return HyperParameterTuningJobCompleted(
        tuning_job_name=job.tuning_job_name,
        best_training_job=best,
        overall_best_training_job=overall_best(job) if job.warm_start_trials else None,
        trials_completed=job.count("Completed"),
        trials_failed=job.count("Failed"),
        trials_stopped=job.count("Stopped"),
        reason=job.end_reason,
        algorithm=job.request.training_job_definition.algorithm,
        registration=job.request.registration if best is not None else None,
    )
