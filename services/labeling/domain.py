"""Labeling's documents and the work queue's rules: pure, no I/O.

Layout under the service's private prefix `labeling/`:

    labeling/workforces/<workforce>.json                      Workforce (members and their key ids)
    labeling/jobs/<job>/job.json                              LabelingJob (request, status, counts)
    labeling/jobs/<job>/items.json                            JobItems (written once at start)
    labeling/jobs/<job>/queue.json                            Queue (leases, answers, skips)
    labeling/jobs/<job>/annotations/<item>/<annotator>.json   Annotation (create-only)

An annotation is created (create-only) before the queue records it, so an answer the service
acknowledged is never lost, and a second answer of the same annotator for the same item cannot be
stored: a service killed between the two writes is repaired from the annotations (`reconcile`).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, Literal

from cairn.contracts.envelope import utc_now
from cairn.contracts.labeling_events import LabelCounters, LabelingJobRequested
from cairn.errors import Conflict, InvalidInput
from pydantic import BaseModel, Field

WORKFORCES = "labeling/workforces"
JOBS = "labeling/jobs"
OUTPUT_PREFIX = "outputs/labeling"
CLASSIFICATION_TASKS = frozenset(
    {"text-classification", "tabular-classification", "image-classification"}
)
IMAGE_TASKS = frozenset({"image-classification", "bounding-box"})
MEMBER_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,30}$"
_MEMBER_RE = re.compile(MEMBER_PATTERN)

JobStatus = Literal["Pending", "InProgress", "Consolidating", "Completed", "Failed", "Stopped"]
TERMINAL = frozenset({"Completed", "Failed", "Stopped"})
LabeledBy = Literal["human", "machine"]


class LeaseExpired(Conflict):
    code = "lease_expired"


class AlreadyAnswered(Conflict):
    code = "already_answered"


class Member(BaseModel):
    """One person of a workforce and the `label`-scoped key they sign in with."""

    name: str
    key_id: str


class Workforce(BaseModel):
    workforce_name: str
    members: list[Member] = Field(default_factory=list)
    created_by: str = ""
    created_at: datetime = Field(default_factory=utc_now)

    def member_with_key(self, key_id: str) -> Member | None:
        return next((member for member in self.members if member.key_id == key_id), None)


class Item(BaseModel):
    """One thing to label: shown text, the row's fields, an image key, the model's confidence."""

    item_id: str
    text: str = ""
    fields: dict[str, Any] = Field(default_factory=dict)
    image_key: str | None = None
    score: float | None = None


class JobItems(BaseModel):
    job_name: str
    items: list[Item]


class Lease(BaseModel):
    annotator: str
    expires_at: datetime


class ItemState(BaseModel):
    answered: list[str] = Field(default_factory=list)
    leases: list[Lease] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)
    machine_label: str | None = None
    machine_confidence: float | None = None


class Queue(BaseModel):
    """Who holds, answered and skipped each item; `order` is the order items are offered in."""

    job_name: str
    workers_per_item: int
    order: list[str]
    items: dict[str, ItemState]

    def done(self, item_id: str) -> bool:
        state = self.items[item_id]
        return state.machine_label is not None or len(state.answered) >= self.workers_per_item

    def items_done(self) -> int:
        return sum(1 for item_id in self.order if self.done(item_id))

    def annotations(self) -> int:
        return sum(len(state.answered) for state in self.items.values())

    def complete(self) -> bool:
        return all(self.done(item_id) for item_id in self.order)


class Box(BaseModel):
    """A box in the image's pixels (top-left corner, width, height) with its label."""

    label: str
    x: float = Field(ge=0)
    y: float = Field(ge=0)
    width: float = Field(gt=0)
    height: float = Field(gt=0)


class Answer(BaseModel):
    """What an annotator submits: one label, several (multi-label) or boxes."""

    label: str | None = None
    labels: list[str] = Field(default_factory=list)
    boxes: list[Box] = Field(default_factory=list)


