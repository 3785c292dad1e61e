"""What a trial's training-job events do to its tuning job (pure functions of the document)."""

from __future__ import annotations

from cairn.contracts.envelope import utc_now
from cairn.contracts.events import TrainingJobCompleted, TrainingJobFailed, TrainingJobProgressed
from cairn.contracts.tuner_events import TrainingJobStopped

from services.tuner.domain import TERMINAL_TRIAL, Trial, TuningJob, trial_hyperparameters
from services.tuner.study import should_prune, uses_pruner

TrialOutcome = TrainingJobCompleted | TrainingJobFailed | TrainingJobStopped


def _trial(job: TuningJob, number: int, job_name: str) -> Trial | None:
    trial = job.trial(number)
    return trial if trial is not None and trial.training_job_name == job_name else None


def _with(job: TuningJob, trial: Trial) -> TuningJob:
    trials = list(job.trials)
    trials[trial.number] = trial
    return job.model_copy(update={"trials": trials})


def record_progress(
    job: TuningJob, number: int, job_name: str, event: TrainingJobProgressed
) -> TuningJob:
    """Store the intermediate objective; the pruner may mark the trial for stopping."""
    trial = _trial(job, number, job_name)
    if trial is None or trial.status in TERMINAL_TRIAL:
        return job
    value = event.metrics.get(job.request.objective.metric_name)
    update: dict[str, object] = {
        "rounds_used": max(trial.rounds_used or 0, event.iteration),
        "status": "InProgress" if trial.status == "Pending" else trial.status,
        "requested": True,
    }
    if value is not None:
        update["intermediate"] = trial.intermediate | {event.iteration: value}
    moved = _with(job, trial.model_copy(update=update))
    last = event.total_iterations is not None and event.iteration >= event.total_iterations
    if value is None or last or trial.status == "Stopping" or job.end_as or not uses_pruner(job):
        return moved
    prune, system_attrs = should_prune(moved, number)
    pruned: dict[str, object] = {"system_attrs": system_attrs}
    if prune:
        pruned |= {"status": "Stopping", "early_stopped": True}
    return _with(moved, moved.trials[number].model_copy(update=pruned))


def record_outcome(job: TuningJob, number: int, job_name: str, event: TrialOutcome) -> TuningJob:
    """The trial's end: objective, rounds used, or the failure's reason."""
    trial = _trial(job, number, job_name)
    if trial is None or trial.status in TERMINAL_TRIAL:
        return job
    update: dict[str, object] = {"ended_at": utc_now(), "requested": True}
    if isinstance(event, TrainingJobCompleted):
        update |= _completed(job, trial, event)
    elif isinstance(event, TrainingJobFailed):
        update |= {"status": "Failed", "failure_reason": event.reason}
    else:
        update |= {
            "status": "Stopped",
            "rounds_used": event.iteration if event.iteration is not None else trial.rounds_used,
        }
    return _with(job, trial.model_copy(update=update))


def _completed(job: TuningJob, trial: Trial, event: TrainingJobCompleted) -> dict[str, object]:
    metric = job.request.objective.metric_name
    value = event.metrics.get(metric)
    rounds = trial_hyperparameters(job.request, trial.parameters).get("num_round")
    found: dict[str, object] = {
        "artifact_uri": event.artifact_uri,
        "metrics": event.metrics,
        "rounds_used": rounds if isinstance(rounds, int) else trial.rounds_used,
    }
    if value is None:
        return found | {"status": "Failed", "failure_reason": f"the job reported no {metric!r}"}
    return found | {"status": "Completed", "objective_value": value}
