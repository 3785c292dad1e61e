"""The monitor's documents and pure decisions: schedules, run windows, retraining and promotion."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Literal

from cairn.contracts.events import (
    ChallengerEvaluated,
    MonitoringScheduleRequested,
    RolloutPolicy,
)
from cairn.errors import InvalidInput, NotFound
from pydantic import BaseModel, ConfigDict, Field

SCHEDULES = "monitor/schedules/"
RUNS = "monitor/runs/"
REPORTS = "monitor/reports"
BASELINES = "monitor/baselines"
POLICIES = "monitor/retrain-policies/"
GROUND_TRUTH = "monitor/ground-truth"
RETRAIN_DATA = "monitor/retrain"
# The trainer reads only user namespaces (cairn.namespaces): a retrain's training data goes where
# the user's own outputs go; its holdout, read by the monitor alone, stays private.
RETRAIN_TRAINING_DATA = "outputs/monitor/retrain"
HANDLED_RUNS_KEPT = 200
# Longer intervals mean nothing to a drift check, and past ~8,000 years the next run's date
# cannot be written down (datetime overflows).
MAX_INTERVAL_S = 366 * 24 * 3600.0

Metric = Literal["auc", "accuracy", "rmse"]
HIGHER_IS_BETTER: dict[str, bool] = {"auc": True, "accuracy": True, "rmse": False}


class Stored(BaseModel):
    """Base of what the monitor stores or accepts: no inf or NaN (JSON cannot carry them)."""

    model_config = ConfigDict(allow_inf_nan=False)


class ScheduleNotFound(NotFound):
    code = "schedule_not_found"


class RunNotFound(NotFound):
    code = "run_not_found"


class PolicyNotFound(NotFound):
    code = "retrain_policy_not_found"


class PendingRun(Stored):
    """A run claimed for a window; a restarted monitor finishes it with the same id."""

    run_id: str
    window_start: datetime | None
    window_end: datetime
    claimed_by: str
    claimed_at: datetime


class Schedule(Stored):
    """`monitor/schedules/<endpoint>.json`: how often to check and what was checked so far."""

    endpoint_name: str
    interval_s: float = Field(ge=1)
    drift_p_value: float = Field(default=0.05, gt=0, lt=1)
    correction: Literal["bonferroni", "fdr"] = "bonferroni"
    min_rows: int = Field(default=100, ge=1)
    watermark: datetime | None = Field(
        default=None, description="Capture files stored at or before this time were checked."
    )
    next_run_at: datetime
    pending_run: PendingRun | None = None
    last_run_id: str | None = None
    runs_completed: int = 0
    created_at: datetime
    updated_at: datetime


class RunSummary(Stored):
    """`monitor/runs/<endpoint>/<run_id>.json`: one completed run (quality over time)."""

    endpoint_name: str
    run_id: str
    window_start: datetime | None
    window_end: datetime
    model_package_group: str
    model_version: int
    rows_checked: int
    drifted_features: list[str] = Field(default_factory=list)
    violations: list[str] = Field(default_factory=list)
    quality_metrics: dict[str, float] = Field(default_factory=dict)
    report_uri: str
    completed_at: datetime


class RetrainPolicyBody(Stored):
    """PUT /retrain-policies/{group}: when and how to retrain a model package group on drift."""

    endpoint_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
    cooldown_s: float = Field(default=3600.0, ge=0)
    min_new_labelled_rows: int = Field(default=0, ge=0)
    data: Literal["original+captured", "captured"] = "original+captured"
    metric: Metric = "auc"
    margin: float = Field(default=0.0, ge=0, description="How much better the challenger must be.")
    rollout: RolloutPolicy = Field(
        default_factory=lambda: RolloutPolicy(mode="canary", canary_percent=10, bake_time_s=60)
    )


class RetrainJob(Stored):
    """A retraining job this policy started, until its challenger is judged."""

    job_name: str
    drift_run_id: str
    base_training_job: str
    base_version: int
    holdout_key: str
    correlation_id: str
    status: Literal["claimed", "requested", "evaluated", "deploy_requested"] = "claimed"
    requested_at: datetime
    promoted: bool | None = None
    challenger_version: int | None = None
    evaluation: ChallengerEvaluated | None = Field(
        default=None, description="The challenger-vs-champion verdict, kept for a redelivery."
    )
    deploy_requested_at: datetime | None = None
    deployed_variant: str | None = Field(
        default=None, description="The variant the challenger was sent out as (same on a retry)."
    )


class RetrainPolicy(RetrainPolicyBody):
    """`monitor/retrain-policies/<group>.json`: the policy and its memory (dedupe, cooldown)."""

    model_package_group: str
    last_retrain_at: datetime | None = None
    labelled_rows_at_last_retrain: int = 0
    handled_runs: list[str] = Field(default_factory=list)
    skipped: dict[str, str] = Field(default_factory=dict, description="drift run id -> why")
    jobs: dict[str, RetrainJob] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime


def window_run_id(endpoint_name: str, window_start: datetime | None, window_end: datetime) -> str:
    """A run id fixed by its window, so the same window is the same run after a restart."""
    start = window_start.isoformat() if window_start else "-"
    digest = hashlib.sha256(f"{endpoint_name}|{start}|{window_end.isoformat()}".encode())
    return f"{window_end:%Y%m%dT%H%M%SZ}-{digest.hexdigest()[:8]}"


def window_end_for(now: datetime) -> datetime:
    """The end of a window: a whole second at least one second ago, so every file up to it is
    listed (S3 keeps last-modified times in whole seconds)."""
    return now.replace(microsecond=0) - timedelta(seconds=1)


def is_due(schedule: Schedule, now: datetime) -> bool:
    return schedule.pending_run is not None or schedule.next_run_at <= now


def can_take_over(pending: PendingRun, instance_id: str, now: datetime, lease_s: float) -> bool:
    """A claimed run may be (re)started by its owner, or by anyone once its lease ran out."""
    return pending.claimed_by == instance_id or now - pending.claimed_at >= timedelta(
        seconds=lease_s
    )


def changed_schedule(
    current: Schedule | None, request: MonitoringScheduleRequested, now: datetime
) -> Schedule:
    """The schedule a create/update request leaves; an update keeps the watermark and run state."""
    if request.interval_s > MAX_INTERVAL_S:
        raise InvalidInput(
            f"interval_s must be at most {MAX_INTERVAL_S:.0f} (a year); got {request.interval_s:g}",
            field="interval_s",
        )
    fields = {
        "interval_s": request.interval_s,
        "drift_p_value": request.drift_p_value,
        "correction": request.correction,
        "min_rows": request.min_rows,
    }
    if current is None:
        return Schedule(
            endpoint_name=request.endpoint_name,
            next_run_at=now + timedelta(seconds=request.interval_s),
            created_at=now,
            updated_at=now,
            **fields,
        )
    if all(getattr(current, key) == value for key, value in fields.items()):
        return current
    return current.model_copy(update={**fields, "updated_at": now})


def next_window(
    schedule: Schedule, instance_id: str, now: datetime, lease_s: float
) -> PendingRun | None:
    """The run this instance may claim now: a pending one it may take over, or the next window."""
    pending = schedule.pending_run
    if pending is not None:
        if not can_take_over(pending, instance_id, now, lease_s):
            return None
        return pending.model_copy(update={"claimed_by": instance_id, "claimed_at": now})
    end = window_end_for(now)
    if schedule.watermark is not None and end <= schedule.watermark:
        return None
    return PendingRun(
        run_id=window_run_id(schedule.endpoint_name, schedule.watermark, end),
        window_start=schedule.watermark,
        window_end=end,
        claimed_by=instance_id,
        claimed_at=now,
    )


def postponed(schedule: Schedule, now: datetime) -> Schedule:
    """The schedule with its next run one interval from now (nothing to check yet)."""
    return schedule.model_copy(update={"next_run_at": now + timedelta(seconds=schedule.interval_s)})


def finished(schedule: Schedule, run_id: str, now: datetime) -> Schedule:
    """The schedule after run `run_id` completed: its window is checked (once, on a retry too)."""
    pending = schedule.pending_run
    if pending is None or pending.run_id != run_id:
        return schedule
    return schedule.model_copy(
        update={
            "pending_run": None,
            "watermark": pending.window_end,
            "last_run_id": run_id,
            "runs_completed": schedule.runs_completed + 1,
            "next_run_at": now + timedelta(seconds=schedule.interval_s),
        }
    )


JOB_PROGRESS = ("claimed", "requested", "evaluated", "deploy_requested")

RetrainAction = Literal["retrain", "resume", "duplicate", "cooldown", "not_enough_labels"]


def retrain_job_name(group: str, drift_run_id: str) -> str:
    """A job name fixed by the drift run (dedupe at the trainer too), within 63 characters."""
    digest = hashlib.sha256(f"{group}|{drift_run_id}".encode()).hexdigest()[:10]
    return f"{group[:44].rstrip('-')}-retrain-{digest}"


def decide_retrain(
    policy: RetrainPolicy, drift_run_id: str, labelled_rows: int, now: datetime
) -> tuple[RetrainAction, str]:
    """What to do with a DriftDetected for this policy, and why (pure; the caller records it)."""
    job_name = retrain_job_name(policy.model_package_group, drift_run_id)
    job = policy.jobs.get(job_name)
    if job is not None:
        if job.status == "claimed":
            return "resume", f"retrain {job_name} was claimed but not yet requested"
        return "duplicate", f"drift run {drift_run_id} already started {job_name}"
    if drift_run_id in policy.handled_runs:
        return "duplicate", f"drift run {drift_run_id} was already handled"
    if policy.last_retrain_at is not None:
        elapsed_s = (now - policy.last_retrain_at).total_seconds()
        if elapsed_s < policy.cooldown_s:
            return "cooldown", (
                f"last retrain {elapsed_s:.0f}s ago, within the {policy.cooldown_s:.0f}s cooldown"
            )
    new_rows = labelled_rows - policy.labelled_rows_at_last_retrain
    if new_rows < policy.min_new_labelled_rows:
        return "not_enough_labels", (
            f"{new_rows} new labelled rows, the policy needs {policy.min_new_labelled_rows}"
        )
    return "retrain", f"drift run {drift_run_id}"


def record_decision(
    policy: RetrainPolicy,
    action: RetrainAction,
    reason: str,
    drift_run_id: str,
    job: RetrainJob | None,
    labelled_rows: int,
    now: datetime,
) -> RetrainPolicy:
    """The policy after a decision: the run is remembered; a retrain starts the cooldown."""
    updated = policy.model_copy(deep=True)
    if drift_run_id not in updated.handled_runs:
        updated.handled_runs = [*updated.handled_runs, drift_run_id][-HANDLED_RUNS_KEPT:]
    if action == "retrain" and job is not None:
        updated.jobs[job.job_name] = job
        updated.last_retrain_at = now
        updated.labelled_rows_at_last_retrain = labelled_rows
    elif action in ("cooldown", "not_enough_labels"):
        updated.skipped = dict(list({**updated.skipped, drift_run_id: reason}.items())[-50:])
    updated.updated_at = now
    return updated


def decide_promotion(
    metric: str, challenger: float, champion: float | None, margin: float
) -> tuple[bool, str]:
    """Promote only a challenger better than the champion by at least `margin` on `metric`."""
    if metric not in HIGHER_IS_BETTER:
        raise InvalidInput(f"unknown metric {metric!r}; use one of {sorted(HIGHER_IS_BETTER)}")
    if champion is None:
        return True, f"no champion to compare with; challenger {metric}={challenger:.4f}"
    gain = challenger - champion if HIGHER_IS_BETTER[metric] else champion - challenger
    verdict = "better" if gain >= margin else "not better"
    reason = (
        f"challenger {metric}={challenger:.4f} vs champion {champion:.4f}: "
        f"{verdict} by the margin {margin} (gain {gain:+.4f})"
    )
    return gain >= margin, reason
