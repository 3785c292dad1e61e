"""Training-job rules: the job document, request fingerprints and what a delivery should do."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from cairn.contracts.envelope import utc_now
from cairn.contracts.events import TrainingJobFailed, TrainingJobRequested
from cairn.contracts.tuner_events import TrainingJobStopped
from cairn.errors import Conflict
from pydantic import BaseModel, ConfigDict, Field

JOBS_PREFIX = "trainer/jobs"
REJECTIONS_PREFIX = "trainer/rejections"

JobStatus = Literal["Pending", "InProgress", "Stopping", "Completed", "Failed", "Stopped"]
FailureCode = Literal[
    "invalid_hyperparameters",
    "invalid_input",
    "runtime_exceeded",
    "algorithm_error",
    "insufficient_capacity",
    "max_wait_exceeded",
    "internal",
]
Decision = Literal["create", "claim", "wait", "reject", "done", "republish"]
TERMINAL: frozenset[str] = frozenset({"Completed", "Failed", "Stopped"})
RUNNING: frozenset[str] = frozenset({"InProgress", "Stopping"})


class AttemptRecord(BaseModel):
    """One attempt at a job: who ran it, where it resumed and how far it got."""

    attempt: int = Field(ge=1)
    worker_id: str
    started_at: datetime
    resumed_from_round: int = Field(default=0, ge=0, description="Rounds read from a checkpoint.")
    last_round: int | None = Field(default=None, description="The last round it reported.")
    ended_at: datetime | None = None
    instance_count: int = 1


class TrainingJob(BaseModel):
    """The durable state of one job (`trainer/jobs/<job_name>.json`), DescribeTrainingJob-like."""

    model_config = ConfigDict(extra="forbid")

    job_name: str
    request: TrainingJobRequested
    request_sha256: str
    request_event_id: str | None = None
    correlation_id: str | None = Field(
        default=None, description="The workflow's correlation id: `cairn trace` shows its events."
    )
    status: JobStatus = "Pending"
    attempt: int = Field(default=0, ge=0)
    worker_id: str | None = None
    created_at: datetime = Field(default_factory=utc_now)
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None
    ended_at: datetime | None = None
    device: Literal["cpu", "gpu"] | None = None
    iteration: int | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    artifact_uri: str | None = None
    training_time_s: float | None = None
    total_time_s: float | None = None
    failure_reason: str | None = None
    failure_code: FailureCode | None = None
    stop_requested_at: datetime | None = None
    stop_reason: str | None = None
    keep_partial_model: bool = False
    requeued_at: datetime | None = Field(
        default=None, description="When a still-Pending job's request was last published again."
    )
    attempts: list[AttemptRecord] = Field(default_factory=list)
    rounds_saved_by_resume: int = Field(
        default=0, ge=0, description="Rounds later attempts read from checkpoints, not retrained."
    )
    rounds_redone: int = Field(
        default=0, ge=0, description="Rounds an attempt trained again after the previous died."
    )


class JobRejection(BaseModel):
    """A request that reused an existing job name with different content; the job is untouched."""

    job_name: str
    event_id: str
    request_sha256: str
    reason: str
    rejected_at: datetime = Field(default_factory=utc_now)


@dataclass
class JobResult:
    """A job that trained and wrote its model package."""

    artifact_uri: str
    metrics: dict[str, float]
    device: Literal["cpu", "gpu"]
    training_time_s: float
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class JobStopped:
    """A job stopped on request; `artifact_uri` is its partial model when one was kept."""

    artifact_uri: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    training_time_s: float = 0.0
    iteration: int | None = None


class JobFailure(Exception):
    """A job outcome (not a handler bug): the job ends Failed with this code and reason."""

    def __init__(self, code: FailureCode, reason: str) -> None:
        super().__init__(reason)
        self.code: FailureCode = code
        self.reason = reason


def job_key(job_name: str) -> str:
    return f"{job_name}.json"


def logs_key(job_name: str, attempt: int) -> str:
    """One log per attempt: a taken-over attempt's log is kept, not overwritten."""
    return f"{JOBS_PREFIX}/{job_name}/attempts/{attempt}/logs.txt"


def package_prefix_for(request: TrainingJobRequested, models_prefix: str) -> str:
    """Deterministic: a re-run of the same job overwrites its own package and nothing else."""
    base = (request.output_uri or models_prefix).strip("/")
    return f"{base}/{request.job_name}/"


def request_fingerprint(request: TrainingJobRequested) -> str:
    """The same content gives the same digest, whatever the key order of its dicts."""
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def decide(
    job: TrainingJob | None,
    *,
    fingerprint: str,
    event_id: str,
    worker_id: str,
    now: datetime,
    lease_s: float,
) -> Decision:
    """What a worker does with a delivered request, given the job document as it is now."""
    if job is None:
        return "create"
    if job.request_sha256 != fingerprint:
        return "reject"
    if job.status in TERMINAL:
        # The same message again means we may have crashed before publishing the outcome.
        return "republish" if job.request_event_id == event_id else "done"
    if job.status == "Pending":
        return "claim"
    stale = job.heartbeat_at is None or now - job.heartbeat_at > timedelta(seconds=lease_s)
    if stale or job.worker_id == worker_id:
        return "claim"
    return "wait"


def requeue_due(job: TrainingJob, now: datetime, grace: timedelta) -> bool:
    """Whether a job no worker claimed waited long enough to have its request published again."""
    return job.status == "Pending" and now - (job.requeued_at or job.created_at) >= grace


