"""Processing-job rules: the job document, fingerprints and what a delivery should do.

The same lease-and-claim rules as training jobs (`services.trainer.domain.decide`): one document
per job name, claimed by a worker with a conditional write and a heartbeat, taken over when the
heartbeat is older than the lease (a killed worker), and reported once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from cairn.contracts.envelope import utc_now
from cairn.contracts.processing_events import (
    DatasetOutputSpec,
    ProcessingFailureCode,
    ProcessingJobCompleted,
    ProcessingJobFailed,
    ProcessingJobRequested,
    ProcessingOutputResult,
)
from pydantic import BaseModel, ConfigDict, Field

PROCESSING_PREFIX = "trainer/processing"
OUTPUTS_PREFIX = "outputs/processing"

ProcessingStatus = Literal["Pending", "InProgress", "Completed", "Failed"]
Decision = Literal["create", "claim", "wait", "reject", "done", "republish"]
TERMINAL: frozenset[str] = frozenset({"Completed", "Failed"})


class ProcessingJob(BaseModel):
    """The durable state of one job (`trainer/processing/<job>.json`), as Describe shows it."""

    model_config = ConfigDict(extra="forbid")

    job_name: str
    request: ProcessingJobRequested
    request_sha256: str
    request_event_id: str | None = None
    correlation_id: str | None = None
    status: ProcessingStatus = "Pending"
    attempt: int = Field(default=0, ge=0)
    worker_id: str | None = None
    created_at: datetime = Field(default_factory=utc_now)
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None
    ended_at: datetime | None = None
    outputs: list[ProcessingOutputResult] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    processing_time_s: float | None = None
    failure_reason: str | None = None
    failure_code: ProcessingFailureCode | None = None
    requeued_at: datetime | None = None


@dataclass
class ProcessingResult:
    """A job whose program exited 0 and whose outputs are uploaded."""

    outputs: list[ProcessingOutputResult]
    metrics: dict[str, float]
    processing_time_s: float
    registrations: list[tuple[str, DatasetOutputSpec]] = field(default_factory=list)


class ProcessingFailure(Exception):
    """A job outcome (not a handler bug): the job ends Failed with this code and reason."""

    def __init__(self, code: ProcessingFailureCode, reason: str) -> None:
        super().__init__(reason)
        self.code: ProcessingFailureCode = code
        self.reason = reason


def job_key(job_name: str) -> str:
    return f"{job_name}.json"


def logs_key(job_name: str, attempt: int) -> str:
    """One log per attempt: the script's stdout and stderr, with the worker's own lines."""
    return f"{PROCESSING_PREFIX}/{job_name}/attempts/{max(attempt, 1)}/logs.txt"


def output_prefix(request: ProcessingJobRequested, output_name: str) -> str:
    """Deterministic: a re-run of the same job overwrites its own outputs and nothing else."""
    for output in request.outputs:
        if output.output_name == output_name and output.destination:
            return output.destination.strip("/") + "/"
    return f"{OUTPUTS_PREFIX}/{request.job_name}/{output_name}/"


def request_fingerprint(request: ProcessingJobRequested) -> str:
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def decide(
    job: ProcessingJob | None,
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
        return "republish" if job.request_event_id == event_id else "done"
    if job.status == "Pending":
        return "claim"
    stale = job.heartbeat_at is None or now - job.heartbeat_at > timedelta(seconds=lease_s)
    return "claim" if stale or job.worker_id == worker_id else "wait"


def requeue_due(job: ProcessingJob, now: datetime, grace: timedelta) -> bool:
    return job.status == "Pending" and now - (job.requeued_at or job.created_at) >= grace


def claimed(
    job: ProcessingJob, *, event_id: str, worker_id: str, now: datetime, correlation_id: str | None
) -> ProcessingJob:
    return job.model_copy(
        update={
            "status": "InProgress",
            "attempt": job.attempt + 1,
            "worker_id": worker_id,
            "request_event_id": event_id,
            "correlation_id": correlation_id or job.correlation_id,
            "started_at": job.started_at or now,
            "heartbeat_at": now,
        }
    )


def finished(job: ProcessingJob, outcome: ProcessingResult | ProcessingFailure) -> ProcessingJob:
    common: dict[str, Any] = {"ended_at": utc_now()}
    if isinstance(outcome, ProcessingFailure):
        return job.model_copy(
            update=common
            | {"status": "Failed", "failure_reason": outcome.reason, "failure_code": outcome.code}
        )
    return job.model_copy(
        update=common
        | {
            "status": "Completed",
            "outputs": outcome.outputs,
            "metrics": outcome.metrics,
            "processing_time_s": outcome.processing_time_s,
        }
    )


def outcome_event(job: ProcessingJob) -> ProcessingJobCompleted | ProcessingJobFailed:
    """The finished job's one outcome event."""
    logs = logs_key(job.job_name, job.attempt)
    if job.status == "Failed":
        return ProcessingJobFailed(
            job_name=job.job_name,
            reason=job.failure_reason or "unknown",
            failure_code=job.failure_code or "internal",
            logs_key=logs,
        )
    return ProcessingJobCompleted(
        job_name=job.job_name,
        outputs=job.outputs,
        metrics=job.metrics,
        logs_key=logs,
        processing_time_s=job.processing_time_s or 0.0,
    )


def summary(job: ProcessingJob) -> dict[str, Any]:
    """The list view of a job (ListProcessingJobs)."""
    return {
        "job_name": job.job_name,
        "program": job.request.builtin or job.request.entry_point,
        "status": job.status,
        "created_at": job.created_at.isoformat(),
        "ended_at": job.ended_at.isoformat() if job.ended_at else None,
        "outputs": [o.model_dump() for o in job.outputs],
        "failure_reason": job.failure_reason,
    }
