"""The transform-jobs HTTP API (CreateTransformJob, DescribeTransformJob, ListTransformJobs,
StopTransformJob). Creating a job that exists with the same request resumes it."""

from __future__ import annotations

from typing import Annotated, Any

from cairn.auth import CurrentPrincipal, requires
from cairn.contracts.batch_events import TransformJobRequested
from fastapi import APIRouter, Depends, Request

from services.batch.domain import summary
from services.batch.handlers import CREATE_ACTION, STOP_ACTION, BatchHandlers

router = APIRouter(prefix="/transform-jobs", tags=["transform-jobs"])


def get_handlers(request: Request) -> BatchHandlers:
    """The batch service layer, set on the app by `create_service`."""
    handlers: BatchHandlers = request.app.state.batch
    return handlers


Handlers = Annotated[BatchHandlers, Depends(get_handlers)]


@router.post("", status_code=202, dependencies=[requires("deploy", action=CREATE_ACTION)])
async def create_transform_job(
    body: TransformJobRequested, handlers: Handlers, principal: CurrentPrincipal
) -> dict[str, Any]:
    accepted = await handlers.create(body, principal)
    return {
        **summary(accepted.job),
        "resumed": accepted.resumed,
        "event_id": str(accepted.envelope.event_id),
        "correlation_id": accepted.envelope.correlation_id,
    }


@router.get("", dependencies=[requires("read")])
async def list_transform_jobs(handlers: Handlers) -> dict[str, Any]:
    jobs = sorted(await handlers.list_jobs(), key=lambda job: job.created_at, reverse=True)
    return {"transform_jobs": [summary(job) for job in jobs]}


@router.get("/{job_name}", dependencies=[requires("read")])
async def describe_transform_job(job_name: str, handlers: Handlers) -> dict[str, Any]:
    job = await handlers.describe(job_name)
    return {**summary(job), "request": job.request.model_dump(mode="json")}


@router.post("/{job_name}/stop", dependencies=[requires("deploy", action=STOP_ACTION)])
async def stop_transform_job(job_name: str, handlers: Handlers) -> dict[str, Any]:
    return summary(await handlers.stop(job_name))
