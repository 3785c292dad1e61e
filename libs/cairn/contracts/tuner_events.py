"""Hyperparameter tuning events (owner: the tuner service), and StopTrainingJob (the trainer's).

A tuning job runs each trial as an ordinary `TrainingJobRequested` named `<tuning-job>-<n>`; the
tuner follows the trials through the trainer's events and stops the ones its pruner gives up on
with `TrainingJobStopRequested`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cairn.contracts.catalogue import event
from cairn.contracts.events import (
    HyperparameterValue,
    InputChannel,
    MetricDefinition,
    RegistrationSpec,
)

TUNING_JOB_NAME = r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$"


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# StopTrainingJob (trainer) ----------------------------------------------------------------------


@event(owner="trainer", key="job_name", required_scope="train", senders=("tuner",))
class TrainingJobStopRequested(_Data):
    """Stop a training job (StopTrainingJob); its worker is free within about a second."""

    job_name: str
    reason: str = Field(default="", max_length=500, description="Why; recorded on the job.")
    keep_partial_model: bool = Field(
        default=False, description="Write the model trained so far as the job's package."
    )


@event(owner="trainer", key="job_name")
class TrainingJobStopped(_Data):
    """A job ended because it was asked to stop; `artifact_uri` is the partial model if kept."""

    job_name: str
    reason: str = ""
    iteration: int | None = Field(default=None, ge=0, description="Last iteration reported.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Latest metrics seen.")
    artifact_uri: str | None = None
    training_time_s: float = Field(default=0.0, ge=0)


# Tuning (tuner) ---------------------------------------------------------------------------------

ScalingType = Literal["Auto", "Linear", "Logarithmic", "ReverseLogarithmic"]
Strategy = Literal["Bayesian", "Random", "Grid", "Hyperband"]


class IntegerParameterRange(_Data):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
    min_value: int
    max_value: int
    scaling_type: ScalingType = "Auto"


class ContinuousParameterRange(_Data):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
    min_value: float
    max_value: float
    scaling_type: ScalingType = "Auto"


class CategoricalParameterRange(_Data):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
    values: list[HyperparameterValue] = Field(max_length=1000)


class ParameterRanges(_Data):
    """SageMaker's `ParameterRanges`: the hyperparameters the tuner chooses."""

    integer: list[IntegerParameterRange] = Field(default_factory=list)
    continuous: list[ContinuousParameterRange] = Field(default_factory=list)
    categorical: list[CategoricalParameterRange] = Field(default_factory=list)


class TuningObjective(_Data):
    metric_name: str = Field(description="e.g. validation:auc (as the trial reports it).")
    type: Literal["Maximize", "Minimize"] = "Maximize"


class ResourceLimits(_Data):
    max_number_of_training_jobs: int = Field(default=10, ge=1, le=1000)
    max_parallel_training_jobs: int = Field(default=1, ge=1, le=100)
    max_runtime_s: int | None = Field(default=None, ge=1)
    max_failed_training_jobs: int | None = Field(
        default=None, ge=0, description="Fail the tuning job after this many failed trials."
    )


class HyperbandConfig(_Data):
    """`HyperbandStrategyConfig`: the resource is boosting rounds (or epochs)."""

    min_resource: int = Field(default=10, ge=1)
    max_resource: int = Field(default=200, ge=1)
    resource_parameter: str = Field(
        default="num_round", description="The hyperparameter the tuner sets to max_resource."
    )
    reduction_factor: int = Field(default=3, ge=2)


class CompletionCriteria(_Data):
    target_objective_metric_value: float | None = None
    max_number_of_training_jobs_not_improving: int | None = Field(default=None, ge=1)
    complete_on_convergence: bool = False


class WarmStartConfig(_Data):
    """Seed the search with earlier results: parent tuning jobs (recursively) and past jobs."""

    type: Literal["IdenticalDataAndAlgorithm", "TransferLearning"] = "IdenticalDataAndAlgorithm"
    parent_tuning_jobs: list[str] = Field(default_factory=list, max_length=5)
    training_jobs: list[str] = Field(
        default_factory=list, max_length=100, description="Past training jobs to learn from."
    )


