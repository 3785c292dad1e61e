"""Every event and command of the platform, as pydantic models (the `data` of an envelope).

Facts are past tense (`TrainingJobCompleted`); requests for work end in `Requested` and may come
from any service or a user. `contracts/` is generated from this module; CI fails on drift.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cairn.contracts.async_events import AsyncInferenceConfig
from cairn.contracts.catalogue import event
from cairn.contracts.graph import InferenceGraph, first_model

JobName = str
HyperparameterValue = str | int | float | bool


class _Data(BaseModel):
    # A non-finite float (1e309 parses as inf) would be stored as null and break every reader.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# Training --------------------------------------------------------------------------------------


class InputChannel(_Data):
    """One named input of a training job (SageMaker's `InputDataConfig` entry)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="train, validation, ...")
    uri: str = Field(
        description="Object-store prefix or key: s3://..., file://..., or a store key."
    )
    content_type: Literal[
        "text/csv", "application/x-parquet", "application/jsonlines", "text/plain"
    ] = "text/csv"
    label_column: str | None = None


class ResourceConfig(_Data):
    device: Literal["cpu", "gpu"] = "cpu"
    instance_count: int = Field(
        default=1,
        description="Dask workers for xgboost; SM_HOSTS for scripts. The trainer refuses < 1 and"
        " counts above its configured maximum with a 400 naming this field.",
    )
    allow_cpu_fallback: bool = Field(
        default=False, description="A GPU job may run on a CPU worker when no GPU worker takes it."
    )


class StoppingCondition(_Data):
    max_runtime_s: int = Field(default=86_400, ge=1)
    max_wait_time_s: int | None = Field(
        default=None,
        ge=1,
        description="MaxWaitTimeInSeconds: the job's whole life, waits and attempts included.",
    )


class CheckpointConfig(_Data):
    """SageMaker's CheckpointConfig: where a job saves checkpoints and resumes from them."""

    uri: str = Field(description="A store prefix under outputs/ that only this job may use.")
    interval_rounds: int = Field(default=10, ge=1, le=10_000, description="Save every N rounds.")


class RegistrationSpec(_Data):
    """Register the trained model into this model package group when the job completes."""

    model_package_group: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
    approval_status: Literal["PendingManualApproval", "Approved"] = "PendingManualApproval"
    description: str = ""


class MetricDefinition(_Data):
    """Script mode: a metric read from the job's log lines (its value: the regex's first group)."""

    name: str = Field(min_length=1, max_length=255)
    regex: str = Field(min_length=1, max_length=500)

    @field_validator("regex")
    @classmethod
    def _one_group(cls, regex: str) -> str:
        try:
            compiled = re.compile(regex)
        except re.error as error:
            raise ValueError(f"not a regular expression: {error}") from error
        if compiled.groups < 1:
            raise ValueError("needs a capture group around the metric's value")
        return regex


@event(
    owner="trainer",
    key="job_name",
    partitions=8,
    required_scope="train",
    senders=("monitor", "tuner", "pipelines", "labeling"),
)
class TrainingJobRequested(_Data):
    """A user or service asks for a training job (CreateTrainingJob)."""

    job_name: JobName = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
    algorithm: str = Field(
        description="Built-in algorithm (xgboost, linear-learner, ...) or script."
    )
    hyperparameters: dict[str, HyperparameterValue] = Field(default_factory=dict)
    input_channels: list[InputChannel] = Field(
        default_factory=list,
        description="Data channels; reinforcement-learning jobs have none (an env id instead).",
    )
    output_uri: str | None = Field(default=None, description="Where the model package is written.")
    resources: ResourceConfig = Field(default_factory=ResourceConfig)
    stopping_condition: StoppingCondition = Field(default_factory=StoppingCondition)
    registration: RegistrationSpec | None = None
    entry_point: str | None = Field(default=None, description="Script key for bring-your-own.")
    image: str | None = Field(default=None, description="Container image for the Docker backend.")
    tags: dict[str, str] = Field(default_factory=dict)
    experiment: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$",
        description="The experiment this job is a run of; default `default`.",
    )
    metric_definitions: list[MetricDefinition] = Field(
        default_factory=list,
        max_length=40,
        description="Script and image jobs: metrics read from log lines, reported as progress.",
    )
    checkpoint_config: CheckpointConfig | None = None
    input_mode: Literal["File", "Pipe", "FastFile"] = Field(
        default="File",
        description="File: whole channels; Pipe: streamed in chunks; FastFile: File, lazily.",
    )