class Annotation(Answer):
    job_name: str
    item_id: str
    annotator: str
    key_id: str = ""
    submitted_at: datetime = Field(default_factory=utc_now)


class LabelingJob(BaseModel):
    request: LabelingJobRequested
    status: JobStatus = "InProgress"
    created_by: str = ""
    created_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)
    item_count: int = 0
    items_done: int = 0
    annotations: int = 0
    progress_reported: int = 0
    counters: LabelCounters = Field(default_factory=LabelCounters)
    output_versions: list[str] = Field(default_factory=list, description="dataset:// URIs.")
    pending_export: str | None = Field(default=None, description="Source prefix being ingested.")
    finish_after_export: bool = False
    agreement: dict[str, Any] = Field(default_factory=dict)
    failure_reason: str | None = None

    @property
    def job_name(self) -> str:
        return self.request.job_name

    @property
    def output_dataset_name(self) -> str:
        return f"{self.request.job_name}-labels"


def job_key(job_name: str, name: str = "job.json") -> str:
    return f"{job_name}/{name}"


def annotation_key(job_name: str, item_id: str, annotator: str) -> str:
    return f"{job_name}/annotations/{item_id}/{annotator}.json"


def check_member_names(names: list[str]) -> list[str]:
    if not names:
        raise InvalidInput("a workforce needs at least one member", field="members")
    for name in names:
        if not _MEMBER_RE.match(name):
            raise InvalidInput(f"member name {name!r} must match {MEMBER_PATTERN}", field="members")
    if len(set(names)) != len(names):
        raise InvalidInput("member names repeat", field="members")
    return names


def check_request(request: LabelingJobRequested, workforce: Workforce) -> None:
    """Refuse what no item could be labelled with (400 naming the field)."""
    labels = [label.strip() for label in request.labels]
    if any(not label for label in labels):
        raise InvalidInput("labels: a label is empty", field="labels")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise InvalidInput(f"labels: {', '.join(duplicates)} appear more than once", field="labels")
    if request.task_type in CLASSIFICATION_TASKS and len(labels) < 2:
        raise InvalidInput("labels: a classification task needs two labels", field="labels")
    if request.workers_per_item > len(workforce.members):
        raise InvalidInput(
            f"workers_per_item: {request.workers_per_item} is more than the "
            f"{len(workforce.members)} members of workforce {workforce.workforce_name!r}",
            field="workers_per_item",
        )
    if request.task_type in IMAGE_TASKS and not request.image_column:
        raise InvalidInput(
            f"image_column: a {request.task_type} job needs the column of image keys",
            field="image_column",
        )
    if request.order == "uncertainty" and not request.score_column:
        raise InvalidInput(
            "score_column: uncertainty order needs the model's confidence column",
            field="score_column",
        )


def check_answer(request: LabelingJobRequested, answer: Answer) -> Answer:
    """The answer fits the task and uses only the job's labels (400 otherwise)."""
    allowed = set(request.labels)
    if request.task_type == "multi-label":
        used, field = answer.labels, "labels"
        if len(set(used)) != len(used):
            raise InvalidInput("labels: a label is chosen twice", field=field)
        answer = Answer(
            labels=sorted(used, key=request.labels.index) if set(used) <= allowed else used
        )
    elif request.task_type == "bounding-box":
        used, field = [box.label for box in answer.boxes], "boxes"
        answer = Answer(boxes=answer.boxes)
    else:
        if answer.label is None:
            raise InvalidInput("label: choose one label", field="label")
        used, field = [answer.label], "label"
        answer = Answer(label=answer.label)
    unknown = sorted(set(used) - allowed)
    if unknown:
        raise InvalidInput(
            f"{field}: {', '.join(repr(u) for u in unknown)} not in the job's labels "
            f"({', '.join(request.labels)})",
            field=field,
        )
    return answer


def offer_order(items: list[Item], order: str) -> list[str]:
    """Sequential, or least confident first (ties keep the dataset's order)."""
    if order != "uncertainty":
        return [item.item_id for item in items]
    ranked = sorted(enumerate(items), key=lambda pair: (_confidence(pair[1].score), pair[0]))
    return [item.item_id for _, item in ranked]


