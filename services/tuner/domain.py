"""Tuning-job rules: the stored documents, what a request must satisfy, trials and the best one.

Pure: no store, bus or Optuna here (the search itself is in `study.py`).
"""

from __future__ import annotations

import itertools
import re
from datetime import datetime
from typing import Any, Literal

from cairn.contracts.envelope import utc_now
from cairn.contracts.events import HyperparameterValue
from cairn.contracts.tuner_events import (
    BestTrainingJob,
    HyperParameterTuningJobRequested,
)
from cairn.errors import InvalidInput
from pydantic import BaseModel, ConfigDict, Field

JOBS_PREFIX = "tuner/jobs"
MAX_TUNABLE_PARAMETERS = 30
MAX_GRID_JOBS = 1000

TuningStatus = Literal["InProgress", "Stopping", "Completed", "Failed", "Stopped"]
EndAs = Literal["Completed", "Failed", "Stopped"]
TrialStatus = Literal["Pending", "InProgress", "Stopping", "Completed", "Failed", "Stopped"]
TERMINAL_TRIAL: frozenset[str] = frozenset({"Completed", "Failed", "Stopped"})
TERMINAL_TUNING: frozenset[str] = frozenset({"Completed", "Failed", "Stopped"})

# What the built-in algorithms report (`<channel>:<metric>`); xgboost also reports its evals.
_CLASSIFY_REGRESS = {"auc", "logloss", "accuracy", "mlogloss", "rmse", "mae", "r2"}
BUILTIN_METRICS: dict[str, set[str]] = {
    "xgboost": _CLASSIFY_REGRESS | {"error", "merror", "aucpr", "mape", "map", "ndcg"},
    "linear-learner": set(_CLASSIFY_REGRESS),
    "knn": set(_CLASSIFY_REGRESS),
    "kmeans": {"msd"},
    "pca": {"explained_variance_ratio"},
}
# Metrics xgboost can report every round (as `eval_metric`), so a pruner can use them.
XGBOOST_EVAL_METRICS = {"auc", "aucpr", "logloss", "mlogloss", "error", "merror", "rmse", "mae"}


class Trial(BaseModel):
    """One trial: a training job named `<tuning-job>-<number>` and what it reported."""

    model_config = ConfigDict(extra="forbid")

    number: int = Field(ge=0)
    training_job_name: str
    parameters: dict[str, HyperparameterValue]
    status: TrialStatus = "Pending"
    requested: bool = Field(default=False, description="Its TrainingJobRequested was published.")
    stop_sent: bool = Field(default=False, description="Its TrainingJobStopRequested was sent.")
    reported: bool = Field(default=False, description="Its TuningTrialCompleted was published.")
    intermediate: dict[int, float] = Field(default_factory=dict, description="step -> objective")
    system_attrs: dict[str, Any] = Field(default_factory=dict, description="Optuna bookkeeping.")
    objective_value: float | None = None
    rounds_used: int | None = None
    early_stopped: bool = False
    failure_reason: str | None = None
    artifact_uri: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=utc_now)
    ended_at: datetime | None = None


class SeedTrial(BaseModel):
    """An earlier result the search starts from (warm start)."""

    model_config = ConfigDict(extra="forbid")

    training_job_name: str
    tuning_job_name: str | None = None
    parameters: dict[str, HyperparameterValue]
    objective_value: float
    artifact_uri: str | None = None


class TuningJob(BaseModel):
    """The durable state of one tuning job (`tuner/jobs/<name>.json`)."""

    model_config = ConfigDict(extra="forbid")

    tuning_job_name: str
    request: HyperParameterTuningJobRequested
    status: TuningStatus = "InProgress"
    end_as: EndAs | None = Field(default=None, description="Set once no new trial may start.")
    end_reason: str = ""
    started_published: bool = False
    outcome_published: bool = False
    seed: int
    max_trials: int = Field(ge=1, description="Max jobs (the grid size under Grid).")
    correlation_id: str | None = None
    created_at: datetime = Field(default_factory=utc_now)
    ended_at: datetime | None = None
    trials: list[Trial] = Field(default_factory=list)
    warm_start_trials: list[SeedTrial] = Field(default_factory=list)

    def trial(self, number: int) -> Trial | None:
        return self.trials[number] if 0 <= number < len(self.trials) else None

    @property
    def running(self) -> list[Trial]:
        return [t for t in self.trials if t.status not in TERMINAL_TRIAL]

    def count(self, status: str) -> int:
        return sum(1 for t in self.trials if t.status == status)


