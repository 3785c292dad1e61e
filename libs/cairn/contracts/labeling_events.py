"""Labeling events (owner: the labeling service): Ground Truth-style labeling jobs.

A job (`LabelingJobRequested`) offers each item of a dataset version to N distinct annotators of a
workforce; every accepted answer is a `LabelingTaskSubmitted` (its annotation is stored first).
When every item has its answers the job consolidates them (majority vote or Dawid-Skene, IoU
clustering for boxes) into a new dataset version `dataset://<job>-labels@n`, registered through the
ingest service's `DatasetRegistrationRequested`, and announces `LabelingJobCompleted`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cairn.contracts.catalogue import event

JOB_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,54}$"
WORKFORCE_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,30}$"
TaskType = Literal[
    "text-classification",
    "tabular-classification",
    "multi-label",
    "image-classification",
    "bounding-box",
]
Consolidation = Literal["dawid-skene", "majority-vote"]
TaskOrder = Literal["sequential", "uncertainty"]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class LabelCounters(_Data):
    """SageMaker's `LabelCounters`: how the job's items were labelled."""

    total: int = Field(default=0, ge=0, description="Items in the job.")
    human_labeled: int = Field(default=0, ge=0, description="Consolidated from people's answers.")
    machine_labeled: int = Field(default=0, ge=0, description="Labelled by a model.")
    failed: int = Field(default=0, ge=0, description="Items no label could be given to.")
    unlabeled: int = Field(default=0, ge=0, description="Items still waiting for answers.")


@event(owner="labeling", key="job_name", required_scope="label")
class LabelingJobRequested(_Data):
    """A user asks for a labeling job over a dataset version (CreateLabelingJob)."""

    job_name: str = Field(pattern=JOB_NAME_PATTERN)
    dataset_uri: str = Field(description="dataset://name@version holding the items.")
    task_type: TaskType
    labels: list[str] = Field(min_length=1, max_length=64, description="The label set, in order.")
    workforce_name: str = Field(pattern=WORKFORCE_NAME_PATTERN)
    workers_per_item: int = Field(default=3, ge=1, le=50)
    task_time_limit_s: int = Field(
        default=300,
        ge=5,
        le=28_800,
        description="A claimed task's lease; then it is offered again.",
    )
    instructions: str = Field(default="", max_length=20_000, description="Shown on the page.")
    text_column: str | None = Field(
        default=None, description="The column shown as the item (text tasks); default the first."
    )
    image_column: str | None = Field(
        default=None, description="Column of store keys of the images (image and box tasks)."
    )
    id_column: str | None = Field(default=None, description="Item ids; default the row number.")
    order: TaskOrder = Field(
        default="sequential",
        description="uncertainty: items the current model is least sure of first.",
    )
    score_column: str | None = Field(
        default=None,
        description="With order=uncertainty: the current model's confidence per item (0-1).",
    )
    consolidation: Consolidation = "dawid-skene"
    auto_label: bool = Field(default=False, description="Let a model label what it is sure of.")
    iou_threshold: float = Field(default=0.5, gt=0, lt=1, description="Boxes closer are one.")


@event(owner="labeling", key="job_name")
class LabelingJobStarted(_Data):
    """A job's items are queued for its workforce."""

    job_name: str
    dataset_uri: str
    item_count: int = Field(ge=0)
    workforce_name: str


@event(owner="labeling", key="job_name")
class LabelingJobProgressed(_Data):
    """Another tenth (at least) of a job's items has all its answers."""

    job_name: str
    items_done: int = Field(ge=0)
    items_total: int = Field(ge=0)
    annotations: int = Field(ge=0)


@event(owner="labeling", key="job_name")
class LabelingJobCompleted(_Data):
    """A job's consolidated labels are a registered dataset version."""

    job_name: str
    output_dataset_uri: str
    label_counters: LabelCounters
    agreement: float | None = Field(default=None, description="Krippendorff's alpha (nominal).")


@event(owner="labeling", key="job_name")
class LabelingJobFailed(_Data):
    """A job could not start or could not be consolidated; `reason` says why."""

    job_name: str
    reason: str


@event(owner="labeling", key="job_name")
class LabelingJobStopped(_Data):
    """A job was stopped; its answers so far are kept and can still be exported."""

    job_name: str
    label_counters: LabelCounters


@event(owner="labeling", key="job_name")
class LabelingTaskSubmitted(_Data):
    """One annotator's answer for one item was stored (once: a second answer is refused)."""

    job_name: str
    item_id: str
    annotator: str
    annotation_key: str = Field(description="Where the annotation is stored (service-private).")