def _confidence(score: float | None) -> float:
    return 2.0 if score is None else float(score)


def new_queue(job_name: str, workers_per_item: int, items: list[Item], order: str) -> Queue:
    return Queue(
        job_name=job_name,
        workers_per_item=workers_per_item,
        order=offer_order(items, order),
        items={item.item_id: ItemState() for item in items},
    )


def _active(state: ItemState, now: datetime) -> list[Lease]:
    return [lease for lease in state.leases if lease.expires_at > now]


def claim(
    queue: Queue, annotator: str, now: datetime, lease_s: float
) -> tuple[Queue, str | None, Lease | None]:
    """The annotator's next task: the lease they hold, else the first item that still needs
    an answer they have not given or skipped and that is not already held by enough others."""
    queue = queue.model_copy(deep=True)
    for state in queue.items.values():
        state.leases = _active(state, now)
    for item_id in queue.order:
        for lease in queue.items[item_id].leases:
            if lease.annotator == annotator:
                return queue, item_id, lease
    for item_id in queue.order:
        state = queue.items[item_id]
        if (
            queue.done(item_id)
            or annotator in state.answered
            or annotator in state.skipped
            or len(state.answered) + len(state.leases) >= queue.workers_per_item
        ):
            continue
        lease = Lease(annotator=annotator, expires_at=now + timedelta(seconds=lease_s))
        state.leases.append(lease)
        return queue, item_id, lease
    return queue, None, None


def check_submission(queue: Queue, item_id: str, annotator: str, now: datetime) -> None:
    """The annotator holds a live lease on the item and has not answered it yet (409s)."""
    state = queue.items.get(item_id)
    if state is None:
        raise InvalidInput(f"item {item_id!r} is not in job {queue.job_name!r}", field="item_id")
    if annotator in state.answered:
        raise AlreadyAnswered(f"{annotator} already answered item {item_id!r}")
    if not any(lease.annotator == annotator for lease in _active(state, now)):
        raise LeaseExpired(
            f"the lease of item {item_id!r} expired or was never held by {annotator}; "
            "take the next task"
        )


def record_answer(queue: Queue, item_id: str, annotator: str) -> Queue:
    """Idempotent: an answer already recorded changes nothing."""
    queue = queue.model_copy(deep=True)
    state = queue.items[item_id]
    state.leases = [lease for lease in state.leases if lease.annotator != annotator]
    if annotator not in state.answered:
        state.answered.append(annotator)
    return queue


def record_skip(queue: Queue, item_id: str, annotator: str) -> Queue:
    queue = queue.model_copy(deep=True)
    state = queue.items.get(item_id)
    if state is None:
        raise InvalidInput(f"item {item_id!r} is not in job {queue.job_name!r}", field="item_id")
    state.leases = [lease for lease in state.leases if lease.annotator != annotator]
    if annotator not in state.skipped and annotator not in state.answered:
        state.skipped.append(annotator)
    return queue


def reconcile(queue: Queue, answered: dict[str, set[str]]) -> Queue:
    """Record every stored annotation the queue misses (a kill between the two writes)."""
    for item_id, annotators in answered.items():
        if item_id not in queue.items:
            continue
        for annotator in sorted(annotators - set(queue.items[item_id].answered)):
            queue = record_answer(queue, item_id, annotator)
    return queue


def counters(queue: Queue, failed: int = 0, final: bool = False) -> LabelCounters:
    machine = sum(1 for s in queue.items.values() if s.machine_label is not None)
    human = sum(
        1
        for item_id in queue.order
        if queue.items[item_id].machine_label is None
        and (queue.done(item_id) or (final and queue.items[item_id].answered))
    )
    total = len(queue.order)
    return LabelCounters(
        total=total,
        human_labeled=max(human - failed, 0),
        machine_labeled=machine,
        failed=failed,
        unlabeled=max(total - human - machine, 0),
    )
