"""Pipeline events (owner: the pipelines service), and the registry request its steps send.

A pipeline execution is an aggregate keyed by `execution_id`: its start, every step's start,
success and failure, and its end are facts on the pipelines service's topics. A step runs by the
owning service's `...Requested` event; the pipelines service only orchestrates. Triggers start
executions from any catalogue event (or a cron schedule) and announce each start they make.

`ModelRegistrationRequested` is owned by the registry: it is the event form of registering a model
version, which a pipeline's RegisterModel step sends (there was no request event for it before).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cairn.contracts.catalogue import event

PIPELINE_NAME = r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$"
ParameterValue = str | int | float | bool
StepType = Literal[
    "Processing",
    "Training",
    "Tuning",
    "Transform",
    "RegisterModel",
    "Condition",
    "Fail",
    "Deploy",
    "Callback",
]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class _Execution(_Data):
    execution_id: str
    pipeline_name: str


@event(owner="pipelines", key="execution_id")
class PipelineExecutionStarted(_Execution):
    """An execution of a pipeline version began with these parameters."""

    pipeline_version: int = Field(ge=1)
    parameters: dict[str, ParameterValue] = Field(default_factory=dict)
    started_by: str
    trigger_name: str | None = Field(default=None, description="The trigger that started it.")


@event(owner="pipelines", key="execution_id")
class PipelineStepStarted(_Execution):
    """A step's request was sent to the service that owns its work (or a cache hit was used)."""

    step_name: str
    step_type: StepType
    attempt: int = Field(ge=1)
    request_id: str = Field(description="The deterministic job name / id of the step's request.")
    cache_key: str | None = None


@event(owner="pipelines", key="execution_id")
class PipelineStepSucceeded(_Execution):
    """A step ended well; `properties` are what later steps may reference."""

    step_name: str
    step_type: StepType
    properties: dict[str, Any] = Field(default_factory=dict)
    cache_hit: bool = False
    source_execution_id: str | None = Field(
        default=None, description="On a cache hit: the execution whose result was reused."
    )


@event(owner="pipelines", key="execution_id")
class PipelineStepFailed(_Execution):
    """A step's attempt failed; `will_retry` says whether its retry policy tries again."""

    step_name: str
    step_type: StepType
    attempt: int = Field(ge=1)
    reason: str
    exception_type: str = Field(description="The failure code the owning service gave.")
    will_retry: bool = False


@event(owner="pipelines", key="execution_id")
class PipelineExecutionSucceeded(_Execution):
    """Every step that was to run succeeded (skipped branches aside)."""


@event(owner="pipelines", key="execution_id")
class PipelineExecutionFailed(_Execution):
    """A step failed for good, or a Fail step was reached; `reason` says which."""

    failed_step: str | None = None
    reason: str


@event(owner="pipelines", key="execution_id")
class PipelineExecutionStopped(_Execution):
    """A user stopped the execution; running steps were left to finish, no new step started."""

    stopped_by: str


@event(owner="pipelines", key="execution_id")
class PipelineCallbackWaiting(_Execution):
    """A Callback step waits for `PipelineCallbackRequested` carrying this token."""

    step_name: str
    callback_token: str
    payload: dict[str, Any] = Field(default_factory=dict)


@event(owner="pipelines", key="callback_token", required_scope="train")
class PipelineCallbackRequested(_Data):
    """An external system or a person ends a waiting Callback step (SendPipelineExecutionStep*)."""

    callback_token: str = Field(min_length=16, max_length=128)
    status: Literal["Succeeded", "Failed"] = "Succeeded"
    outputs: dict[str, ParameterValue] = Field(default_factory=dict)
    reason: str = ""


@event(owner="pipelines", key="trigger_name")
class PipelineTriggerFired(_Data):
    """A trigger matched an event (or its schedule came due) and started an execution."""

    trigger_name: str
    pipeline_name: str
    execution_id: str
    event_type: str | None = Field(default=None, description="None for a schedule.")
    event_id: str | None = Field(default=None, description="The matched event, or the due time.")


@event(owner="pipelines", key="trigger_name")
class PipelineTriggerChanged(_Data):
    """A trigger was added or removed."""

    trigger_name: str
    pipeline_name: str
    action: Literal["added", "removed"]
    changed_by: str


@event(owner="registry", key="model_package_group", required_scope="train", senders=("pipelines",))
class ModelRegistrationRequested(_Data):
    """Register a trained model as a new version (the event form of POST .../versions).

    `training_job` is the idempotency key: a job registers at most one version.
    """

    model_package_group: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
    artifact_uri: str = Field(min_length=1)
    training_job: str = Field(min_length=1, max_length=128)
    approval_status: Literal["PendingManualApproval", "Approved"] = "PendingManualApproval"
    metrics: dict[str, float] = Field(default_factory=dict)
    description: str = ""


@event(owner="registry", key="model_package_group")
class ModelRegistrationFailed(_Data):
    """A ModelRegistrationRequested the registry refused; the request is dead-lettered too."""

    model_package_group: str
    training_job: str
    reason: str