@event(owner="trainer", key="job_name")
class TrainingJobStarted(_Data):
    """A worker picked the job up."""

    job_name: JobName
    worker_id: str
    device: Literal["cpu", "gpu"]
    attempt: int = Field(default=1, ge=1)


@event(owner="trainer", key="job_name")
class TrainingJobProgressed(_Data):
    """Periodic progress with the metrics of the latest iteration."""

    job_name: JobName
    iteration: int = Field(ge=0)
    total_iterations: int | None = Field(default=None, ge=0)
    metrics: dict[str, float] = Field(default_factory=dict)


@event(owner="trainer", key="job_name")
class TrainingJobCompleted(_Data):
    """The model package is written; this event points to it."""

    job_name: JobName
    algorithm: str
    artifact_uri: str
    metrics: dict[str, float] = Field(default_factory=dict)
    device: Literal["cpu", "gpu"]
    training_time_s: float = Field(ge=0)
    total_time_s: float = Field(ge=0)
    registration: RegistrationSpec | None = None


@event(owner="trainer", key="job_name")
class TrainingJobFailed(_Data):
    """The job ended without a model; `reason` says why."""

    job_name: JobName
    reason: str
    failure_code: Literal[
        "invalid_hyperparameters",
        "invalid_input",
        "runtime_exceeded",
        "algorithm_error",
        "insufficient_capacity",
        "max_wait_exceeded",
        "internal",
    ] = "internal"


# Registry --------------------------------------------------------------------------------------

ApprovalStatus = Literal["PendingManualApproval", "Approved", "Rejected"]


@event(owner="registry", key="model_package_group")
class ModelPackageRegistered(_Data):
    """A new version of a model package group exists."""

    model_package_group: str
    version: int = Field(ge=1)
    artifact_uri: str
    approval_status: ApprovalStatus
    metrics: dict[str, float] = Field(default_factory=dict)
    training_job: JobName | None = None


@event(owner="registry", key="model_package_group")
class ModelApprovalChanged(_Data):
    """A version was approved or rejected, by whom and why."""

    model_package_group: str
    version: int = Field(ge=1)
    approval_status: ApprovalStatus
    previous_status: ApprovalStatus | None = None
    changed_by: str
    reason: str = ""


@event(
    owner="registry",
    key="model_package_group",
    required_scope="approve",
    senders=("monitor",),
)
class ModelApprovalRequested(_Data):
    """Ask the registry to approve or reject a version (the event form of the approval API)."""

    model_package_group: str
    version: int = Field(ge=1)
    approval_status: Literal["Approved", "Rejected"]
    requested_by: str
    reason: str = ""


# Deployment ------------------------------------------------------------------------------------


MAX_PIPELINE_CONTAINERS = 5  # SageMaker's limit on an inference pipeline's containers


class ContainerSpec(_Data):
    """One step of an inference pipeline: a registered model version."""

    model_package_group: str
    model_version: int = Field(ge=1)


class VariantSpec(_Data):
    """A production or shadow variant: which model version, how much traffic, how many copies.

    With `containers` the variant is an inference pipeline: each step's output matrix is the
    next one's input. Its `model_package_group` / `model_version` may then be left out: they
    name the last step, whose outputs the variant answers with.
    """

    variant_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
    model_package_group: str
    model_version: int = Field(ge=1)
    initial_weight: float = Field(default=1.0, ge=0)
    instance_count: int = Field(default=1, ge=1)
    containers: list[ContainerSpec] = Field(
        default_factory=list,
        max_length=MAX_PIPELINE_CONTAINERS,
        description="An inference pipeline's models in order (SageMaker's Containers); "
        "empty for a single model.",
    )
    graph: InferenceGraph | None = Field(
        default=None,
        description="An inference graph (KServe's InferenceGraph); the model fields may then "
        "be left out: they name its first model step.",
    )

    @model_validator(mode="before")
    @classmethod
    def _last_container_is_the_model(cls, data: Any) -> Any:
        graph = data.get("graph") if isinstance(data, dict) else None
        if graph is not None and "model_package_group" not in data:
            group, version = first_model(graph)
            return {"model_package_group": group, "model_version": version, **data}
        containers = data.get("containers") if isinstance(data, dict) else None
        if not containers or not isinstance(containers, list):
            return data
        last = containers[-1]
        last = last.model_dump() if isinstance(last, ContainerSpec) else last
        if not isinstance(last, dict):
            return data
        return {
            "model_package_group": last.get("model_package_group"),
            "model_version": last.get("model_version"),
            **data,
        }

    @model_validator(mode="after")
    def _model_matches_last_container(self) -> VariantSpec:
        if self.graph is not None and self.containers:
            raise ValueError("a variant is a pipeline (containers) or a graph, not both")
        if self.containers and (self.model_package_group, self.model_version) != (
            self.containers[-1].model_package_group,
            self.containers[-1].model_version,
        ):
            raise ValueError(
                "with containers, model_package_group and model_version name the last "
                "container (or are left out)"
            )
        return self


