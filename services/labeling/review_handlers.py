"""The review queue's service layer: tasks in from the gateway, answers out as ground truth.

`HumanReviewRequested` -> a task (create-only: a redelivery finds it and does nothing). A reviewer
with the `label` scope claims a task and answers it: the answer is stored in the task first, then
the answered rows are written under `outputs/labeling/reviews/<dataset>/`, then
`HumanReviewCompleted`, `GroundTruthRecorded` (for the monitor's model-quality checks; only when
the request carried an inference id, which is how the monitor joins it to the capture) and
`DatasetRegistrationRequested` (a new version of the review dataset holding every answer so far)
are published, and the task is marked published. At start, answered tasks not yet marked are
published again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from cairn.contracts.envelope import Envelope, utc_now
from cairn.contracts.events import DatasetRegistrationRequested, GroundTruthRecorded
from cairn.contracts.review_events import HumanReviewCompleted, HumanReviewRequested
from cairn.documents import DocumentStore, Versioned
from cairn.errors import PreconditionFailed
from cairn.ports import Publish
from cairn.store.base import ObjectStore

from services.labeling.review import (
    REVIEWS,
    ReviewAlreadyAnswered,
    ReviewTask,
    ReviewTaskNotFound,
    ReviewTaskTaken,
    answered,
    claimable,
    claimed,
    dataset_rows,
    ground_truth,
    new_task,
    rows_key,
    rows_prefix,
)

log = logging.getLogger("cairn.labeling.review")
DEFAULT_LEASE_S = 300.0


class ReviewQueue:
    """Review tasks in the store; every change a conditional write."""

    def __init__(
        self,
        store: ObjectStore,
        publish: Publish,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.publish = publish
        self.lease_s = lease_s
        self.clock = clock
        self.tasks = DocumentStore(store, ReviewTask, REVIEWS)
        self._unpublished: set[str] = set()

    # Events in ----------------------------------------------------------------------------

    async def on_review_requested(self, envelope: Envelope[HumanReviewRequested]) -> None:
        await asyncio.to_thread(self.add, envelope.data)

    def add(self, request: HumanReviewRequested) -> bool:
        """Queue a task; False when it exists already (a redelivery)."""
        try:
            self.tasks.create(f"{request.review_id}.json", new_task(request))
        except PreconditionFailed:
            return False
        return True

    # Reads --------------------------------------------------------------------------------

    def get(self, review_id: str) -> ReviewTask:
        found = self.tasks.get_or_none(f"{review_id}.json") if _safe(review_id) else None
        if found is None:
            raise ReviewTaskNotFound(f"no review {review_id!r}", review_id=review_id)
        return found.doc

    def find(
        self, status: str | None = None, endpoint_name: str | None = None, limit: int = 100
    ) -> list[ReviewTask]:
        """Tasks, oldest first, filtered by status and endpoint."""
        tasks = [found.doc for found in self.tasks.list()]
        tasks = [
            task
            for task in tasks
            if (status is None or task.status == status)
            and (endpoint_name is None or task.request.endpoint_name == endpoint_name)
        ]
        tasks.sort(key=lambda task: task.request.requested_at)
        return tasks[:limit]

    # Reviewer actions ---------------------------------------------------------------------

    def claim(self, review_id: str, reviewer: str) -> ReviewTask:
        self.get(review_id)  # 404 first
        now = self.clock()
        return self.tasks.update(
            f"{review_id}.json",
            lambda task: claimed(_existing(task, review_id), reviewer, now, self.lease_s),
        ).doc

    def claim_next(self, reviewer: str, endpoint_name: str | None = None) -> ReviewTask | None:
        """The oldest task this reviewer may take (their own claim first); None when none."""
        now = self.clock()
        pending = self.find("Pending", endpoint_name, limit=10_000)
        pending.sort(key=lambda task: task.claimed_by != reviewer)
        for task in pending:
            if not claimable(task, reviewer, now):
                continue
            try:
                return self.claim(task.review_id, reviewer)
            except (PreconditionFailed, ReviewTaskNotFound, ReviewTaskTaken, ReviewAlreadyAnswered):
                continue  # taken or answered meanwhile by someone else: try the next one
        return None

    async def answer(self, review_id: str, reviewer: str, labels: list[str]) -> ReviewTask:
        """Store the answer, then publish what follows from it."""
        await asyncio.to_thread(self.get, review_id)
        now = self.clock()
        stored: Versioned[ReviewTask] = await asyncio.to_thread(
            self.tasks.update,
            f"{review_id}.json",
            lambda task: answered(_existing(task, review_id), reviewer, labels, now),
        )
        if stored.doc.published:
            return stored.doc
        try:
            await self.publish_completion(stored.doc)
        except Exception:  # the answer is stored: it goes out later, the reviewer is done
            log.exception("publishing the completion of review %s failed", review_id)
            self._unpublished.add(review_id)
            return stored.doc
        return await asyncio.to_thread(self.get, review_id)

    # Events out ---------------------------------------------------------------------------

    async def publish_completion(self, task: ReviewTask) -> None:
        """Rows first, then the events, then the mark; safe to run again after a crash."""
        request = task.request
        assert task.answer is not None and task.reviewer is not None
        assert task.completed_at is not None
        await asyncio.to_thread(
            self.store.put_bytes, rows_key(task), dataset_rows(task), content_type="text/csv"
        )
        completed = HumanReviewCompleted(
            review_id=request.review_id,
            endpoint_name=request.endpoint_name,
            inference_id=request.inference_id,
            labels=task.answer,
            reviewer=task.reviewer,
            completed_at=task.completed_at,
            review_dataset=request.review_dataset,
        )
        cause = await self.publish(completed)
        labels = ground_truth(task)
        if labels:
            await self.publish(
                GroundTruthRecorded(endpoint_name=request.endpoint_name, labels=labels),
                cause=cause,
            )
        await self.publish(
            DatasetRegistrationRequested(
                dataset_name=request.review_dataset,
                source_uri=rows_prefix(request.review_dataset),
                format="csv",
            ),
            cause=cause,
        )
        await asyncio.to_thread(
            self.tasks.update,
            f"{request.review_id}.json",
            lambda current: _existing(current, request.review_id).model_copy(
                update={"published": True}
            ),
        )

    async def republish_forever(self, every_s: float = 5.0) -> None:
        """Publish completions stored but not announced: every one at start (a killed service
        leaves them), then those whose publishing failed, until each goes out."""
        scanned = False
        while True:
            try:
                if not scanned:
                    tasks = await asyncio.to_thread(self.find, "Completed", None, 1_000_000)
                    self._unpublished |= {task.review_id for task in tasks if not task.published}
                    scanned = True
                for review_id in sorted(self._unpublished):
                    task = await asyncio.to_thread(self.get, review_id)
                    if not task.published:
                        log.info("publishing the completion of review %s again", review_id)
                        await self.publish_completion(task)
                    self._unpublished.discard(review_id)
            except Exception:
                log.exception("publishing review completions failed; trying again")
            await asyncio.sleep(every_s)


def _existing(task: ReviewTask | None, review_id: str) -> ReviewTask:
    if task is None:
        raise ReviewTaskNotFound(f"no review {review_id!r}", review_id=review_id)
    return task


def _safe(review_id: str) -> bool:
    return bool(review_id) and all(char.isalnum() or char == "-" for char in review_id)
