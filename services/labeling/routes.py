"""The labeling HTTP API: workforces, labeling jobs (CreateLabelingJob, DescribeLabelingJob,
ListLabelingJobs, StopLabelingJob, export) and the annotators' task routes the page calls.

Workforce creation issues keys, so it needs `admin`; jobs need `label`; reading needs `read`.
Claiming, skipping and answering tasks are the data path of labelling: `label`, not audited (each
answer is its own stored record and a `LabelingTaskSubmitted` event).
"""

from __future__ import annotations

from typing import Annotated, Any

from cairn.auth import CurrentPrincipal, requires
from cairn.contracts.labeling_events import WORKFORCE_NAME_PATTERN, LabelingJobRequested
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from services.labeling.completion import JobCompletion
from services.labeling.domain import Answer, LabelingJob, Workforce
from services.labeling.handlers import LabelingHandlers
from services.labeling.tasks import Tasks

workforces = APIRouter(prefix="/workforces", tags=["workforces"])
jobs = APIRouter(prefix="/labeling-jobs", tags=["labeling-jobs"])
annotators = APIRouter(tags=["annotators"])


def get_handlers(request: Request) -> LabelingHandlers:
    handlers: LabelingHandlers = request.app.state.labeling
    return handlers


def get_tasks(request: Request) -> Tasks:
    tasks: Tasks = request.app.state.labeling_tasks
    return tasks


def get_completion(request: Request) -> JobCompletion:
    completion: JobCompletion = request.app.state.labeling_completion
    return completion


Handlers = Annotated[LabelingHandlers, Depends(get_handlers)]
Completion = Annotated[JobCompletion, Depends(get_completion)]
TaskQueue = Annotated[Tasks, Depends(get_tasks)]


class WorkforceRequest(BaseModel):
    workforce_name: str = Field(pattern=WORKFORCE_NAME_PATTERN)
    members: list[str] = Field(min_length=1, max_length=500)


def workforce_summary(workforce: Workforce) -> dict[str, Any]:
    return {
        "workforce_name": workforce.workforce_name,
        "members": [m.model_dump() for m in workforce.members],
        "created_by": workforce.created_by,
        "created_at": workforce.created_at.isoformat(),
    }


def job_summary(job: LabelingJob) -> dict[str, Any]:
    request = job.request
    return {
        "job_name": job.job_name,
        "status": job.status,
        "task_type": request.task_type,
        "dataset_uri": request.dataset_uri,
        "labels": request.labels,
        "workforce_name": request.workforce_name,
        "workers_per_item": request.workers_per_item,
        "item_count": job.item_count,
        "items_done": job.items_done,
        "annotations": job.annotations,
        "label_counters": job.counters.model_dump(),
        "output_dataset_uri": job.output_versions[-1] if job.output_versions else None,
        "output_versions": job.output_versions,
        "failure_reason": job.failure_reason,
        "pending_export": job.pending_export,
        "created_by": job.created_by,
        "created_at": job.created_at.isoformat(),
        "updated_at": job.updated_at.isoformat(),
    }


@workforces.post("", status_code=201, dependencies=[requires("admin", action="workforce.create")])
async def create_workforce(
    body: WorkforceRequest, handlers: Handlers, principal: CurrentPrincipal
) -> dict[str, Any]:
    """The tokens are in this answer only: hand each member theirs."""
    workforce, tokens = await handlers.create_workforce(
        body.workforce_name, body.members, principal
    )
    return {**workforce_summary(workforce), "tokens": tokens}


@workforces.get("", dependencies=[requires("read")])
async def list_workforces(handlers: Handlers) -> dict[str, Any]:
    return {"workforces": [workforce_summary(w) for w in await handlers.list_workforces()]}


@workforces.get("/{workforce_name}", dependencies=[requires("read")])
async def describe_workforce(workforce_name: str, handlers: Handlers) -> dict[str, Any]:
    return workforce_summary(await handlers.workforce(workforce_name))