def claimed(
    job: TrainingJob,
    *,
    event_id: str,
    worker_id: str,
    now: datetime,
    correlation_id: str | None = None,
) -> TrainingJob:
    """The job taken by this worker for a new attempt."""
    record = AttemptRecord(
        attempt=job.attempt + 1,
        worker_id=worker_id,
        started_at=now,
        instance_count=job.request.resources.instance_count,
    )
    return job.model_copy(
        update={
            "attempts": [*job.attempts, record],
            "status": "Stopping" if job.stop_requested_at else "InProgress",
            "attempt": job.attempt + 1,
            "worker_id": worker_id,
            "request_event_id": event_id,
            "correlation_id": correlation_id or job.correlation_id,
            "started_at": job.started_at or now,
            "heartbeat_at": now,
            "metrics": {},
            "iteration": None,
        }
    )


def resumed(job: TrainingJob, attempt: int, from_round: int) -> TrainingJob:
    """The job once attempt `attempt` read a checkpoint of `from_round` rounds."""
    attempts = list(job.attempts)
    if not attempts or attempts[-1].attempt != attempt:
        return job
    attempts[-1] = attempts[-1].model_copy(update={"resumed_from_round": from_round})
    previous = attempts[-2].last_round if len(attempts) > 1 else None
    redone = max(0, (previous or 0) - from_round) if previous is not None else 0
    return job.model_copy(
        update={
            "attempts": attempts,
            "rounds_saved_by_resume": job.rounds_saved_by_resume + from_round,
            "rounds_redone": job.rounds_redone + redone,
        }
    )


def progressed(job: TrainingJob, attempt: int, iteration: int | None) -> TrainingJob:
    """Remember how far the current attempt got (what a later attempt may have to redo)."""
    if iteration is None or not job.attempts or job.attempts[-1].attempt != attempt:
        return job
    attempts = [*job.attempts[:-1], job.attempts[-1].model_copy(update={"last_round": iteration})]
    return job.model_copy(update={"attempts": attempts})


def wait_left_s(job: TrainingJob, now: datetime) -> float | None:
    """Seconds of MaxWaitTimeInSeconds left (None: no limit); counted from the job's creation."""
    limit = job.request.stopping_condition.max_wait_time_s
    if limit is None:
        return None
    return limit - (now - job.created_at).total_seconds()


def request_stop(
    job: TrainingJob, *, reason: str, keep_partial_model: bool, now: datetime
) -> TrainingJob:
    """The job once asked to stop: a Pending one is Stopped at once, a running one Stopping.

    Raises:
        Conflict: the job already Completed or Failed (there is nothing to stop).
    """
    if job.status in ("Completed", "Failed"):
        raise Conflict(f"training job {job.job_name!r} already {job.status}; nothing to stop")
    if job.status in ("Stopping", "Stopped"):
        return job
    update: dict[str, Any] = {
        "stop_requested_at": now,
        "stop_reason": reason or "stop requested",
        "keep_partial_model": keep_partial_model,
    }
    if job.status == "Pending":
        return job.model_copy(update=update | {"status": "Stopped", "ended_at": now})
    return job.model_copy(update=update | {"status": "Stopping"})


def finished(
    job: TrainingJob,
    outcome: JobResult | JobFailure | JobStopped,
    device: str,
    total_s: float,
) -> TrainingJob:
    """The job document once an attempt has ended with `outcome`."""
    now = utc_now()
    common: dict[str, Any] = {"ended_at": now, "total_time_s": total_s, "device": device}
    if job.attempts and job.attempts[-1].attempt == job.attempt:
        last = job.attempts[-1].model_copy(update={"ended_at": now})
        common["attempts"] = [*job.attempts[:-1], last]
    if isinstance(outcome, JobStopped):
        stopped = {
            "status": "Stopped",
            "artifact_uri": outcome.artifact_uri,
            "metrics": outcome.metrics or job.metrics,
            "training_time_s": outcome.training_time_s,
            "iteration": outcome.iteration if outcome.iteration is not None else job.iteration,
        }
        return job.model_copy(update=common | stopped)
    if isinstance(outcome, JobFailure):
        failure = {
            "status": "Failed",
            "failure_reason": outcome.reason,
            "failure_code": outcome.code,
        }
        return job.model_copy(update=common | failure)
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


def failed_event(job: TrainingJob) -> TrainingJobFailed:
    return TrainingJobFailed(
        job_name=job.job_name,
        reason=job.failure_reason or "unknown",
        failure_code=job.failure_code or "internal",
    )


def stopped_event(job: TrainingJob) -> TrainingJobStopped:
    return TrainingJobStopped(
        job_name=job.job_name,
        reason=job.stop_reason or "",
        iteration=job.iteration,
        metrics=job.metrics,
        artifact_uri=job.artifact_uri,
        training_time_s=job.training_time_s or 0.0,
    )


def summary(job: TrainingJob) -> dict[str, Any]:
    """The list view of a job (ListTrainingJobs)."""
    return {
        "job_name": job.job_name,
        "algorithm": job.request.algorithm,
        "status": job.status,
        "created_at": job.created_at.isoformat(),
        "ended_at": job.ended_at.isoformat() if job.ended_at else None,
        "device": job.device,
        "metrics": job.metrics,
        "artifact_uri": job.artifact_uri,
        "failure_reason": job.failure_reason,
    }
