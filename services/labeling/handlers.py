"""The labeling service layer: workforces, jobs, their start, consolidation and export.

A job starts from `LabelingJobRequested` (the HTTP route checks the request first and publishes
it); its items, queue and job documents are written create-only, so a redelivered request starts
nothing twice. The sweep repairs queues from stored annotations, reports progress and, once every
item has its answers, consolidates and asks the ingest service to register the labels; the job
completes when `DatasetIngested` names its output. The annotators' side is in `tasks`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from cairn.auth.keys import issue_key
from cairn.auth.principal import Principal
from cairn.auth.sealing import SecretBox
from cairn.contracts.envelope import Envelope, utc_now
from cairn.contracts.labeling_events import (
    LabelingJobFailed,
    LabelingJobRequested,
    LabelingJobStarted,
    LabelingJobStopped,
)
from cairn.datasets import resolve_dataset_uri
from cairn.documents import DocumentStore
from cairn.errors import CairnError, Conflict, NotFound, PreconditionFailed
from cairn.ports import Platform
from cairn.store.base import ObjectStore

from services.labeling import consolidate
from services.labeling.config import LabelingSettings
from services.labeling.domain import (
    CLASSIFICATION_TASKS,
    JOBS,
    TERMINAL,
    WORKFORCES,
    Annotation,
    JobItems,
    LabelingJob,
    Member,
    Queue,
    Workforce,
    check_member_names,
    check_request,
    counters,
    job_key,
    new_queue,
)
from services.labeling.output import read_items

log = logging.getLogger("cairn.labeling")
ANNOTATOR_KEY_NAME = "labeler:{workforce}:{member}"


class LabelingHandlers:
    def __init__(
        self, store: ObjectStore, box: SecretBox, settings: LabelingSettings, platform: Platform
    ) -> None:
        self.store = store
        self.box = box
        self.settings = settings
        self.platform = platform
        self.workforces: DocumentStore[Workforce] = DocumentStore(store, Workforce, WORKFORCES)
        self.jobs: DocumentStore[LabelingJob] = DocumentStore(store, LabelingJob, JOBS)
        self.items: DocumentStore[JobItems] = DocumentStore(store, JobItems, JOBS)
        self.queues: DocumentStore[Queue] = DocumentStore(store, Queue, JOBS)
        self.annotations: DocumentStore[Annotation] = DocumentStore(store, Annotation, JOBS)

    # Workforces ------------------------------------------------------------------------------

    async def create_workforce(
        self, name: str, members: list[str], principal: Principal
    ) -> tuple[Workforce, dict[str, str]]:
        """A named set of people, each with a new `label` key; the tokens are shown once."""
        check_member_names(members)
        if await asyncio.to_thread(self.workforces.get_or_none, f"{name}.json") is not None:
            raise Conflict(f"workforce {name!r} already exists")
        tokens: dict[str, str] = {}
        issued: list[Member] = []
        for member in members:
            key = await asyncio.to_thread(
                issue_key,
                self.store,
                self.box,
                name=ANNOTATOR_KEY_NAME.format(workforce=name, member=member),
                scopes=["label"],
                created_by=principal.name,
                description=f"annotator {member} of workforce {name}",
            )
            tokens[member] = key.token
            issued.append(Member(name=member, key_id=key.key.key_id))
        workforce = Workforce(workforce_name=name, members=issued, created_by=principal.name)
        try:
            await asyncio.to_thread(self.workforces.create, f"{name}.json", workforce)
        except PreconditionFailed:
            raise Conflict(f"workforce {name!r} already exists") from None
        return workforce, tokens

    async def workforce(self, name: str) -> Workforce:
        found = await asyncio.to_thread(self.workforces.get_or_none, f"{name}.json")
        if found is None:
            raise NotFound(f"no workforce {name!r}", workforce=name)
        return found.doc

    async def list_workforces(self) -> list[Workforce]:
        return [v.doc for v in await asyncio.to_thread(self.workforces.list)]

    # Jobs ------------------------------------------------------------------------------------

    async def check(self, request: LabelingJobRequested) -> None:
        """Everything a request can be refused for before it is queued (4xx errors)."""
        workforce = await self.workforce(request.workforce_name)
        check_request(request, workforce)
        await asyncio.to_thread(resolve_dataset_uri, self.store, request.dataset_uri)

    async def create(self, request: LabelingJobRequested, principal: Principal) -> Envelope[Any]:
        """Check, record the job as Pending (so it can be described at once), then request it."""
        await self.check(request)
        pending = LabelingJob(request=request, status="Pending", created_by=principal.name)
        try:
            await asyncio.to_thread(self.jobs.create, job_key(request.job_name), pending)
        except PreconditionFailed:
            existing = await self.describe(request.job_name)
            if existing.request != request:
                raise Conflict(
                    f"labeling job {request.job_name!r} exists with another request"
                ) from None
        return await self.platform.publish(request)

    async def on_requested(self, envelope: Envelope[LabelingJobRequested]) -> None:
        request = envelope.data
        principal = await self.platform.principal_of(envelope)
        try:
            await self.check(request)
            started = await self.start(request, principal.name)
        except CairnError as error:
            if not error.is_refusal:
                raise
            await self._fail(request, error.message, envelope)
            return
        if started:
            job = await self.describe(request.job_name)
            await self.platform.publish(
                LabelingJobStarted(
                    job_name=request.job_name,
                    dataset_uri=request.dataset_uri,
                    item_count=job.item_count,
                    workforce_name=request.workforce_name,
                ),
                cause=envelope,
            )

    async def start(self, request: LabelingJobRequested, requested_by: str) -> bool:
        """Items and queue (create-only), then the job goes InProgress: a retry finishes a start.

        False when the job had already started (a redelivered request).
        """
        name = request.job_name
        existing = await asyncio.to_thread(self.jobs.get_or_none, job_key(name))
        if existing is not None:
            if existing.doc.request != request:
                raise Conflict(f"labeling job {name!r} exists with another request")
            if existing.doc.status != "Pending":
                return False
        items, _ = await asyncio.to_thread(read_items, self.store, request, self.settings.max_items)
        with contextlib.suppress(PreconditionFailed):
            await asyncio.to_thread(
                self.items.create, job_key(name, "items.json"), JobItems(job_name=name, items=items)
            )
        queue = new_queue(name, request.workers_per_item, items, request.order)
        with contextlib.suppress(PreconditionFailed):
            await asyncio.to_thread(self.queues.create, job_key(name, "queue.json"), queue)

        def started(current: LabelingJob | None) -> LabelingJob:
            job = current or LabelingJob(request=request, created_by=requested_by)
            if job.status != "Pending" and current is not None:
                return job
            return job.model_copy(
                update={
                    "status": "InProgress",
                    "item_count": len(items),
                    "counters": counters(queue),
                    "updated_at": utc_now(),
                }
            )

        await asyncio.to_thread(self.jobs.update, job_key(name), started)
        return True

    async def _fail(self, request: LabelingJobRequested, reason: str, cause: Envelope[Any]) -> None:
        def failed(current: LabelingJob | None) -> LabelingJob:
            job = current or LabelingJob(request=request)
            if job.request != request or job.status not in ("Pending", "InProgress"):
                return job  # another job of that name, or one already past its start
            return job.model_copy(
                update={"status": "Failed", "failure_reason": reason, "updated_at": utc_now()}
            )

        await asyncio.to_thread(self.jobs.update, job_key(request.job_name), failed)
        await self.platform.publish(
            LabelingJobFailed(job_name=request.job_name, reason=reason), cause=cause
        )

    async def describe(self, job_name: str) -> LabelingJob:
        found = await asyncio.to_thread(self.jobs.get_or_none, job_key(job_name))
        if found is None:
            raise NotFound(f"no labeling job {job_name!r}", job_name=job_name)
        return found.doc

    async def list_jobs(self) -> list[LabelingJob]:
        keys = await asyncio.to_thread(self.jobs.keys)
        names = sorted({key.split("/", 1)[0] for key in keys if key.endswith("/job.json")})
        jobs = [await self.describe(name) for name in names]
        return sorted(jobs, key=lambda job: job.created_at, reverse=True)

    async def queue(self, job_name: str) -> Queue:
        found = await asyncio.to_thread(self.queues.get_or_none, job_key(job_name, "queue.json"))
        if found is None:
            raise NotFound(f"labeling job {job_name!r} has no queue", job_name=job_name)
        return found.doc

    async def job_items(self, job_name: str) -> JobItems:
        found = await asyncio.to_thread(self.items.get_or_none, job_key(job_name, "items.json"))
        if found is None:
            raise NotFound(f"labeling job {job_name!r} has no items", job_name=job_name)
        return found.doc

    async def stop(self, job_name: str) -> LabelingJob:
        job = await self.describe(job_name)
        if job.status in TERMINAL:
            raise Conflict(f"labeling job {job_name!r} is already {job.status}")

        def stopped(current: LabelingJob | None) -> LabelingJob:
            assert current is not None
            if current.status in TERMINAL:
                return current
            return current.model_copy(update={"status": "Stopped", "updated_at": utc_now()})

        saved = await asyncio.to_thread(self.jobs.update, job_key(job_name), stopped)
        await self.platform.publish(
            LabelingJobStopped(job_name=job_name, label_counters=saved.doc.counters)
        )
        return saved.doc

    # Consolidation ---------------------------------------------------------------------------

    async def stored_annotations(self, job_name: str) -> list[Annotation]:
        found = await asyncio.to_thread(self.annotations.list, f"{job_name}/annotations/")
        return [versioned.doc for versioned in found]

    async def consolidated(self, job: LabelingJob) -> consolidate.Consolidation:
        annotations = await self.stored_annotations(job.job_name)
        request = job.request
        if request.task_type in CLASSIFICATION_TASKS:
            return await asyncio.to_thread(
                consolidate.classify,
                annotations,
                request.consolidation,
                self.settings.dawid_skene_iterations,
            )
        if request.task_type == "multi-label":
            return consolidate.multi_label(annotations, request.labels)
        return consolidate.boxes(annotations, request.iou_threshold)
