"""The human review queue's documents and rules (Augmented AI): pure, no I/O.

Layout:

    labeling/reviews/<review_id>.json                     ReviewTask (one per HumanReviewRequested)
    outputs/labeling/reviews/<dataset>/<review_id>.csv    the answered rows, a dataset's source

A task is created create-only under the gateway's `review_id`, so a redelivered request never
makes a second task. A reviewer claims a task (a lease), answers it once; the answer is stored in
the task before anything is published, and `published` records that its events went out, so a
service killed in between publishes them when it starts again.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from datetime import datetime, timedelta
from typing import Any, Literal

from cairn.contracts.review_events import HumanReviewRequested, Payload
from cairn.errors import Conflict, InvalidInput, NotFound
from pydantic import BaseModel, Field

REVIEWS = "labeling/reviews"
REVIEW_ROWS = "outputs/labeling/reviews"
ReviewStatus = Literal["Pending", "Completed"]
INPUT_KEYS = ("instances", "inputs", "data", "features")


class ReviewTaskNotFound(NotFound):
    code = "review_task_not_found"


class ReviewTaskTaken(Conflict):
    code = "review_task_taken"


class ReviewAlreadyAnswered(Conflict):
    code = "review_already_answered"


class ReviewLeaseExpired(Conflict):
    code = "review_lease_expired"


class ReviewAnswerInvalid(InvalidInput):
    code = "review_answer_invalid"


class ReviewTask(BaseModel):
    """One answer of a live endpoint that a person should check, and what they said."""

    request: HumanReviewRequested
    row_count: int = Field(ge=1, description="Rows of the request: one answer each.")
    status: ReviewStatus = "Pending"
    claimed_by: str | None = None
    lease_expires_at: datetime | None = None
    answer: list[str] | None = None
    reviewer: str | None = None
    completed_at: datetime | None = None
    published: bool = Field(default=False, description="Its completion events went out.")

    @property
    def review_id(self) -> str:
        return self.request.review_id

    def summary(self) -> dict[str, Any]:
        """What `cairn review list` shows: no payloads."""
        request = self.request
        return {
            "review_id": request.review_id,
            "endpoint_name": request.endpoint_name,
            "variant_name": request.variant_name,
            "inference_id": request.inference_id,
            "requested_at": request.requested_at,
            "reasons": request.reasons,
            "status": self.status,
            "claimed_by": self.claimed_by,
            "reviewer": self.reviewer,
            "answer": self.answer,
        }


def payload_text(payload: Payload) -> str:
    if payload.encoding == "base64":
        return base64.b64decode(payload.data).decode("utf-8", errors="replace")
    return payload.data


def input_rows(payload: Payload) -> list[list[Any]]:
    """The request's rows as lists of values (one item per row for shapes with no columns)."""
    text = payload_text(payload)
    if payload.content_type == "text/csv":
        return [row for row in csv.reader(io.StringIO(text)) if row]
    try:
        if payload.content_type == "application/jsonlines":
            return [_cells(json.loads(line)) for line in text.splitlines() if line.strip()]
        if payload.content_type == "application/json":
            document = json.loads(text)
            if isinstance(document, dict):
                for key in INPUT_KEYS:
                    if isinstance(document.get(key), list):
                        document = document[key]
                        break
            if isinstance(document, list) and document and isinstance(document[0], list | dict):
                return [_cells(row) for row in document]
            return [_cells(document)]
    except json.JSONDecodeError:
        pass
    return [[text]]


def _cells(row: Any) -> list[Any]:
    if isinstance(row, list):
        return row
    if isinstance(row, dict):
        return list(row.values())
    return [row]


def new_task(request: HumanReviewRequested) -> ReviewTask:
    return ReviewTask(request=request, row_count=max(1, len(input_rows(request.input))))


def _holder(task: ReviewTask, now: datetime) -> str | None:
    """Who holds the task now (None when unclaimed or the lease expired)."""
    if task.claimed_by is None or task.lease_expires_at is None or task.lease_expires_at <= now:
        return None
    return task.claimed_by


