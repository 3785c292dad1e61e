"""XGBoost beyond one in-memory attempt: checkpoints and resume, Dask workers, Pipe input.

The same model package as `XGBoostAlgorithm.train` comes out (same files, outputs, metric names);
only how the booster is trained differs. A job with a checkpoint prefix saves its booster every
K rounds and a later attempt continues from the newest checkpoint (XGBoost's `xgb_model`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xgboost
from cairn.artifacts import XGBOOST_MODEL_FILE
from cairn.contracts.events import TrainingJobRequested

from services.trainer.algorithms import TrainedModel, TrainingContext
from services.trainer.algorithms.base import ensure_not_stopped
from services.trainer.algorithms.xgboost_algo import (
    XGBoostHyperparameters,
    _check,
    _metrics,
    _outputs,
    _params,
    _ProgressCallback,
    _task,
)
from services.trainer.checkpoints import CheckpointCallback, Checkpoints
from services.trainer.features import TrainingData


@dataclass
class ScaleOut:
    """How one job trains beyond a single in-memory process (request + trainer settings)."""

    instance_count: int = 1
    checkpoints: Checkpoints | None = None
    on_resume: Callable[[int], None] = lambda rounds: None
    dask_scheduler: str | None = None
    workers_wait_s: float = 30.0
    pipe_chunk_bytes: int = 8 * 1024 * 1024
    pipe_batch_rows: int = 65_536
    scratch_dir: Path | None = None
    checkpoint_sync_s: float = 5.0
    details: dict[str, Any] = field(default_factory=dict)


def needs_scale_out(request: TrainingJobRequested) -> bool:
    return (
        request.resources.instance_count > 1
        or request.checkpoint_config is not None
        or request.input_mode == "Pipe"
    )


class OffsetProgress(_ProgressCallback):
    """Progress in rounds of the whole job, when an attempt resumed after `start` rounds."""

    def __init__(self, ctx: TrainingContext, total: int, every: int, start: int) -> None:
        super().__init__(ctx, total, every)
        self.start = start

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        return bool(super().after_iteration(model, epoch + self.start, evals_log))


def resume_point(scale: ScaleOut, ctx: TrainingContext) -> tuple[int, bytearray | None]:
    """(rounds already trained, their booster) from the newest checkpoint, or (0, None)."""
    if scale.checkpoints is None:
        return 0, None
    found = scale.checkpoints.latest_booster()
    if found is None:
        ctx.log(f"no checkpoint under {scale.checkpoints.prefix}/: starting at round 0")
        return 0, None
    rounds, raw = found
    ctx.log(f"resuming from the checkpoint of round {rounds} under {scale.checkpoints.prefix}/")
    scale.on_resume(rounds)
    scale.details["resumed_from_round"] = rounds
    return rounds, bytearray(raw)


def local_callbacks(
    hp: XGBoostHyperparameters, ctx: TrainingContext, scale: ScaleOut, start: int
) -> list[xgboost.callback.TrainingCallback]:
    callbacks: list[xgboost.callback.TrainingCallback] = [
        OffsetProgress(ctx, hp.num_round, hp.progress_every, start)
    ]
    if scale.checkpoints is not None:
        callbacks.append(
            CheckpointCallback(
                scale.checkpoints.save_booster, scale.checkpoints.interval_rounds, start
            )
        )
    return callbacks


def train_file_mode(
    data: TrainingData, hp: XGBoostHyperparameters, ctx: TrainingContext, scale: ScaleOut
) -> TrainedModel:
    """Whole channels in memory: in this process, or over `instance_count` Dask workers."""
    n_classes = len(data.class_labels or [])
    _check(hp, data, n_classes)
    device = "cuda" if ctx.use_gpu else "cpu"
    params = _params(hp, device, n_classes)
    start, model = resume_point(scale, ctx)
    if scale.instance_count > 1:
        from services.trainer.dask_training import train_on_dask

        booster = train_on_dask(data, params, hp, ctx, scale, start, model)
    else:
        from services.trainer.algorithms.xgboost_algo import _matrices

        evals = _matrices(data)
        ctx.log(f"xgboost {xgboost.__version__} on {device}: {params}")
        booster = xgboost.train(
            params,
            evals[0][0],
            num_boost_round=max(0, hp.num_round - start),
            evals=evals,
            early_stopping_rounds=hp.early_stopping_rounds,
            callbacks=local_callbacks(hp, ctx, scale, start),
            verbose_eval=False,
            xgb_model=model,
        )
    ensure_not_stopped(ctx)
    metrics = _metrics(booster, data, hp.objective, n_classes)
    return packaged(booster, hp, data.class_labels, metrics, device, scale)


def packaged(
    booster: xgboost.Booster,
    hp: XGBoostHyperparameters,
    class_labels: list[str] | None,
    metrics: dict[str, float],
    device: str,
    scale: ScaleOut,
) -> TrainedModel:
    """The trained booster as the same `TrainedModel` the single-process algorithm returns."""
    details: dict[str, Any] = {"num_round": booster.num_boosted_rounds(), **scale.details}
    if scale.instance_count > 1:
        details["instance_count"] = scale.instance_count
    if hp.early_stopping_rounds is not None and booster.best_iteration is not None:
        best = int(booster.best_iteration)
        booster = booster[: best + 1]
        details["best_iteration"] = best
    booster.set_param({"device": "cpu"})
    return TrainedModel(
        framework="xgboost",
        framework_version=xgboost.__version__,
        task=_task(hp.objective),
        files={XGBOOST_MODEL_FILE: bytes(booster.save_raw("ubj"))},
        outputs=_outputs(hp.objective, class_labels),
        metrics=metrics,
        device="gpu" if device == "cuda" else "cpu",
        details=details,
        model=booster,
    )
