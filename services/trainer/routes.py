"""The training-jobs HTTP API (CreateTrainingJob, DescribeTrainingJob, ListTrainingJobs, logs)."""

from __future__ import annotations

from typing import Annotated, Any

from cairn.auth import CurrentPrincipal, requires
from cairn.contracts.events import TrainingJobRequested
from cairn.contracts.tuner_events import TrainingJobStopRequested
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from services.trainer.domain import summary
from services.trainer.handlers import CREATE_ACTION, STOP_ACTION, TrainerHandlers
from services.trainer.locations import approval_allowed

router = APIRouter(prefix="/training-jobs", tags=["training-jobs"])


def get_handlers(request: Request) -> TrainerHandlers:
    """The trainer's service layer, set on the app by `create_service`."""
    handlers: TrainerHandlers = request.app.state.trainer
    return handlers


Handlers = Annotated[TrainerHandlers, Depends(get_handlers)]


@router.post("", status_code=202, dependencies=[requires("train", action=CREATE_ACTION)])
async def create_training_job(
    body: TrainingJobRequested, handlers: Handlers, principal: CurrentPrincipal
) -> dict[str, Any]:
    approval_allowed(body, principal)
    created = await handlers.create(body)
    return {
        **summary(created.job),
        "event_id": str(created.envelope.event_id),
        "correlation_id": created.envelope.correlation_id,
    }


@router.get("", dependencies=[requires("read")])
async def list_training_jobs(handlers: Handlers) -> dict[str, Any]:
    return {"training_jobs": [summary(job) for job in await handlers.list_jobs()]}


@router.get("/{job_name}", dependencies=[requires("read")])
async def describe_training_job(job_name: str, handlers: Handlers) -> dict[str, Any]:
    job = await handlers.describe(job_name)
    return job.model_dump(mode="json")


class StopBody(BaseModel):
    """StopTrainingJob options."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=500)
    keep_partial_model: bool = False


@router.post(
    "/{job_name}/stop", status_code=202, dependencies=[requires("train", action=STOP_ACTION)]
)
async def stop_training_job(
    job_name: str, handlers: Handlers, principal: CurrentPrincipal, body: StopBody | None = None
) -> dict[str, Any]:
    options = body or StopBody()
    job = await handlers.stop(
        TrainingJobStopRequested(
            job_name=job_name,
            reason=options.reason or f"stopped by {principal.name}",
            keep_partial_model=options.keep_partial_model,
        )
    )
    return summary(job)


@router.get("/{job_name}/logs", response_class=PlainTextResponse, dependencies=[requires("read")])
async def training_job_logs(
    job_name: str,
    handlers: Handlers,
    attempt: Annotated[int | None, Query(ge=1, description="Default: the latest.")] = None,
) -> str:
    return await handlers.logs(job_name, attempt)
