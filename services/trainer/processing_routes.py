"""The processing-jobs HTTP API (CreateProcessingJob, DescribeProcessingJob, List, logs)."""

from __future__ import annotations

from typing import Annotated, Any

from cairn.auth import requires
from cairn.contracts.processing_events import ProcessingJobRequested
from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from services.trainer.processing_domain import summary
from services.trainer.processing_handlers import CREATE_ACTION, ProcessingHandlers

router = APIRouter(prefix="/processing-jobs", tags=["processing-jobs"])


def get_handlers(request: Request) -> ProcessingHandlers:
    """The processing service layer, set on the app by `register_processing`."""
    handlers: ProcessingHandlers = request.app.state.processing
    return handlers


Handlers = Annotated[ProcessingHandlers, Depends(get_handlers)]


@router.post("", status_code=202, dependencies=[requires("train", action=CREATE_ACTION)])
async def create_processing_job(body: ProcessingJobRequested, handlers: Handlers) -> dict[str, Any]:
    job, envelope = await handlers.create(body)
    return {
        **summary(job),
        "event_id": str(envelope.event_id),
        "correlation_id": envelope.correlation_id,
    }


@router.get("", dependencies=[requires("read")])
async def list_processing_jobs(handlers: Handlers) -> dict[str, Any]:
    jobs = sorted(await handlers.list_jobs(), key=lambda job: job.created_at, reverse=True)
    return {"processing_jobs": [summary(job) for job in jobs]}


@router.get("/{job_name}", dependencies=[requires("read")])
async def describe_processing_job(job_name: str, handlers: Handlers) -> dict[str, Any]:
    return (await handlers.describe(job_name)).model_dump(mode="json")


@router.get("/{job_name}/logs", response_class=PlainTextResponse, dependencies=[requires("read")])
async def processing_job_logs(job_name: str, handlers: Handlers) -> str:
    return await handlers.logs(job_name)