def claimable(task: ReviewTask, reviewer: str, now: datetime) -> bool:
    return task.status == "Pending" and _holder(task, now) in (None, reviewer)


def claimed(task: ReviewTask, reviewer: str, now: datetime, lease_s: float) -> ReviewTask:
    """The task leased to `reviewer` (again, when they hold it already)."""
    if task.status == "Completed":
        raise ReviewAlreadyAnswered(
            f"review {task.review_id} was answered already", review_id=task.review_id
        )
    holder = _holder(task, now)
    if holder not in (None, reviewer):
        raise ReviewTaskTaken(
            f"review {task.review_id} is claimed by {holder} until {task.lease_expires_at}",
            review_id=task.review_id,
        )
    expires = now + timedelta(seconds=lease_s)
    return task.model_copy(update={"claimed_by": reviewer, "lease_expires_at": expires})


def answered(task: ReviewTask, reviewer: str, labels: list[str], now: datetime) -> ReviewTask:
    """The task completed by `reviewer`, who must hold its lease; labels from the loop's set."""
    if task.status == "Completed":
        if task.reviewer == reviewer and task.answer == labels:
            return task  # the same answer again (a retried request): nothing changes
        raise ReviewAlreadyAnswered(
            f"review {task.review_id} was answered already", review_id=task.review_id
        )
    if task.claimed_by != reviewer:
        raise ReviewTaskTaken(
            f"claim review {task.review_id} before answering it", review_id=task.review_id
        )
    if _holder(task, now) != reviewer:
        raise ReviewLeaseExpired(
            f"your claim on review {task.review_id} expired at {task.lease_expires_at}; "
            "claim it again",
            review_id=task.review_id,
        )
    allowed = task.request.labels
    unknown = sorted({label for label in labels if label not in allowed})
    if unknown:
        raise ReviewAnswerInvalid(
            f"labels: {unknown} are not in this review's label set {allowed}",
            field="labels",
            allowed=allowed,
        )
    if len(labels) != task.row_count:
        raise ReviewAnswerInvalid(
            f"labels: the request has {task.row_count} row(s), one label each; got {len(labels)}",
            field="labels",
            row_count=task.row_count,
        )
    return task.model_copy(
        update={
            "status": "Completed",
            "answer": labels,
            "reviewer": reviewer,
            "completed_at": now,
            "lease_expires_at": None,
        }
    )


def _typed(label: str) -> int | float | str:
    """A label as the monitor compares it with predictions: numbers as numbers."""
    for kind in (int, float):
        try:
            return kind(label)
        except ValueError:
            continue
    return label


def ground_truth(task: ReviewTask) -> dict[str, int | float | str]:
    """Inference id -> true label, keyed as the monitor keys captured rows (`id`, or `id:i`)."""
    inference_id = task.request.inference_id
    if inference_id is None or task.answer is None:
        return {}
    if len(task.answer) == 1:
        return {inference_id: _typed(task.answer[0])}
    return {f"{inference_id}:{index}": _typed(label) for index, label in enumerate(task.answer)}


def rows_key(task: ReviewTask) -> str:
    return f"{REVIEW_ROWS}/{task.request.review_dataset}/{task.review_id}.csv"


def rows_prefix(dataset: str) -> str:
    return f"{REVIEW_ROWS}/{dataset}/"


def dataset_rows(task: ReviewTask) -> bytes:
    """The answered rows as CSV: the input's values (`x0`, `x1`, ...) and the reviewer's label."""
    rows = input_rows(task.request.input)
    width = max((len(row) for row in rows), default=0)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["review_id", "inference_id", "row", *(f"x{i}" for i in range(width)), "label"])
    for index, (row, label) in enumerate(zip(rows, task.answer or [], strict=False)):
        cells = [json.dumps(cell) if isinstance(cell, list | dict) else cell for cell in row]
        cells += [""] * (width - len(cells))
        writer.writerow([task.review_id, task.request.inference_id or "", index, *cells, label])
    return out.getvalue().encode()
