"""Runs and experiments: the run document and the pure rules that fold events into it.

Every training job, tuning job, processing job and pipeline execution is a run
(`<kind>.<name>`, e.g. `training.credit-7`) in one experiment. Events about one run come on
several topics, so they may arrive in any order and more than once: every rule here is
order-tolerant and idempotent (a status only moves forward, a metric point is keyed by its step).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from cairn.contracts.envelope import utc_now
from pydantic import BaseModel, ConfigDict, Field

RUNS_PREFIX = "experiments/runs"
DEFAULT_EXPERIMENT = "default"
MAX_POINTS_PER_METRIC = 10_000

RunKind = Literal["training", "tuning", "processing", "pipeline"]
RunStatus = Literal["Pending", "InProgress", "Completed", "Failed", "Stopped"]
ExperimentSource = Literal["request", "inherited", "default"]
KINDS: tuple[RunKind, ...] = ("training", "tuning", "processing", "pipeline")
_RANK = {"Pending": 0, "InProgress": 1, "Completed": 2, "Failed": 2, "Stopped": 2}


class MetricPoint(BaseModel):
    """One value of a metric at a step (an iteration, a trial number)."""

    model_config = ConfigDict(extra="forbid")

    step: int
    value: float
    at: datetime


class Lineage(BaseModel):
    """Where a run's data came from and went, and the runs around it."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[str] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)
    parent: str | None = None
    children: list[str] = Field(default_factory=list)


class Run(BaseModel):
    """The durable state of one run (`experiments/runs/<run_id>.json`)."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    kind: RunKind
    name: str
    experiment: str = DEFAULT_EXPERIMENT
    experiment_source: ExperimentSource = "default"
    status: RunStatus = "Pending"
    parameters: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    history: dict[str, list[MetricPoint]] = Field(default_factory=dict)
    artifacts: dict[str, str] = Field(default_factory=dict)
    lineage: Lineage = Field(default_factory=Lineage)
    failure_reason: str | None = None
    created_at: datetime = Field(default_factory=utc_now)
    started_at: datetime | None = None
    ended_at: datetime | None = None


def run_id(kind: RunKind, name: str) -> str:
    return f"{kind}.{name}"


def run_key(run: str) -> str:
    return f"{run}.json"


def blank(kind: RunKind, name: str) -> Run:
    return Run(run_id=run_id(kind, name), kind=kind, name=name)


def with_experiment(run: Run, experiment: str | None, *, inherited: str | None = None) -> Run:
    """The run's experiment: the request's, else its parent's, else the default."""
    if experiment:
        return run.model_copy(update={"experiment": experiment, "experiment_source": "request"})
    if inherited and run.experiment_source != "request":
        return run.model_copy(update={"experiment": inherited, "experiment_source": "inherited"})
    return run


def moved(run: Run, status: RunStatus, *, reason: str | None = None) -> Run:
    """The run with its status moved forward (never back: events arrive in any order)."""
    if _RANK[status] < _RANK[run.status] or (
        _RANK[status] == _RANK[run.status] and status != run.status and _RANK[status] == 2
    ):
        return run
    update: dict[str, Any] = {"status": status}
    now = utc_now()
    if status == "InProgress" and run.started_at is None:
        update["started_at"] = now
    if _RANK[status] == 2:
        update["ended_at"] = run.ended_at or now
        if reason is not None:
            update["failure_reason"] = reason
    return run.model_copy(update=update)


def with_points(run: Run, step: int, metrics: dict[str, float]) -> Run:
    """Record each metric's value at `step` (a redelivered step replaces itself)."""
    history = {name: list(points) for name, points in run.history.items()}
    now = utc_now()
    for name, value in metrics.items():
        points = [p for p in history.get(name, []) if p.step != step]
        points.append(MetricPoint(step=step, value=value, at=now))
        points.sort(key=lambda p: p.step)
        history[name] = points[-MAX_POINTS_PER_METRIC:]
    latest = {name: points[-1].value for name, points in history.items() if points}
    return run.model_copy(update={"history": history, "metrics": {**run.metrics, **latest}})


def with_final(run: Run, metrics: dict[str, float]) -> Run:
    """Final metrics override the latest progress values."""
    return run.model_copy(update={"metrics": {**run.metrics, **metrics}})


def with_lineage(run: Run, **changes: Any) -> Run:
    """Add inputs/outputs/children (kept unique, in order) or set the parent."""
    lineage = run.lineage.model_copy()
    for field in ("inputs", "outputs", "children"):
        for item in changes.get(field, []):
            if item not in getattr(lineage, field):
                setattr(lineage, field, [*getattr(lineage, field), item])
    if changes.get("parent"):
        lineage.parent = changes["parent"]
    return run.model_copy(update={"lineage": lineage})


def final_metric(run: Run, name: str) -> float | None:
    """A metric by exact name, else the one whose name ends in `:<name>` (`auc` finds
    `validation:auc`; with several, the validation one wins)."""
    if name in run.metrics:
        return run.metrics[name]
    matches = sorted(key for key in run.metrics if key.endswith(f":{name}"))
    if not matches:
        return None
    preferred = [key for key in matches if key.startswith("validation:")]
    return run.metrics[(preferred or matches)[0]]


def summary(run: Run) -> dict[str, Any]:
    """The list view of a run: no metric history."""
    return run.model_dump(mode="json", exclude={"history"})


def experiments(runs: list[Run]) -> list[dict[str, Any]]:
    """Each experiment with its run count and latest activity."""
    found: dict[str, dict[str, Any]] = {}
    for run in runs:
        entry = found.setdefault(
            run.experiment, {"experiment": run.experiment, "runs": 0, "last_run_at": None}
        )
        entry["runs"] += 1
        at = (run.ended_at or run.started_at or run.created_at).isoformat()
        entry["last_run_at"] = max(filter(None, [entry["last_run_at"], at]))
    return sorted(found.values(), key=lambda e: str(e["experiment"]))
