"""XGBoost (SageMaker's built-in `xgboost`): binary, multiclass and regression objectives."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import xgboost
from cairn.artifacts import XGBOOST_MODEL_FILE, OutputColumn
from pydantic import Field, model_validator

from services.trainer.algorithms.base import (
    Algorithm,
    Hyperparameters,
    InvalidHyperparameters,
    TrainedModel,
    TrainingContext,
    classification_metrics,
    ensure_not_stopped,
    evaluation_set,
    regression_metrics,
)
from services.trainer.features import LabelMode, TrainingData

Objective = Literal["binary:logistic", "multi:softprob", "reg:squarederror"]


class XGBoostHyperparameters(Hyperparameters):
    objective: Objective = "binary:logistic"
    num_round: int = Field(default=100, ge=1, le=10_000)
    max_depth: int = Field(default=6, ge=0, le=30)
    eta: float = Field(default=0.3, gt=0, le=1)
    subsample: float = Field(default=1.0, gt=0, le=1)
    colsample_bytree: float = Field(default=1.0, gt=0, le=1)
    min_child_weight: float = Field(default=1.0, ge=0)
    gamma: float = Field(default=0.0, ge=0)
    alpha: float = Field(default=0.0, ge=0)
    lambda_: float = Field(default=1.0, ge=0, alias="lambda")
    scale_pos_weight: float = Field(default=1.0, gt=0)
    max_bin: int = Field(default=256, ge=2, le=4096)
    num_class: int | None = Field(default=None, ge=2, le=10_000)
    early_stopping_rounds: int | None = Field(default=None, ge=1)
    eval_metric: str | None = Field(default=None, pattern=r"^[a-z@0-9_-]+(,[a-z@0-9_-]+)*$")
    seed: int = 0
    progress_every: int = Field(default=10, ge=1, description="Progress events every N rounds.")

    @model_validator(mode="after")
    def _num_class_only_for_multiclass(self) -> XGBoostHyperparameters:
        if self.num_class is not None and self.objective != "multi:softprob":
            raise ValueError("num_class is only for objective multi:softprob")
        return self


class _ProgressCallback(xgboost.callback.TrainingCallback):
    """Reports metrics every few rounds and stops training at the runtime limit."""

    def __init__(self, ctx: TrainingContext, total: int, every: int) -> None:
        super().__init__()
        self.ctx, self.total, self.every = ctx, total, every

    def after_iteration(
        self, model: Any, epoch: int, evals_log: xgboost.callback.TrainingCallback.EvalsLog
    ) -> bool:
        done = epoch + 1
        stop = self.ctx.should_stop()
        if stop or done % self.every == 0 or done == self.total:  # a stop reports rounds used
            metrics = {
                f"{data}:{metric}": _score(values[-1])
                for data, by_metric in evals_log.items()
                for metric, values in by_metric.items()
            }
            self.ctx.progress(done, self.total, metrics)
        return stop


def _score(value: float | tuple[float, float]) -> float:
    """A round's metric; cross-validation logs `(mean, std)` pairs, training logs numbers."""
    return float(value[0] if isinstance(value, tuple) else value)