@jobs.post("", status_code=202, dependencies=[requires("label", action="labeling_job.create")])
async def create_labeling_job(
    body: LabelingJobRequested, handlers: Handlers, principal: CurrentPrincipal
) -> dict[str, Any]:
    envelope = await handlers.create(body, principal)
    return {
        "job_name": body.job_name,
        "event_id": str(envelope.event_id),
        "correlation_id": envelope.correlation_id,
    }


@jobs.get("", dependencies=[requires("read")])
async def list_labeling_jobs(handlers: Handlers) -> dict[str, Any]:
    return {"labeling_jobs": [job_summary(job) for job in await handlers.list_jobs()]}


@jobs.get("/{job_name}", dependencies=[requires("read")])
async def describe_labeling_job(job_name: str, handlers: Handlers) -> dict[str, Any]:
    job = await handlers.describe(job_name)
    return {
        **job_summary(job),
        "agreement": job.agreement,
        "request": job.request.model_dump(mode="json"),
    }


@jobs.get("/{job_name}/quality", dependencies=[requires("read")])
async def labeling_job_quality(job_name: str, handlers: Handlers) -> dict[str, Any]:
    """Agreement and per-annotator quality of the answers so far (the admin page)."""
    job = await handlers.describe(job_name)
    result = await handlers.consolidated(job)
    queue = await handlers.queue(job_name)
    return {
        **job_summary(job),
        "items_done": queue.items_done(),
        "annotations": queue.annotations(),
        "agreement": result.agreement,
    }


@jobs.post("/{job_name}/stop", dependencies=[requires("label", action="labeling_job.stop")])
async def stop_labeling_job(job_name: str, handlers: Handlers) -> dict[str, Any]:
    return job_summary(await handlers.stop(job_name))


@jobs.post(
    "/{job_name}/export",
    status_code=202,
    dependencies=[requires("label", action="labeling_job.export")],
)
async def export_labeling_job(job_name: str, completion: Completion) -> dict[str, Any]:
    """Consolidate the answers so far into a new version of `<job>-labels`."""
    return job_summary(await completion.export(job_name))


@annotators.get("/annotator/jobs", dependencies=[requires("label")])
async def my_labeling_jobs(tasks: TaskQueue, principal: CurrentPrincipal) -> dict[str, Any]:
    return {"principal": principal.name, "labeling_jobs": await tasks.my_jobs(principal)}


@annotators.post(
    "/labeling-jobs/{job_name}/tasks/next", dependencies=[requires("label", audit=False)]
)
async def next_task(job_name: str, tasks: TaskQueue, principal: CurrentPrincipal) -> dict[str, Any]:
    """The caller's task: the one they hold, else a new lease on the next item that needs them."""
    return await tasks.next_task(job_name, principal)


@annotators.post(
    "/labeling-jobs/{job_name}/tasks/{item_id}/skip",
    dependencies=[requires("label", audit=False)],
)
async def skip_task(
    job_name: str, item_id: str, tasks: TaskQueue, principal: CurrentPrincipal
) -> dict[str, Any]:
    await tasks.skip(job_name, item_id, principal)
    return {"job_name": job_name, "item_id": item_id, "skipped": True}


@annotators.post(
    "/labeling-jobs/{job_name}/tasks/{item_id}/answer",
    status_code=201,
    dependencies=[requires("label", audit=False)],
)
async def answer_task(
    job_name: str, item_id: str, body: Answer, tasks: TaskQueue, principal: CurrentPrincipal
) -> dict[str, Any]:
    annotation = await tasks.submit(job_name, item_id, body, principal)
    return annotation.model_dump(mode="json")


@annotators.get("/labeling-jobs/{job_name}/items/{item_id}/image", dependencies=[requires("label")])
async def item_image(
    job_name: str, item_id: str, tasks: TaskQueue, principal: CurrentPrincipal
) -> Response:
    data, media_type = await tasks.image(job_name, item_id, principal)
    return Response(data, media_type=media_type, headers={"Cache-Control": "private, max-age=300"})
