"""The tuning-jobs HTTP API (Create/Describe/List/StopHyperParameterTuningJob)."""

from __future__ import annotations

from typing import Annotated, Any

from cairn.auth import CurrentPrincipal, requires
from cairn.contracts.tuner_events import HyperParameterTuningJobRequested
from cairn.errors import Forbidden
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from services.tuner.domain import TuningJob, best_trial, overall_best
from services.tuner.handlers import CREATE_ACTION, STOP_ACTION, TunerHandlers

router = APIRouter(prefix="/tuning-jobs", tags=["tuning-jobs"])


def get_handlers(request: Request) -> TunerHandlers:
    """The tuner's service layer, set on the app by `create_service`."""
    handlers: TunerHandlers = request.app.state.tuner
    return handlers


Handlers = Annotated[TunerHandlers, Depends(get_handlers)]


class StopBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=500)


@router.post("", status_code=202, dependencies=[requires("train", action=CREATE_ACTION)])
async def create_tuning_job(
    body: HyperParameterTuningJobRequested, handlers: Handlers, principal: CurrentPrincipal
) -> dict[str, Any]:
    registration = body.registration
    approving = registration is not None and registration.approval_status == "Approved"
    if approving and not principal.allows("approve"):
        raise Forbidden(
            "registration.approval_status Approved needs the approve scope",
            field="registration.approval_status",
        )
    created = await handlers.create(body)
    return {
        **summary(created.job),
        "event_id": str(created.envelope.event_id),
        "correlation_id": created.envelope.correlation_id,
    }


@router.get("", dependencies=[requires("read")])
async def list_tuning_jobs(handlers: Handlers) -> dict[str, Any]:
    jobs = sorted(await handlers.list_jobs(), key=lambda j: j.created_at, reverse=True)
    return {"tuning_jobs": [summary(job) for job in jobs]}


@router.get("/{tuning_job_name}", dependencies=[requires("read")])
async def describe_tuning_job(tuning_job_name: str, handlers: Handlers) -> dict[str, Any]:
    return describe(await handlers.describe(tuning_job_name))


@router.post(
    "/{tuning_job_name}/stop", status_code=202, dependencies=[requires("train", action=STOP_ACTION)]
)
async def stop_tuning_job(
    tuning_job_name: str,
    handlers: Handlers,
    principal: CurrentPrincipal,
    body: StopBody | None = None,
) -> dict[str, Any]:
    reason = (body.reason if body else "") or f"stopped by {principal.name}"
    return summary(await handlers.stop(tuning_job_name, reason))


def summary(job: TuningJob) -> dict[str, Any]:
    """The list view (ListHyperParameterTuningJobs)."""
    best = best_trial(job)
    return {
        "tuning_job_name": job.tuning_job_name,
        "status": job.status,
        "strategy": job.request.strategy,
        "objective": job.request.objective.model_dump(),
        "created_at": job.created_at.isoformat(),
        "ended_at": job.ended_at.isoformat() if job.ended_at else None,
        "trial_counts": {
            status: job.count(status)
            for status in ("Pending", "InProgress", "Stopping", "Completed", "Failed", "Stopped")
        },
        "max_number_of_training_jobs": job.max_trials,
        "best_training_job": best.model_dump() if best else None,
        "reason": job.end_reason,
    }


def describe(job: TuningJob) -> dict[str, Any]:
    """DescribeHyperParameterTuningJob: the summary, the definition and every trial."""
    overall = overall_best(job) if job.warm_start_trials else None
    return {
        **summary(job),
        "overall_best_training_job": overall.model_dump() if overall else None,
        "random_seed": job.seed,
        "request": job.request.model_dump(mode="json"),
        "warm_start_trials": len(job.warm_start_trials),
        "trials": [
            trial.model_dump(
                mode="json", exclude={"system_attrs", "intermediate", "requested", "stop_sent"}
            )
            for trial in job.trials
        ],
    }
