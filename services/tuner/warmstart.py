"""Warm start: the earlier results a new tuning job learns from.

A parent tuning job brings its completed trials and, recursively, every result it was itself
warm-started with (stored on it when it was created), so chains of warm starts keep their whole
history. Past training jobs are read through the trainer's declared `TrainingJobView` contract.
"""

from __future__ import annotations

from cairn.contracts.events import HyperparameterValue
from cairn.contracts.state import TrainingJobView, read_state
from cairn.contracts.tuner_events import HyperParameterTuningJobRequested
from cairn.documents import DocumentStore
from cairn.errors import InvalidInput
from cairn.store.base import ObjectStore

from services.tuner.domain import TERMINAL_TUNING, SeedTrial, TuningJob, job_key

MAX_SEEDS = 500


def resolve_warm_start(
    store: ObjectStore, jobs: DocumentStore[TuningJob], request: HyperParameterTuningJobRequested
) -> list[SeedTrial]:
    """Every earlier result to seed the study with, deduplicated by training job.

    Raises:
        InvalidInput: an unknown or unfinished parent, a parent of another algorithm or
            objective under IdenticalDataAndAlgorithm, a training job without the objective.
    """
    config = request.warm_start
    if config is None:
        return []
    seeds: dict[str, SeedTrial] = {}
    for index, parent_name in enumerate(config.parent_tuning_jobs):
        field = f"warm_start.parent_tuning_jobs[{index}]"
        parent = _parent(jobs, parent_name, field)
        _compatible(request, parent, field, config.type == "IdenticalDataAndAlgorithm")
        for seed in parent.warm_start_trials:
            seeds.setdefault(seed.training_job_name, seed)
        for trial in parent.trials:
            if trial.status == "Completed" and trial.objective_value is not None:
                seeds[trial.training_job_name] = SeedTrial(
                    training_job_name=trial.training_job_name,
                    tuning_job_name=parent.tuning_job_name,
                    parameters=trial.parameters,
                    objective_value=trial.objective_value,
                    artifact_uri=trial.artifact_uri,
                )
    for index, job_name in enumerate(config.training_jobs):
        seed = _past_job(store, request, job_name, f"warm_start.training_jobs[{index}]")
        seeds[seed.training_job_name] = seed
    return list(seeds.values())[-MAX_SEEDS:]


def _parent(jobs: DocumentStore[TuningJob], name: str, field: str) -> TuningJob:
    versioned = jobs.get_or_none(job_key(name))
    if versioned is None:
        raise InvalidInput(f"{field}: no tuning job {name!r}", field=field)
    if versioned.doc.status not in TERMINAL_TUNING:
        raise InvalidInput(
            f"{field}: tuning job {name!r} is {versioned.doc.status}; warm start from a finished "
            "one",
            field=field,
        )
    return versioned.doc


def _compatible(
    request: HyperParameterTuningJobRequested, parent: TuningJob, field: str, identical: bool
) -> None:
    """Objectives must match; IdenticalDataAndAlgorithm also needs the same algorithm and data."""
    ours, theirs = request, parent.request
    if ours.objective.metric_name != theirs.objective.metric_name:
        raise InvalidInput(
            f"{field}: {parent.tuning_job_name!r} tuned {theirs.objective.metric_name!r}, "
            f"not {ours.objective.metric_name!r}",
            field=field,
        )
    if not identical:
        return
    mine, parents = ours.training_job_definition, theirs.training_job_definition
    if mine.algorithm != parents.algorithm or mine.input_channels != parents.input_channels:
        raise InvalidInput(
            f"{field}: {parent.tuning_job_name!r} used another algorithm or other data; "
            "use warm start type TransferLearning",
            field=field,
        )


def _past_job(
    store: ObjectStore, request: HyperParameterTuningJobRequested, name: str, field: str
) -> SeedTrial:
    view = read_state(store, TrainingJobView, name)
    if view is None:
        raise InvalidInput(f"{field}: no training job {name!r}", field=field)
    metric = request.objective.metric_name
    value = view.metrics.get(metric)
    if view.status != "Completed" or value is None:
        raise InvalidInput(
            f"{field}: training job {name!r} is {view.status} and reported no {metric!r}",
            field=field,
        )
    raw = view.request.get("hyperparameters") or {}
    parameters: dict[str, HyperparameterValue] = {
        key: item for key, item in raw.items() if isinstance(item, str | int | float | bool)
    }
    return SeedTrial(
        training_job_name=name,
        parameters=parameters,
        objective_value=value,
        artifact_uri=view.artifact_uri,
    )