class TrainingJobDefinition(_Data):
    """What every trial shares: algorithm, data, static hyperparameters, resources."""

    algorithm: str
    input_channels: list[InputChannel] = Field(min_length=1)
    static_hyperparameters: dict[str, HyperparameterValue] = Field(default_factory=dict)
    metric_definitions: list[MetricDefinition] = Field(default_factory=list)
    entry_point: str | None = None
    output_uri: str | None = None
    device: Literal["cpu", "gpu"] = "cpu"
    max_runtime_s: int = Field(default=86_400, ge=1)


@event(owner="tuner", key="tuning_job_name", required_scope="train", senders=("pipelines",))
class HyperParameterTuningJobRequested(_Data):
    """A user asks for a tuning job (CreateHyperParameterTuningJob)."""

    tuning_job_name: str = Field(pattern=TUNING_JOB_NAME)
    strategy: Strategy = "Bayesian"
    objective: TuningObjective
    parameter_ranges: ParameterRanges
    training_job_definition: TrainingJobDefinition
    resource_limits: ResourceLimits = Field(default_factory=ResourceLimits)
    early_stopping_type: Literal["Off", "Auto"] = "Off"
    hyperband: HyperbandConfig | None = None
    completion_criteria: CompletionCriteria = Field(default_factory=CompletionCriteria)
    random_seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    warm_start: WarmStartConfig | None = None
    registration: RegistrationSpec | None = Field(
        default=None, description="Register the best trial's model into this group."
    )
    tags: dict[str, str] = Field(default_factory=dict)
    experiment: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$",
        description="The experiment the tuning job and its trials are runs of.",
    )


@event(owner="tuner", key="tuning_job_name")
class HyperParameterTuningJobStarted(_Data):
    """The tuning job passed validation and its first trials are being requested."""

    tuning_job_name: str
    strategy: Strategy
    max_number_of_training_jobs: int
    warm_start_trials: int = Field(default=0, ge=0, description="Earlier results seeded.")


@event(owner="tuner", key="tuning_job_name")
class TuningTrialCompleted(_Data):
    """One trial ended: its parameters, objective, rounds used and how it ended."""

    tuning_job_name: str
    trial_number: int = Field(ge=0)
    training_job_name: str
    status: Literal["Completed", "Failed", "Stopped"]
    parameters: dict[str, HyperparameterValue]
    objective_value: float | None = None
    rounds_used: int | None = None
    early_stopped: bool = False
    failure_reason: str | None = None


class BestTrainingJob(_Data):
    training_job_name: str
    tuning_job_name: str
    objective_value: float
    parameters: dict[str, HyperparameterValue]
    artifact_uri: str | None = None


@event(owner="tuner", key="tuning_job_name")
class HyperParameterTuningJobCompleted(_Data):
    """The tuning job ended with a best trial (and the best over its warm-start lineage)."""

    tuning_job_name: str
    best_training_job: BestTrainingJob | None = None
    overall_best_training_job: BestTrainingJob | None = None
    trials_completed: int = 0
    trials_failed: int = 0
    trials_stopped: int = 0
    reason: str = ""
    algorithm: str = ""
    registration: RegistrationSpec | None = Field(
        default=None, description="Register best_training_job's model into this group."
    )


@event(owner="tuner", key="tuning_job_name")
class HyperParameterTuningJobFailed(_Data):
    """The tuning job could not go on (too many failed trials, bad definition)."""

    tuning_job_name: str
    reason: str
    best_training_job: BestTrainingJob | None = None


@event(owner="tuner", key="tuning_job_name")
class HyperParameterTuningJobStopped(_Data):
    """The tuning job was stopped (by a user or its max runtime); running trials were stopped."""

    tuning_job_name: str
    reason: str = ""
    best_training_job: BestTrainingJob | None = None
