"""Batch transform events (owner: the batch service).

A job (`TransformJobRequested`, CreateTransformJob's fields) is planned into shards; each shard is
one `TransformShardRequested` on the batch work topic, consumed by the batch worker pool's group.
Workers report `TransformShardCompleted` (counts only); the service announces the job's end.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cairn.contracts.catalogue import event

JOB_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$"
TransformContentType = Literal["text/csv", "application/jsonlines", "application/x-parquet"]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class TransformInput(_Data):
    """Where the records are and how to split them (SageMaker's `TransformInput`)."""

    data_source: str = Field(
        description="A store prefix or key under data/, uploads/ or outputs/, or dataset://d@v."
    )
    content_type: str = Field(
        default="text/csv", description="text/csv, application/jsonlines or application/x-parquet."
    )
    split_type: Literal["None", "Line"] = Field(
        default="Line", description="Line: one record per line (Parquet: per row)."
    )
    compression_type: Literal["None", "Gzip"] = "None"
    csv_header: bool = Field(
        default=False, description="The first line of each CSV file names the columns."
    )


class TransformOutput(_Data):
    """Where the outputs go (SageMaker's `TransformOutput`)."""

    output_path: str = Field(description="A store prefix under outputs/.")
    accept: str | None = Field(default=None, description="Output format; default: the input's.")
    assemble_with: Literal["None", "Line"] = "Line"


class DataProcessing(_Data):
    """SageMaker's `DataProcessing`: JSONPath filters and joining the input to the output."""

    input_filter: str = Field(default="$", description="JSONPath selecting what the model sees.")
    output_filter: str = Field(default="$", description="JSONPath selecting what is written.")
    join_source: Literal["None", "Input"] = "None"


@event(owner="batch", key="job_name", required_scope="deploy", senders=("pipelines",))
class TransformJobRequested(_Data):
    """A user asks for a batch transform job (CreateTransformJob); the same name resumes it."""

    job_name: str = Field(pattern=JOB_NAME_PATTERN)
    model_package_group: str | None = Field(
        default=None, description="The registered model: group ..."
    )
    model_version: int | None = Field(default=None, ge=1, description="... and version.")
    endpoint_name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$",
        description="Or score against this live endpoint, through the gateway (the requester "
        "needs `invoke` on it).",
    )
    transform_input: TransformInput
    transform_output: TransformOutput
    data_processing: DataProcessing = Field(default_factory=DataProcessing)
    batch_strategy: Literal["SingleRecord", "MultiRecord"] = "MultiRecord"
    max_payload_mb: int = Field(default=6, ge=0, le=100)
    max_concurrent_transforms: int = Field(default=1, ge=1, le=64)
    environment: dict[str, str] = Field(default_factory=dict)
    max_failed_records: int = Field(default=0, ge=0, description="Failed records allowed.")
    max_failed_percent: float | None = Field(
        default=None, ge=0, le=100, description="Or a share of the records, in percent."
    )
    explain: bool = Field(default=False, description="Add per-feature contributions (TreeSHAP).")
    shard_size_mb: float | None = Field(
        default=None, gt=0, le=4096, description="Target shard size; default the service's."
    )
    tags: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_model(self) -> TransformJobRequested:
        has_model = self.model_package_group is not None and self.model_version is not None
        if has_model == (self.endpoint_name is not None):
            raise ValueError(
                "give a model (model_package_group and model_version) or an endpoint_name"
            )
        return self


@event(owner="batch", key="job_name")
class TransformJobStarted(_Data):
    """The job is planned: its shards are stored and their work events published."""

    job_name: str
    attempt: int = Field(ge=1)
    input_files: int = Field(ge=0)
    shards_total: int = Field(ge=0)
    shards_pending: int = Field(ge=0, description="Shards (re)published by this attempt.")


@event(owner="batch", key="shard_id", partitions=8)
class TransformShardRequested(_Data):
    """One shard of a job to transform (the batch worker pool's work item)."""

    shard_id: str = Field(description="`<job>/<index>`: the Kafka key spreads shards over workers.")
    job_name: str
    shard_index: int = Field(ge=0)
    attempt: int = Field(ge=1)


@event(owner="batch", key="job_name")
class TransformShardCompleted(_Data):
    """A shard's output is stored; counts only."""

    job_name: str
    shard_index: int = Field(ge=0)
    records_in: int = Field(ge=0)
    records_out: int = Field(ge=0)
    records_failed: int = Field(ge=0)
    elapsed_s: float = Field(ge=0)
    worker_id: str


@event(owner="batch", key="job_name")
class TransformJobCompleted(_Data):
    """Every shard is done and the outputs are assembled; the manifest lists them."""

    job_name: str
    output_path: str
    manifest_key: str
    records_in: int = Field(ge=0)
    records_out: int = Field(ge=0)
    records_failed: int = Field(ge=0)
    elapsed_s: float = Field(ge=0)


@event(owner="batch", key="job_name")
class TransformJobFailed(_Data):
    """The job ended without outputs; `reason` says why."""

    job_name: str
    reason: str
    failure_code: Literal[
        "invalid_input",
        "model_not_found",
        "endpoint_not_found",
        "forbidden",
        "too_many_failed_records",
        "internal",
    ] = "internal"
    records_failed: int = Field(default=0, ge=0)


@event(owner="batch", key="job_name")
class TransformJobStopped(_Data):
    """A user stopped the job; requesting it again with the same name resumes it."""

    job_name: str
    shards_done: int = Field(ge=0)
    shards_total: int = Field(ge=0)