class RolloutPolicy(_Data):
    mode: Literal["all_at_once", "canary", "linear"] = "all_at_once"
    canary_percent: float = Field(default=10.0, gt=0, le=100)
    linear_step_percent: float = Field(default=25.0, gt=0, le=100)
    bake_time_s: float = Field(default=60.0, ge=0)
    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    max_p99_latency_ms: float | None = Field(default=None, gt=0)


@event(
    owner="deployer",
    key="endpoint_name",
    required_scope="deploy",
    senders=("monitor", "pipelines"),
)
class DeploymentRequested(_Data):
    """Create, update or delete an endpoint (CreateEndpoint / UpdateEndpoint / DeleteEndpoint)."""

    endpoint_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
    action: Literal["create", "update", "delete"] = "create"
    production_variants: list[VariantSpec] = Field(default_factory=list)
    shadow_variant: VariantSpec | None = None
    rollout: RolloutPolicy = Field(default_factory=RolloutPolicy)
    allow_unapproved: bool = Field(
        default=False, description="Serve versions that are not Approved (never Rejected ones)."
    )
    async_inference_config: AsyncInferenceConfig | None = Field(
        default=None, description="InvokeEndpointAsync settings (SageMaker's AsyncInferenceConfig)."
    )


class ContainerState(_Data):
    """One resolved step of an inference pipeline."""

    model_package_group: str
    model_version: int
    artifact_uri: str


class VariantState(_Data):
    """A served variant; for a pipeline its model fields name the last of its `containers`."""

    variant_name: str
    model_package_group: str
    model_version: int
    artifact_uri: str
    weight: float = Field(ge=0)
    instance_count: int = Field(
        ge=0, description="Desired gateway processes; 0: scaled to zero by a scaling policy."
    )
    containers: list[ContainerState] = Field(
        default_factory=list, description="An inference pipeline's steps in order; else empty."
    )
    graph: InferenceGraph | None = Field(
        default=None, description="An inference graph, each model step's artifact filled in."
    )


@event(owner="deployer", key="endpoint_name")
class EndpointUpdated(_Data):
    """The full desired state of an endpoint after a change; the gateway applies it hot."""

    endpoint_name: str
    revision: int = Field(ge=1)
    status: Literal["Creating", "Updating", "InService", "RollingBack", "Deleted", "Failed"]
    production_variants: list[VariantState] = Field(default_factory=list)
    shadow_variant: VariantState | None = None


@event(owner="deployer", key="endpoint_name")
class DeploymentFailed(_Data):
    """A DeploymentRequested the deployer refused; the request is dead-lettered with the reason.

    What an HTTP caller gets as a 4xx (an unknown endpoint or model version, an endpoint that is
    rolling out), a publisher on the bus gets as this event.
    """

    endpoint_name: str
    action: Literal["create", "update", "delete"]
    reason: str
    failure_code: str = Field(description="The refusal's code, as the HTTP API names it.")


@event(owner="deployer", key="endpoint_name")
class DeploymentRolledBack(_Data):
    """A rollout was undone because an alarm tripped during bake time."""

    endpoint_name: str
    rolled_back_variant: str
    restored_revision: int = Field(ge=1)
    reason: str


# Inference -------------------------------------------------------------------------------------


@event(owner="gateway", key="endpoint_name")
class InferenceCaptured(_Data):
    """A file of captured requests and responses was written to the store."""

    endpoint_name: str
    variant_name: str
    capture_uri: str
    record_count: int = Field(ge=1)


class VariantTraffic(_Data):
    variant_name: str
    requests: int = Field(ge=0)
    errors: int = Field(ge=0, description="Model errors and 5xx answers (not 4xx).")
    p50_latency_ms: float = Field(ge=0)
    p99_latency_ms: float = Field(ge=0)