def job_key(name: str) -> str:
    return f"{name}.json"


def trial_job_name(tuning_job_name: str, number: int) -> str:
    return f"{tuning_job_name}-{number}"


_TRIAL_NAME = re.compile(r"^(?P<tuning>[A-Za-z0-9][A-Za-z0-9-]{0,31})-(?P<number>\d{1,6})$")


def parse_trial_name(job_name: str) -> tuple[str, int] | None:
    """`(tuning job, trial number)` for a name that may be a trial's, else None."""
    match = _TRIAL_NAME.match(job_name)
    return (match["tuning"], int(match["number"])) if match else None


# Validation ------------------------------------------------------------------------------------


def _bad(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", field=field)


def validate_request(request: HyperParameterTuningJobRequested) -> None:
    """Every check that needs no store; InvalidInput names the field.

    Raises:
        InvalidInput: an empty/inverted range, a log range including 0, a grid over a continuous
            parameter, an objective the algorithm never reports, over 30 parameters, more
            parallel jobs than jobs, Hyperband's resource among the ranges, ...
    """
    _validate_ranges(request)
    _validate_strategy(request)
    _validate_objective(request)
    limits = request.resource_limits
    if limits.max_parallel_training_jobs > limits.max_number_of_training_jobs:
        raise _bad(
            "resource_limits.max_parallel_training_jobs",
            f"{limits.max_parallel_training_jobs} is above max_number_of_training_jobs "
            f"({limits.max_number_of_training_jobs})",
        )


def tuned_names(request: HyperParameterTuningJobRequested) -> list[str]:
    ranges = request.parameter_ranges
    return [
        *(r.name for r in ranges.integer),
        *(r.name for r in ranges.continuous),
        *(r.name for r in ranges.categorical),
    ]


def _validate_ranges(request: HyperParameterTuningJobRequested) -> None:
    ranges = request.parameter_ranges
    names = tuned_names(request)
    if not names:
        raise _bad("parameter_ranges", "give at least one range to tune")
    if len(names) > MAX_TUNABLE_PARAMETERS:
        raise _bad("parameter_ranges", f"{len(names)} parameters; at most 30 may be tuned")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise _bad("parameter_ranges", f"{duplicated} named more than once")
    static = request.training_job_definition.static_hyperparameters
    if clash := sorted(set(names) & set(static)):
        raise _bad("training_job_definition.static_hyperparameters", f"{clash} are also tuned")
    for kind, numeric in (("integer", ranges.integer), ("continuous", ranges.continuous)):
        for index, item in enumerate(numeric):
            _validate_numeric(f"parameter_ranges.{kind}[{index}]", item, kind == "integer")
    for index, categorical in enumerate(ranges.categorical):
        field = f"parameter_ranges.categorical[{index}].values"
        if not categorical.values:
            raise _bad(field, "empty range: give at least one value")
        if len(set(map(repr, categorical.values))) != len(categorical.values):
            raise _bad(field, "a value is listed twice")


def _validate_numeric(field: str, item: Any, integer: bool) -> None:
    low, high, scaling = item.min_value, item.max_value, item.scaling_type
    if low > high:
        raise _bad(field, f"inverted range: min_value {low} > max_value {high}")
    if low == high:
        raise _bad(field, f"empty range: min_value == max_value == {low}")
    if scaling == "Logarithmic" and low <= 0:
        raise _bad(f"{field}.min_value", f"a Logarithmic range must lie above 0 (min {low})")
    if scaling == "ReverseLogarithmic":
        if integer:
            raise _bad(f"{field}.scaling_type", "ReverseLogarithmic is for continuous ranges")
        if not (low >= 0 and high < 1):
            raise _bad(field, "a ReverseLogarithmic range must lie within [0, 1)")


def _validate_strategy(request: HyperParameterTuningJobRequested) -> None:
    ranges = request.parameter_ranges
    if request.strategy == "Grid":
        if ranges.continuous:
            raise _bad(
                "parameter_ranges.continuous",
                "Grid search needs categorical (or integer) ranges, not continuous ones",
            )
        if grid_size(request) > MAX_GRID_JOBS:
            raise _bad("parameter_ranges", f"the grid has {grid_size(request)} points (max 1000)")
    if request.strategy == "Hyperband":
        band = request.hyperband
        if band is None:
            raise _bad("hyperband", "the Hyperband strategy needs min_resource and max_resource")
        if band.min_resource >= band.max_resource:
            raise _bad("hyperband.min_resource", "must be below hyperband.max_resource")
        if band.resource_parameter in tuned_names(request):
            raise _bad(
                "parameter_ranges",
                f"{band.resource_parameter} is Hyperband's resource; it cannot also be tuned",
            )


def _validate_objective(request: HyperParameterTuningJobRequested) -> None:
    definition = request.training_job_definition
    metric = request.objective.metric_name
    field = "objective.metric_name"
    if definition.algorithm == "script":
        defined = {d.name for d in definition.metric_definitions}
        if metric not in defined:
            raise _bad(field, f"{metric!r} is not among metric_definitions {sorted(defined)}")
        return
    known = BUILTIN_METRICS.get(definition.algorithm)
    if known is None:
        raise _bad(
            "training_job_definition.algorithm",
            f"{definition.algorithm!r} reports no metric to tune (use {sorted(BUILTIN_METRICS)} "
            "or script with metric_definitions)",
        )
    channel, _, name = metric.partition(":")
    if channel not in ("train", "validation") or name not in known:
        raise _bad(
            field,
            f"{definition.algorithm} never reports {metric!r}; it reports train:/validation: "
            f"{sorted(known)}",
        )
    channels = {c.name for c in definition.input_channels}
    if channel == "validation" and "validation" not in channels:
        raise _bad(field, f"{metric!r} needs a 'validation' input channel")


def grid_size(request: HyperParameterTuningJobRequested) -> int:
    ranges = request.parameter_ranges
    sizes = [len(r.values) for r in ranges.categorical]
    sizes += [r.max_value - r.min_value + 1 for r in ranges.integer]
    size = 1
    for count in sizes:
        size *= max(count, 1)
    return size


def grid_points(request: HyperParameterTuningJobRequested) -> dict[str, list[HyperparameterValue]]:
    """Every value of every parameter, for a grid search."""
    ranges = request.parameter_ranges
    points: dict[str, list[HyperparameterValue]] = {
        r.name: list(r.values) for r in ranges.categorical
    }
    for item in ranges.integer:
        points[item.name] = list(range(item.min_value, item.max_value + 1))
    return points


def max_trials(request: HyperParameterTuningJobRequested) -> int:
    """Max jobs; under Grid, the number of combinations (within max jobs)."""
    limit = request.resource_limits.max_number_of_training_jobs
    if request.strategy == "Grid":
        return min(limit, len(list(itertools.islice(_combinations(request), limit + 1))))
    return limit


def _combinations(request: HyperParameterTuningJobRequested) -> Any:
    return itertools.product(*grid_points(request).values())


# Trials ----------------------------------------------------------------------------------------


def trial_hyperparameters(
    request: HyperParameterTuningJobRequested, parameters: dict[str, HyperparameterValue]
) -> dict[str, HyperparameterValue]:
    """Static hyperparameters, what the tuner must set (Hyperband's resource, xgboost's evals),
    then the trial's own parameters."""
    definition = request.training_job_definition
    values: dict[str, HyperparameterValue] = dict(definition.static_hyperparameters)
    if request.hyperband is not None and request.strategy == "Hyperband":
        values[request.hyperband.resource_parameter] = request.hyperband.max_resource
    if definition.algorithm == "xgboost":
        metric = request.objective.metric_name.partition(":")[2]
        evals = str(values.get("eval_metric", ""))
        if metric in XGBOOST_EVAL_METRICS and metric not in evals.split(","):
            values["eval_metric"] = ",".join(filter(None, [evals, metric]))
        if request.hyperband is not None and request.strategy == "Hyperband":
            values.setdefault("progress_every", max(1, min(10, request.hyperband.min_resource)))
    return values | parameters


def better(request: HyperParameterTuningJobRequested, a: float, b: float) -> bool:
    """Whether objective value `a` beats `b`."""
    return a > b if request.objective.type == "Maximize" else a < b


Candidate = tuple[str, str, float, dict[str, Any], str | None]


def best_of(
    request: HyperParameterTuningJobRequested, candidates: list[Candidate]
) -> BestTrainingJob | None:
    """The best of `(job, tuning job, value, parameters, artifact)`; ties go to the earliest."""
    best: BestTrainingJob | None = None
    for job_name, tuning_job, value, parameters, artifact_uri in candidates:
        if best is None or better(request, value, best.objective_value):
            best = BestTrainingJob(
                training_job_name=job_name,
                tuning_job_name=tuning_job,
                objective_value=value,
                parameters=parameters,
                artifact_uri=artifact_uri,
            )
    return best


def best_trial(job: TuningJob) -> BestTrainingJob | None:
    """BestTrainingJob: the best completed trial of this tuning job."""
    return best_of(job.request, _completed(job))


def overall_best(job: TuningJob) -> BestTrainingJob | None:
    """OverallBestTrainingJob: the best over this job and every warm-start result it learnt from."""
    seeds: list[Candidate] = [
        (
            s.training_job_name,
            s.tuning_job_name or "",
            s.objective_value,
            s.parameters,
            s.artifact_uri,
        )
        for s in job.warm_start_trials
    ]
    return best_of(job.request, [*seeds, *_completed(job)])


def _completed(job: TuningJob) -> list[Candidate]:
    return [
        (t.training_job_name, job.tuning_job_name, t.objective_value, t.parameters, t.artifact_uri)
        for t in job.trials
        if t.status == "Completed" and t.objective_value is not None
    ]


def completion_reason(job: TuningJob) -> tuple[EndAs, str] | None:
    """How and why the job should end before its budget is spent (criteria, failures), or None."""
    request = job.request
    criteria = request.completion_criteria
    limit = request.resource_limits.max_failed_training_jobs
    if limit is not None and job.count("Failed") > limit:
        return "Failed", f"{job.count('Failed')} trials failed (max_failed_training_jobs={limit})"
    best = best_trial(job)
    target = criteria.target_objective_metric_value
    if (
        best is not None
        and target is not None
        and not better(request, target, best.objective_value)
    ):
        return "Completed", f"the objective reached the target {target} ({best.objective_value})"
    patience = criteria.max_number_of_training_jobs_not_improving
    if patience is not None and _not_improving(job) >= patience:
        return "Completed", f"{patience} trials in a row did not improve the objective"
    if criteria.complete_on_convergence and _converged(job):
        return "Completed", "the search converged (the best objective stopped moving)"
    return None


def _finished_values(job: TuningJob) -> list[float]:
    ended = sorted(
        (t for t in job.trials if t.status == "Completed" and t.objective_value is not None),
        key=lambda t: (t.ended_at or t.created_at, t.number),
    )
    return [t.objective_value for t in ended if t.objective_value is not None]


def _not_improving(job: TuningJob) -> int:
    """Completed trials since the last one that improved on the best so far."""
    best: float | None = None
    since = 0
    for value in _finished_values(job):
        if best is None or better(job.request, value, best):
            best, since = value, 0
        else:
            since += 1
    return since


def _converged(job: TuningJob, window: int = 10, tolerance: float = 1e-4) -> bool:
    """The best value moved by less than `tolerance` (relative) over the last `window` trials."""
    values = _finished_values(job)
    if len(values) < 2 * window:
        return False
    running: list[float] = []
    for value in values:
        running.append(
            value if not running or better(job.request, value, running[-1]) else running[-1]
        )
    before, now = running[-window - 1], running[-1]
    return abs(now - before) <= tolerance * max(abs(before), 1e-12)
