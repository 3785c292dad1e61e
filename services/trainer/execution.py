"""Run one training job to a written model package (synchronous: called in a worker thread)."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from cairn.artifacts import DatasetLineage, Lineage, ModelManifest, Signature, write_model_package
from cairn.contracts.events import InputChannel, TrainingJobRequested
from cairn.errors import InvalidInput
from cairn.store.base import ObjectStore

from services.trainer.algorithms import (
    InvalidHyperparameters,
    RuntimeExceeded,
    TrainingContext,
    TrainingStopped,
    get_algorithm,
)
from services.trainer.algorithms.base import ensure_not_stopped
from services.trainer.channels import ChannelFiles, read_channel, resolve_channel
from services.trainer.domain import JobFailure, JobResult
from services.trainer.features import prepare

TRAIN_CHANNEL = "train"
VALIDATION_CHANNEL = "validation"


def run_job(
    store: ObjectStore,
    request: TrainingJobRequested,
    package_prefix: str,
    ctx: TrainingContext,
    scratch_dir: Path | None = None,
) -> JobResult:
    """Validate, read, train, package; every expected failure becomes a `JobFailure`."""
    try:
        if request.algorithm == "script" or request.image:
            from services.trainer.script import run_script_job

            return run_script_job(store, request, package_prefix, ctx, scratch_dir)
        return _run_builtin(store, request, package_prefix, ctx)
    except InvalidHyperparameters as error:
        raise JobFailure("invalid_hyperparameters", error.message) from error
    except InvalidInput as error:
        raise JobFailure("invalid_input", error.message) from error
    except RuntimeExceeded as error:
        raise JobFailure("runtime_exceeded", str(error)) from error


def channel(request: TrainingJobRequested, name: str) -> InputChannel | None:
    return next((c for c in request.input_channels if c.name == name), None)


def lineage(request: TrainingJobRequested, channels: list[ChannelFiles]) -> Lineage:
    return Lineage(
        training_job=request.job_name,
        algorithm=request.algorithm,
        hyperparameters=dict(request.hyperparameters),
        datasets=[
            DatasetLineage(channel=c.name, uri=c.uri, sha256=c.sha256, files=dict(c.checksums))
            for c in channels
        ],
    )


def _read_channels(
    store: ObjectStore, request: TrainingJobRequested, train: InputChannel, ctx: TrainingContext
) -> tuple[list[ChannelFiles], list[pd.DataFrame]]:
    """The train channel's files and rows, then the validation channel's when there is one."""
    validation = channel(request, VALIDATION_CHANNEL)
    files = [resolve_channel(store, train)]
    if validation is not None:
        files.append(resolve_channel(store, validation))
    frames = [read_channel(store, f) for f in files]
    for f, frame in zip(files, frames, strict=True):
        ctx.log(f"channel {f.name}: {len(frame)} rows from {len(f.keys)} file(s), {f.sha256}")
    return files, frames


def _run_builtin(
    store: ObjectStore,
    request: TrainingJobRequested,
    package_prefix: str,
    ctx: TrainingContext,
) -> JobResult:
    algorithm = get_algorithm(request.algorithm)
    hyperparameters = algorithm.parse(request.hyperparameters)  # fail fast, before any I/O
    train_channel = channel(request, TRAIN_CHANNEL)
    if train_channel is None:
        raise InvalidInput(f"{request.algorithm} needs a {TRAIN_CHANNEL!r} input channel")
    files, frames = _read_channels(store, request, train_channel, ctx)
    data = prepare(
        frames[0],
        frames[1] if len(frames) > 1 else None,
        label_column=train_channel.label_column,
        mode=algorithm.label_mode(hyperparameters),
    )
    started = time.monotonic()
    try:
        trained = algorithm.train(data, hyperparameters, ctx)
    except (InvalidInput, RuntimeExceeded, TrainingStopped):
        raise
    except Exception as error:  # the algorithm's own error: the job fails, the worker lives
        raise JobFailure("algorithm_error", f"{type(error).__name__}: {error}") from error
    training_time_s = time.monotonic() - started
    ensure_not_stopped(ctx)
    manifest = ModelManifest(
        framework=trained.framework,
        framework_version=trained.framework_version,
        algorithm=request.algorithm,
        task=trained.task,
        signature=Signature(inputs=data.inputs, outputs=trained.outputs),
        label_column=data.label_column,
        class_labels=data.class_labels,
        metrics=trained.metrics,
        lineage=lineage(request, files),
        device=trained.device,
        details=trained.details,
    )
    uri = write_model_package(store, package_prefix, manifest, trained.files)
    ctx.log(f"model package written to {uri}: {trained.metrics}")
    return JobResult(uri, trained.metrics, trained.device, training_time_s, trained.details)