@event(owner="gateway", key="endpoint_name")
class EndpointMetricsReported(_Data):
    """Per-variant traffic over the last window; the deployer's rollout alarms read it."""

    endpoint_name: str
    window_s: float = Field(gt=0)
    variants: list[VariantTraffic] = Field(default_factory=list)


# Data: datasets ---------------------------------------------------------------------------------

DatasetFormat = Literal["csv", "parquet", "jsonl"]


class ColumnSchema(_Data):
    """One column of a dataset or feature group."""

    name: str = Field(min_length=1, max_length=128)
    dtype: Literal["int", "float", "bool", "string", "timestamp"]
    nullable: bool = True


@event(owner="ingest", key="dataset_name", required_scope="data", senders=("labeling", "trainer"))
class DatasetRegistrationRequested(_Data):
    """Register the objects under a store prefix as a new version of a dataset."""

    dataset_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
    source_uri: str = Field(description="Store prefix or key holding CSV, Parquet or JSON Lines.")
    format: DatasetFormat | None = Field(default=None, description="Guessed from names if absent.")
    declared_schema: list[ColumnSchema] | None = Field(
        default=None, description="Rows breaking it are rejected; inferred when absent."
    )


@event(owner="ingest", key="dataset_name")
class DatasetIngested(_Data):
    """An immutable, profiled Parquet version of a dataset is stored; this points to it."""

    dataset_name: str
    version: int = Field(ge=1)
    uri: str = Field(description="dataset://name@version")
    location: str = Field(description="Store prefix of the Parquet files.")
    sha256: str
    row_count: int = Field(ge=0)
    columns: list[ColumnSchema]
    created: bool = Field(description="False when identical content already existed (no-op).")


@event(owner="ingest", key="dataset_name")
class DatasetRejected(_Data):
    """A dataset registration failed validation; nothing was stored."""

    dataset_name: str
    source_uri: str
    reason: str


# Data: feature store ---------------------------------------------------------------------------


class FeatureDefinition(_Data):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    type: Literal["Integral", "Fractional", "String", "Boolean", "Timestamp"]


@event(owner="featurestore", key="feature_group_name", required_scope="data")
class FeatureGroupCreationRequested(_Data):
    """Create a feature group (SageMaker CreateFeatureGroup)."""

    feature_group_name: str = Field(pattern=r"^[A-Za-z0-9](-*[A-Za-z0-9]){0,63}$")
    record_identifier_feature_name: str
    event_time_feature_name: str
    feature_definitions: list[FeatureDefinition] = Field(min_length=2)
    online_enabled: bool = True
    offline_enabled: bool = True
    ttl_s: float | None = Field(default=None, gt=0)
    description: str = ""


@event(owner="featurestore", key="feature_group_name")
class FeatureGroupCreated(_Data):
    """A feature group exists and accepts records."""

    feature_group_name: str
    record_identifier_feature_name: str
    event_time_feature_name: str
    feature_definitions: list[FeatureDefinition]
    online_enabled: bool
    offline_enabled: bool
    ttl_s: float | None = None


@event(owner="featurestore", key="feature_group_name", partitions=8)
class FeatureRecordsPut(_Data):
    """Streaming ingestion: records for a feature group, from any Kafka producer."""

    feature_group_name: str
    records: list[dict[str, str | int | float | bool | None]] = Field(
        min_length=1, max_length=10_000
    )


@event(owner="featurestore", key="feature_group_name", required_scope="data")
class FeatureIngestionRequested(_Data):
    """Bulk-load a registered dataset into a feature group."""

    feature_group_name: str
    dataset_uri: str = Field(description="dataset://name@version")


@event(owner="featurestore", key="feature_group_name")
class FeatureIngestionCompleted(_Data):
    """A bulk or streamed batch landed in the online and/or offline store."""

    feature_group_name: str
    records_written: int = Field(ge=0)
    records_rejected: int = Field(ge=0)
    source: str
    rejections: list[str] = Field(
        default_factory=list, max_length=100, description="Why the first rejected records failed."
    )


@event(owner="featurestore", key="feature_group_name")
class FeatureIngestionFailed(_Data):
    """A FeatureRecordsPut or FeatureIngestionRequested refused whole (an unknown group, a source
    that is not a dataset); the request is dead-lettered with the same reason."""

    feature_group_name: str
    source: str
    reason: str
    failure_code: str = Field(description="The refusal's code, as the HTTP API names it.")


