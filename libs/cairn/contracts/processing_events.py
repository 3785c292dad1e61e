"""Processing job events (owner: the trainer, whose worker pool runs them).

SageMaker Processing's contract: each `ProcessingInput` is copied from the store (a prefix, a key
or `dataset://name@version`) into a local directory under `/opt/ml/processing/` (of the job's own
work dir), the script or built-in runs with the job's arguments and environment, and each
`ProcessingOutput`'s local directory is uploaded to its store destination afterwards, optionally
registered as a new dataset version (through `DatasetRegistrationRequested`). The job name is the
idempotency key: requesting the same name again is a no-op once the job has ended.
"""

from __future__ import annotations

import posixpath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cairn.contracts.catalogue import event

PROCESSING_JOB_NAME = r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$"
PROCESSING_ROOT = "/opt/ml/processing"
BuiltinProcessor = Literal["data-quality", "train-validation-split", "feature-scaling"]
ProcessingFailureCode = Literal["invalid_input", "script_error", "runtime_exceeded", "internal"]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _local_path(path: str) -> str:
    """A local path must stay under /opt/ml/processing/ (the job's own work dir)."""
    normal = posixpath.normpath(path)
    if not normal.startswith(PROCESSING_ROOT + "/") or normal.count("/") < 4:
        raise ValueError(f"must be a directory under {PROCESSING_ROOT}/, e.g. {PROCESSING_ROOT}/x")
    return normal


class ProcessingInput(_Data):
    """One input copied before the job starts (SageMaker's `ProcessingInput` with S3Input)."""

    input_name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    source: str = Field(
        description="A store prefix or key (data/, uploads/, outputs/...) or dataset://name@version."
    )
    destination: str = Field(
        default="",
        description="Local directory, under /opt/ml/processing/; default "
        "/opt/ml/processing/input/<input_name>.",
    )

    @field_validator("destination")
    @classmethod
    def _under_root(cls, destination: str) -> str:
        return _local_path(destination) if destination else destination

    @model_validator(mode="after")
    def _default_destination(self) -> ProcessingInput:
        if not self.destination:
            self.destination = f"{PROCESSING_ROOT}/input/{self.input_name}"
        return self


class DatasetOutputSpec(_Data):
    """Register an output's uploaded files as a new version of this dataset."""

    dataset_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
    format: Literal["csv", "parquet", "jsonl"] | None = Field(
        default=None, description="Guessed from file names if absent."
    )


class ProcessingOutput(_Data):
    """One output uploaded when the script ends (SageMaker's `ProcessingOutput` with S3Output)."""

    output_name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    source: str = Field(
        default="",
        description="Local directory the script writes, under /opt/ml/processing/; default "
        "/opt/ml/processing/output/<output_name>.",
    )
    destination: str | None = Field(
        default=None,
        description="Store prefix under outputs/; default outputs/processing/<job>/<output_name>/.",
    )
    dataset: DatasetOutputSpec | None = Field(
        default=None, description="Also register the uploaded files as a dataset version."
    )

    @field_validator("source")
    @classmethod
    def _under_root(cls, source: str) -> str:
        return _local_path(source) if source else source

    @model_validator(mode="after")
    def _default_source(self) -> ProcessingOutput:
        if not self.source:
            self.source = f"{PROCESSING_ROOT}/output/{self.output_name}"
        return self


@event(owner="trainer", key="job_name", required_scope="train", senders=("pipelines",))
class ProcessingJobRequested(_Data):
    """A user or pipeline asks for a processing job (CreateProcessingJob); the name is the key."""

    job_name: str = Field(pattern=PROCESSING_JOB_NAME)
    entry_point: str | None = Field(
        default=None,
        description="Store key of the user's script (or a source tar with `#script.py`).",
    )
    builtin: BuiltinProcessor | None = Field(
        default=None, description="Or a built-in processor instead of a script."
    )
    inputs: list[ProcessingInput] = Field(default_factory=list, max_length=20)
    outputs: list[ProcessingOutput] = Field(default_factory=list, max_length=20)
    arguments: list[str] = Field(default_factory=list, max_length=100)
    environment: dict[str, str] = Field(default_factory=dict)
    max_runtime_s: int = Field(default=86_400, ge=1)
    experiment: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$",
        description="The experiment this job is a run of; default `default`.",
    )
    tags: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_program(self) -> ProcessingJobRequested:
        if (self.entry_point is None) == (self.builtin is None):
            raise ValueError("give an entry_point (a script) or a builtin, not both")
        names = [i.input_name for i in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError("inputs: input_name must be unique")
        outs = [o.output_name for o in self.outputs]
        if len(set(outs)) != len(outs):
            raise ValueError("outputs: output_name must be unique")
        return self


@event(owner="trainer", key="job_name")
class ProcessingJobStarted(_Data):
    """A worker picked the job up and copied its inputs."""

    job_name: str
    worker_id: str
    attempt: int = Field(default=1, ge=1)


class ProcessingOutputResult(_Data):
    """Where one output went, and the dataset version it became if asked."""

    output_name: str
    uri: str = Field(description="Store prefix of the uploaded files.")
    files: int = Field(ge=0)
    bytes: int = Field(ge=0)
    dataset_name: str | None = None


@event(owner="trainer", key="job_name")
class ProcessingJobCompleted(_Data):
    """The script exited 0 and every output is uploaded; this event points to them."""

    job_name: str
    outputs: list[ProcessingOutputResult] = Field(default_factory=list)
    metrics: dict[str, float] = Field(
        default_factory=dict, description="From /opt/ml/processing/metrics.json if written."
    )
    logs_key: str = Field(description="Store key of the script's stdout and stderr.")
    processing_time_s: float = Field(ge=0)


@event(owner="trainer", key="job_name")
class ProcessingJobFailed(_Data):
    """The job ended without outputs; `reason` says why."""

    job_name: str
    reason: str
    failure_code: ProcessingFailureCode = "internal"
    logs_key: str | None = None
