"""The annotators' side of a job: claim the next task, skip it, submit an answer, see an image.

An annotator is the member of the job's workforce whose key signed the request. A submission is
stored create-only under the item and the annotator before the queue records it, then announced
(`LabelingTaskSubmitted`): an answer acknowledged is never lost, never stored twice.

Hooks for auto-labelling and active learning: `set_machine_labels` takes items off the people's
queue with a model's label; `set_priorities` reorders what is offered (least confident first).
"""

from __future__ import annotations

import asyncio
import mimetypes
from typing import Any

from cairn.auth.principal import Principal
from cairn.contracts.envelope import utc_now
from cairn.contracts.labeling_events import LabelingTaskSubmitted
from cairn.errors import Forbidden, InvalidInput, NotFound, PreconditionFailed
from cairn.namespaces import confine

from services.labeling.domain import (
    JOBS,
    AlreadyAnswered,
    Annotation,
    Answer,
    Item,
    LabelingJob,
    Queue,
    annotation_key,
    check_answer,
    check_submission,
    claim,
    job_key,
    offer_order,
    record_answer,
    record_skip,
)
from services.labeling.handlers import LabelingHandlers


class Tasks:
    def __init__(self, handlers: LabelingHandlers) -> None:
        self.handlers = handlers

    async def annotator(self, job: LabelingJob, principal: Principal) -> str:
        """The member name of the caller in the job's workforce (403 for anyone else)."""
        workforce = await self.handlers.workforce(job.request.workforce_name)
        member = workforce.member_with_key(principal.key_id)
        if member is None:
            raise Forbidden(
                f"{principal.name} is not a member of workforce {workforce.workforce_name!r}"
            )
        return member.name

    async def my_jobs(self, principal: Principal) -> list[dict[str, Any]]:
        """Jobs in progress whose workforce holds the caller's key, with the caller's share."""
        mine: list[dict[str, Any]] = []
        for job in await self.handlers.list_jobs():
            if job.status != "InProgress":
                continue
            workforce = await self.handlers.workforce(job.request.workforce_name)
            member = workforce.member_with_key(principal.key_id)
            if member is None:
                continue
            queue = await self.handlers.queue(job.job_name)
            answered = sum(member.name in s.answered for s in queue.items.values())
            mine.append(
                {
                    "job_name": job.job_name,
                    "task_type": job.request.task_type,
                    "annotator": member.name,
                    "answered_by_me": answered,
                    "items_done": queue.items_done(),
                    "items_total": len(queue.order),
                }
            )
        return mine

    async def _open_job(self, job_name: str, principal: Principal) -> tuple[LabelingJob, str]:
        job = await self.handlers.describe(job_name)
        annotator = await self.annotator(job, principal)
        if job.status != "InProgress":
            raise InvalidInput(f"labeling job {job_name!r} is {job.status}; it takes no answers")
        return job, annotator

    async def _item(self, job_name: str, item_id: str) -> Item:
        items = await self.handlers.job_items(job_name)
        found = next((item for item in items.items if item.item_id == item_id), None)
        if found is None:
            raise NotFound(f"item {item_id!r} is not in job {job_name!r}")
        return found

    async def next_task(self, job_name: str, principal: Principal) -> dict[str, Any]:
        job, annotator = await self._open_job(job_name, principal)
        now, lease_s = utc_now(), job.request.task_time_limit_s
        picked: dict[str, Any] = {}

        def take(current: Queue | None) -> Queue:
            assert current is not None
            updated, item_id, lease = claim(current, annotator, now, lease_s)
            picked.update(item_id=item_id, lease=lease)
            return updated

        saved = await asyncio.to_thread(
            self.handlers.queues.update, job_key(job_name, "queue.json"), take
        )
        queue = saved.doc
        progress = {
            "answered_by_me": sum(annotator in s.answered for s in queue.items.values()),
            "items_done": queue.items_done(),
            "items_total": len(queue.order),
        }
        body: dict[str, Any] = {
            "job_name": job_name,
            "annotator": annotator,
            "task_type": job.request.task_type,
            "labels": job.request.labels,
            "instructions": job.request.instructions,
            "progress": progress,
            "task": None,
        }
        if picked["item_id"] is not None:
            item = await self._item(job_name, picked["item_id"])
            body["task"] = {
                "item_id": item.item_id,
                "text": item.text,
                "fields": item.fields,
                "has_image": item.image_key is not None,
                "lease_expires_at": picked["lease"].expires_at.isoformat(),
            }
        return body

    async def skip(self, job_name: str, item_id: str, principal: Principal) -> None:
        _, annotator = await self._open_job(job_name, principal)
        await asyncio.to_thread(
            self.handlers.queues.update,
            job_key(job_name, "queue.json"),
            lambda current: record_skip(current, item_id, annotator),  # type: ignore[arg-type]
        )

    async def submit(
        self, job_name: str, item_id: str, answer: Answer, principal: Principal
    ) -> Annotation:
        job, annotator = await self._open_job(job_name, principal)
        checked = check_answer(job.request, answer)
        queue = await self.handlers.queue(job_name)
        check_submission(queue, item_id, annotator, utc_now())
        annotation = Annotation(
            **checked.model_dump(),
            job_name=job_name,
            item_id=item_id,
            annotator=annotator,
            key_id=principal.key_id,
        )
        key = annotation_key(job_name, item_id, annotator)
        try:
            await asyncio.to_thread(self.handlers.annotations.create, key, annotation)
        except PreconditionFailed:
            await self._record(job_name, item_id, annotator)
            raise AlreadyAnswered(f"{annotator} already answered item {item_id!r}") from None
        await self._record(job_name, item_id, annotator)
        await self.handlers.platform.publish(
            LabelingTaskSubmitted(
                job_name=job_name,
                item_id=item_id,
                annotator=annotator,
                annotation_key=f"{JOBS}/{key}",
            )
        )
        return annotation

    async def _record(self, job_name: str, item_id: str, annotator: str) -> None:
        await asyncio.to_thread(
            self.handlers.queues.update,
            job_key(job_name, "queue.json"),
            lambda current: record_answer(current, item_id, annotator),  # type: ignore[arg-type]
        )

    async def image(self, job_name: str, item_id: str, principal: Principal) -> tuple[bytes, str]:
        """An item's image from the store, for its job's annotators (and admins) only."""
        job = await self.handlers.describe(job_name)
        if "admin" not in principal.scopes:
            await self.annotator(job, principal)
        item = await self._item(job_name, item_id)
        if item.image_key is None:
            raise NotFound(f"item {item_id!r} has no image")
        key = confine(item.image_key, field="image_column", store=self.handlers.store)
        info = await asyncio.to_thread(self.handlers.store.stat, key)
        if info.size > self.handlers.settings.max_image_bytes:
            raise InvalidInput(f"image {key} is larger than the page is sent", key=key)
        data = await asyncio.to_thread(self.handlers.store.get_bytes, key)
        return data, mimetypes.guess_type(key)[0] or "application/octet-stream"

    # Hooks for auto-labelling ----------------------------------------------------------------

    async def set_machine_labels(
        self, job_name: str, labels: dict[str, tuple[str, float]]
    ) -> Queue:
        """Label items with a model's answer (label, confidence); people are no longer asked."""
        job = await self.handlers.describe(job_name)
        unknown = sorted({label for label, _ in labels.values()} - set(job.request.labels))
        if unknown:
            raise InvalidInput(f"labels not in the job's set: {', '.join(unknown)}")

        def label(current: Queue | None) -> Queue:
            assert current is not None
            updated = current.model_copy(deep=True)
            for item_id, (value, confidence) in labels.items():
                state = updated.items.get(item_id)
                if state is not None and not updated.done(item_id):
                    state.machine_label, state.machine_confidence = value, confidence
                    state.leases = []
            return updated

        saved = await asyncio.to_thread(
            self.handlers.queues.update, job_key(job_name, "queue.json"), label
        )
        return saved.doc

    async def set_priorities(self, job_name: str, confidence: dict[str, float]) -> Queue:
        """Offer the items the current model is least sure of first (unscored items last)."""
        items = await self.handlers.job_items(job_name)
        scored = [
            item.model_copy(update={"score": confidence.get(item.item_id)}) for item in items.items
        ]
        order = offer_order(scored, "uncertainty")

        def reorder(current: Queue | None) -> Queue:
            assert current is not None
            return current.model_copy(update={"order": order})

        saved = await asyncio.to_thread(
            self.handlers.queues.update, job_key(job_name, "queue.json"), reorder
        )
        return saved.doc