@event(owner="featurestore", key="training_set_name", required_scope="data")
class TrainingSetRequested(_Data):
    """Build a point-in-time correct training set from an entity dataset and feature groups."""

    training_set_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
    entity_dataset_uri: str = Field(description="dataset://name@version with ids + timestamps")
    entity_id_column: str
    entity_time_column: str
    features: list[str] = Field(
        min_length=1, description="`group` (all features) or `group:feature` references."
    )
    as_of_known_time: bool = False


@event(owner="featurestore", key="training_set_name")
class TrainingSetBuilt(_Data):
    """The training set is stored as a dataset and can be a training channel."""

    training_set_name: str
    dataset_uri: str
    row_count: int = Field(ge=0)


@event(owner="featurestore", key="training_set_name")
class TrainingSetFailed(_Data):
    """A requested training set was not built; `reason` says why. Nothing was stored."""

    training_set_name: str
    reason: str
    code: str = Field(description="The error code, as in HTTP error bodies: invalid_input, ...")


# Monitoring and the closed loop ----------------------------------------------------------------


@event(owner="monitor", key="endpoint_name", required_scope="deploy")
class MonitoringScheduleRequested(_Data):
    """Create, change or delete the monitoring schedule of an endpoint."""

    endpoint_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
    action: Literal["create", "update", "delete"] = "create"
    interval_s: float = Field(default=3600.0, ge=1)
    drift_p_value: float = Field(default=0.05, gt=0, lt=1)
    correction: Literal["bonferroni", "fdr"] = "bonferroni"
    min_rows: int = Field(default=100, ge=1, description="A run with fewer new rows only waits.")


@event(owner="monitor", key="model_package_group")
class BaselineComputed(_Data):
    """statistics.json and constraints.json exist for a model version."""

    model_package_group: str
    model_version: int = Field(ge=1)
    statistics_uri: str
    constraints_uri: str
    row_count: int = Field(ge=0)


@event(owner="monitor", key="endpoint_name")
class MonitoringRunCompleted(_Data):
    """One scheduled check of an endpoint's captured traffic; the report is in the store."""

    endpoint_name: str
    run_id: str
    model_package_group: str
    model_version: int = Field(ge=1)
    rows_checked: int = Field(ge=0)
    report_uri: str
    violations: list[str] = Field(default_factory=list)
    drifted_features: list[str] = Field(default_factory=list)
    quality_metrics: dict[str, float] = Field(default_factory=dict)


class FeatureDrift(_Data):
    feature: str
    test: Literal["ks", "chi2"]
    statistic: float
    p_value: float
    threshold: float


@event(owner="monitor", key="endpoint_name")
class DriftDetected(_Data):
    """A monitoring run found drift or a data-quality violation on an endpoint."""

    endpoint_name: str
    run_id: str
    model_package_group: str
    model_version: int = Field(ge=1)
    features: list[FeatureDrift] = Field(default_factory=list)
    violations: list[str] = Field(default_factory=list)
    report_uri: str


@event(owner="monitor", key="endpoint_name", senders=("labeling",))
class GroundTruthRecorded(_Data):
    """True labels for captured inferences, joined by inference id."""

    endpoint_name: str
    labels: dict[str, float | int | str] = Field(
        min_length=1, max_length=100_000, description="inference id -> true label"
    )


@event(owner="monitor", key="model_package_group", required_scope="train")
class RetrainRequested(_Data):
    """A retraining policy decided to retrain a group because of drift."""

    model_package_group: str
    endpoint_name: str
    reason: str
    drift_run_id: str
    base_training_job: str
    new_training_job: str


@event(owner="monitor", key="model_package_group")
class ChallengerEvaluated(_Data):
    """A retrained version was compared with the champion on the same holdout."""

    model_package_group: str
    challenger_version: int = Field(ge=1)
    champion_version: int | None = Field(default=None, ge=1)
    metric: str
    challenger_score: float
    champion_score: float | None = None
    margin: float
    promoted: bool
    reason: str


# Worker pools ----------------------------------------------------------------------------------


@event(owner="autoscaler", key="pool")
class WorkerPoolScaled(_Data):
    """A worker pool's replica count changed (or a decision was taken), and why."""

    pool: str
    from_replicas: int = Field(ge=0)
    to_replicas: int = Field(ge=0)
    lag: int = Field(ge=0)
    reason: str


@event(owner="kernel", key="resource")
class AuditRecorded(_Data):
    """A control-plane change was recorded in the audit trail (`platform/audit/`)."""

    record_id: str
    principal: str
    action: str
    resource: str
    outcome: Literal["success", "denied", "failed"]
    audit_key: str = Field(description="Store key of the immutable record.")
