"""Run one training job to a written model package (synchronous: called in a worker thread)."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from cairn.artifacts import (
    DatasetLineage,
    InputColumn,
    Lineage,
    ModelManifest,
    Signature,
    write_model_package,
)
from cairn.contracts.events import InputChannel, TrainingJobRequested
from cairn.errors import InvalidInput
from cairn.store.base import ObjectStore

from services.trainer.algorithms import (
    InvalidHyperparameters,
    RuntimeExceeded,
    TrainedModel,
    TrainingContext,
    TrainingStopped,
    get_algorithm,
)
from services.trainer.algorithms.base import ensure_not_stopped
from services.trainer.algorithms.deep_inputs import FileAlgorithm
from services.trainer.channels import ChannelFiles, read_channel, resolve_channel
from services.trainer.domain import JobFailure, JobResult
from services.trainer.file_jobs import run_file_job
from services.trainer.xgboost_jobs import ScaleOut, needs_scale_out

TRAIN_CHANNEL = "train"
VALIDATION_CHANNEL = "validation"


def run_job(
    store: ObjectStore,
    request: TrainingJobRequested,
    package_prefix: str,
    ctx: TrainingContext,
    scratch_dir: Path | None = None,
    scale: ScaleOut | None = None,
) -> JobResult:
    """Validate, read, train, package; every expected failure becomes a `JobFailure`."""
    scale = scale or ScaleOut(scratch_dir=scratch_dir)
    try:
        if request.algorithm == "script" or request.image:
            from services.trainer.script import run_script_job

            return run_script_job(store, request, package_prefix, ctx, scratch_dir, scale)
        return _run_builtin(store, request, package_prefix, ctx, scale)
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
    scale: ScaleOut,
) -> JobResult:
    algorithm = get_algorithm(request.algorithm)
    hyperparameters = algorithm.parse(request.hyperparameters)  # fail fast, before any I/O
    if isinstance(algorithm, FileAlgorithm):  # images, text pairs, series: files, not a table
        return run_file_job(store, request, algorithm, hyperparameters, package_prefix, ctx)
    train_channel = channel(request, TRAIN_CHANNEL)
    if train_channel is None:
        raise InvalidInput(f"{request.algorithm} needs a {TRAIN_CHANNEL!r} input channel")
    scaled = algorithm.name == "xgboost" and needs_scale_out(request)
    if scaled and request.input_mode == "Pipe":
        from services.trainer.streaming import train_pipe_mode

        started = time.monotonic()
        validation = channel(request, VALIDATION_CHANNEL)
        try:
            streamed = train_pipe_mode(
                store, request, train_channel, validation, hyperparameters, ctx, scale
            )
        except (InvalidInput, RuntimeExceeded, TrainingStopped, JobFailure):
            raise
        except Exception as error:  # XGBoost's own error: the job fails, the worker lives
            raise JobFailure("algorithm_error", f"{type(error).__name__}: {error}") from error
        return _packaged(
            store,
            request,
            package_prefix,
            ctx,
            streamed.trained,
            streamed.inputs,
            streamed.label_column,
            streamed.class_labels,
            streamed.files,
            time.monotonic() - started,
        )
    files, frames = _read_channels(store, request, train_channel, ctx)
    data = algorithm.prepare(
        frames[0],
        frames[1] if len(frames) > 1 else None,
        label_column=train_channel.label_column,
        hyperparameters=hyperparameters,
    )
    started = time.monotonic()
    try:
        if scaled:
            from services.trainer.xgboost_jobs import train_file_mode

            trained = train_file_mode(data, hyperparameters, ctx, scale)
        else:
            trained = algorithm.train(data, hyperparameters, ctx)
    except (InvalidInput, RuntimeExceeded, TrainingStopped, JobFailure):
        raise
    except Exception as error:  # the algorithm's own error: the job fails, the worker lives
        raise JobFailure("algorithm_error", f"{type(error).__name__}: {error}") from error
    return _packaged(
        store,
        request,
        package_prefix,
        ctx,
        trained,
        data.inputs,
        data.label_column,
        data.class_labels,
        files,
        time.monotonic() - started,
    )


def _packaged(
    store: ObjectStore,
    request: TrainingJobRequested,
    package_prefix: str,
    ctx: TrainingContext,
    trained: TrainedModel,
    inputs: list[InputColumn],
    label_column: str | None,
    class_labels: list[str] | None,
    files: list[ChannelFiles],
    training_time_s: float,
) -> JobResult:
    """Write the model package of a trained model (after a stop only when it is to be kept)."""
    ensure_not_stopped(ctx)
    manifest = ModelManifest(
        framework=trained.framework,
        framework_version=trained.framework_version,
        algorithm=request.algorithm,
        task=trained.task,
        signature=Signature(inputs=inputs, outputs=trained.outputs),
        label_column=label_column,
        class_labels=class_labels,
        metrics=trained.metrics,
        lineage=lineage(request, files),
        device=trained.device,
        details=trained.details,
    )
    uri = write_model_package(store, package_prefix, manifest, trained.files)
    ctx.log(f"model package written to {uri}: {trained.metrics}")
    return JobResult(uri, trained.metrics, trained.device, training_time_s, trained.details)