class XGBoostAlgorithm(Algorithm[XGBoostHyperparameters]):
    name = "xgboost"
    hyperparameters_model = XGBoostHyperparameters

    def label_mode(self, hyperparameters: XGBoostHyperparameters) -> LabelMode:
        return "values" if hyperparameters.objective == "reg:squarederror" else "classes"

    def train(
        self, data: TrainingData, hyperparameters: XGBoostHyperparameters, ctx: TrainingContext
    ) -> TrainedModel:
        hp = hyperparameters
        n_classes = len(data.class_labels or [])
        _check(hp, data, n_classes)
        device = "cuda" if ctx.use_gpu else "cpu"
        params = _params(hp, device, n_classes)
        evals = _matrices(data)
        train_matrix = evals[0][0]
        ctx.log(f"xgboost {xgboost.__version__} on {device}: {params}")
        booster = xgboost.train(
            params,
            train_matrix,
            num_boost_round=hp.num_round,
            evals=evals,
            early_stopping_rounds=hp.early_stopping_rounds,
            callbacks=[_ProgressCallback(ctx, hp.num_round, hp.progress_every)],
            verbose_eval=False,
        )
        ensure_not_stopped(ctx)
        details: dict[str, Any] = {"num_round": booster.num_boosted_rounds()}
        if hp.early_stopping_rounds is not None:
            best = int(booster.best_iteration)
            booster = booster[: best + 1]  # serve the best model, not the overfit tail
            details["best_iteration"] = best
        # A GPU-trained booster must predict anywhere: the gateway runs on CPU.
        booster.set_param({"device": "cpu"})
        return TrainedModel(
            framework="xgboost",
            framework_version=xgboost.__version__,
            task=_task(hp.objective),
            files={XGBOOST_MODEL_FILE: bytes(booster.save_raw("ubj"))},
            outputs=_outputs(hp.objective, data.class_labels),
            metrics=_metrics(booster, data, hp.objective, n_classes),
            device="gpu" if device == "cuda" else "cpu",
            details=details,
            model=booster,
        )


def _check(hp: XGBoostHyperparameters, data: TrainingData, n_classes: int) -> None:
    """Hyperparameters that cannot work with this data fail before any training."""
    if hp.objective == "binary:logistic" and n_classes != 2:
        raise InvalidHyperparameters(
            f"objective binary:logistic needs 2 classes; the label has {n_classes} "
            f"({data.class_labels}); use multi:softprob"
        )
    if hp.objective == "multi:softprob" and hp.num_class not in (None, n_classes):
        raise InvalidHyperparameters(f"num_class={hp.num_class} but the label has {n_classes}")
    if hp.early_stopping_rounds is not None and data.x_validation is None:
        raise InvalidHyperparameters("early_stopping_rounds needs a validation channel")


def _params(hp: XGBoostHyperparameters, device: str, n_classes: int) -> dict[str, Any]:
    params: dict[str, Any] = {
        "objective": hp.objective,
        "max_depth": hp.max_depth,
        "eta": hp.eta,
        "subsample": hp.subsample,
        "colsample_bytree": hp.colsample_bytree,
        "min_child_weight": hp.min_child_weight,
        "gamma": hp.gamma,
        "alpha": hp.alpha,
        "lambda": hp.lambda_,
        "max_bin": hp.max_bin,
        "tree_method": "hist",
        "device": device,
        "seed": hp.seed,
    }
    if hp.objective == "multi:softprob":
        params["num_class"] = n_classes
    if hp.objective == "binary:logistic":
        params["scale_pos_weight"] = hp.scale_pos_weight
    if hp.eval_metric:
        params["eval_metric"] = hp.eval_metric.split(",")
    return params


def _matrices(data: TrainingData) -> list[tuple[Any, str]]:
    """The train matrix first, then the validation one when there is a validation channel."""

    def matrix(x: Any, y: Any) -> Any:
        return xgboost.DMatrix(
            x,
            label=y,
            feature_names=data.feature_names,
            feature_types=data.feature_types,
            enable_categorical=data.has_categories,
        )

    evals = [(matrix(data.x_train, data.y_train), "train")]
    if data.x_validation is not None:
        evals.append((matrix(data.x_validation, data.y_validation), "validation"))
    return evals


def _task(objective: Objective) -> Any:
    return {
        "binary:logistic": "binary_classification",
        "multi:softprob": "multiclass_classification",
        "reg:squarederror": "regression",
    }[objective]


def _outputs(objective: Objective, class_labels: list[str] | None) -> list[OutputColumn]:
    if objective == "binary:logistic":
        return [OutputColumn(name="probability")]
    if objective == "multi:softprob":
        return [OutputColumn(name=f"probability_{label}") for label in class_labels or []]
    return [OutputColumn(name="prediction")]


def _metrics(booster: Any, data: TrainingData, objective: Objective, n: int) -> dict[str, float]:
    prefix, x, y = evaluation_set(data)
    predicted = np.asarray(booster.inplace_predict(x))
    if objective == "reg:squarederror":
        return regression_metrics(prefix, y, predicted)
    return classification_metrics(prefix, y, predicted, n)
