"""What every built-in algorithm implements, and the pieces they share (metrics, preprocessing)."""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd
from cairn.artifacts import OutputColumn
from cairn.artifacts.manifest import Framework, Task
from cairn.errors import InvalidInput
from pydantic import BaseModel, ConfigDict, ValidationError

from services.trainer.features import LabelMode, TrainingData, prepare

Device = Literal["cpu", "gpu"]
ProgressFn = Callable[[int, int | None, dict[str, float]], None]


class InvalidHyperparameters(InvalidInput):
    """A hyperparameter is unknown, of the wrong type or out of range; the job fails fast."""

    code = "invalid_hyperparameters"


class MissingExtra(InvalidInput):
    """The algorithm needs libraries this install lacks; the message names the extra."""

    code = "missing_extra"


class RuntimeExceeded(Exception):
    """The job's max_runtime_s passed while the algorithm was still training."""


class TrainingStopped(Exception):
    """A stop request ended the job and no partial model is wanted."""


class Hyperparameters(BaseModel):
    """Base of each algorithm's hyperparameters: unknown names are errors, strings are coerced."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


HP = TypeVar("HP", bound=Hyperparameters)


@dataclass
class TrainingContext:
    """What an algorithm may ask of the job: device, progress reporting, stop and log."""

    device_requested: Device = "cpu"
    gpu_available: bool = False
    progress: ProgressFn = lambda iteration, total, metrics: None
    should_stop: Callable[[], bool] = lambda: False
    log: Callable[[str], None] = lambda line: None
    stop_requested: Callable[[], bool] = lambda: False
    keep_partial_model: Callable[[], bool] = lambda: False

    @property
    def use_gpu(self) -> bool:
        return self.device_requested == "gpu" and self.gpu_available


@dataclass
class TrainedModel:
    """A trained model's files and everything the manifest says about it."""

    framework: Framework
    framework_version: str
    task: Task
    files: dict[str, bytes]
    outputs: list[OutputColumn]
    metrics: dict[str, float]
    device: Device = "cpu"
    details: dict[str, Any] = field(default_factory=dict)
    model: Any = field(default=None, repr=False, compare=False)  # the in-memory estimator


class Algorithm(abc.ABC, Generic[HP]):
    """A built-in algorithm: validated hyperparameters in, a `TrainedModel` out."""

    name: ClassVar[str]
    hyperparameters_model: type[HP]
    # (modules, extra): what must be importable to train, and the extra that installs it.
    requires: ClassVar[tuple[tuple[str, ...], str] | None] = None

    def parse(self, raw: Mapping[str, Any]) -> HP:
        """Validated hyperparameters; InvalidHyperparameters names each bad one and why."""
        if self.requires is not None:
            from cairn.builtins import missing_extra

            why = missing_extra(*self.requires, what=f"algorithm {self.name!r}")
            if why is not None:
                raise MissingExtra(why)
        try:
            return self.hyperparameters_model.model_validate(dict(raw))
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in issue['loc']) or 'hyperparameters'}: {issue['msg']}"
                for issue in error.errors(include_url=False)
            )
            raise InvalidHyperparameters(
                f"invalid hyperparameters for {self.name}: {problems}"
            ) from None

    @abc.abstractmethod
    def label_mode(self, hyperparameters: HP) -> LabelMode:
        """Whether the algorithm wants class indices, numeric targets or no label."""

    def prepare(
        self,
        train: pd.DataFrame,
        validation: pd.DataFrame | None,
        *,
        label_column: str | None,
        hyperparameters: HP,
    ) -> TrainingData:
        """The channels as model inputs; text algorithms keep strings (`text_inputs=True`)."""
        return prepare(
            train, validation, label_column=label_column, mode=self.label_mode(hyperparameters)
        )

    @abc.abstractmethod
    def train(self, data: TrainingData, hyperparameters: HP, ctx: TrainingContext) -> TrainedModel:
        """Fit on `data.x_train`, score on the validation channel when there is one."""


def classification_metrics(
    prefix: str, y_true: npt.NDArray[Any], proba: npt.NDArray[Any], n_classes: int
) -> dict[str, float]:
    """auc (binary), logloss and accuracy, named SageMaker-style (`validation:auc`)."""
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    labels = list(range(n_classes))
    if n_classes == 2:
        positive = proba if proba.ndim == 1 else proba[:, 1]
        full = np.column_stack([1 - positive, positive])
        metrics = {
            f"{prefix}:logloss": float(log_loss(y_true, full, labels=labels)),
            f"{prefix}:accuracy": float(accuracy_score(y_true, positive >= 0.5)),
        }
        if len(np.unique(y_true)) == 2:
            metrics[f"{prefix}:auc"] = float(roc_auc_score(y_true, positive))
        return metrics
    return {
        f"{prefix}:mlogloss": float(log_loss(y_true, proba, labels=labels)),
        f"{prefix}:accuracy": float(accuracy_score(y_true, proba.argmax(axis=1))),
    }


def regression_metrics(
    prefix: str, y_true: npt.NDArray[Any], predicted: npt.NDArray[Any]
) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    return {
        f"{prefix}:rmse": math.sqrt(float(mean_squared_error(y_true, predicted))),
        f"{prefix}:mae": float(mean_absolute_error(y_true, predicted)),
        f"{prefix}:r2": float(r2_score(y_true, predicted)),
    }


def evaluation_set(data: TrainingData) -> tuple[str, npt.NDArray[np.float32], Any]:
    """Score on the validation channel when there is one, else (honestly labelled) on train."""
    if data.x_validation is not None:
        return "validation", data.x_validation, data.y_validation
    return "train", data.x_train, data.y_train


def preprocessor(data: TrainingData, *, scale: bool = True) -> Any:
    """Impute and scale numbers, one-hot encode category codes (unseen codes -> all zeros)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [i for i, column in enumerate(data.inputs) if column.dtype != "category"]
    categorical = [i for i, column in enumerate(data.inputs) if column.dtype == "category"]
    numeric_steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
    if scale:
        numeric_steps.append(("scale", StandardScaler()))
    transformers: list[tuple[str, Any, list[int]]] = []
    if numeric:
        transformers.append(("numeric", Pipeline(numeric_steps), numeric))
    if categorical:
        transformers.append(
            (
                "categorical",
                OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                categorical,
            )
        )
    return ColumnTransformer(transformers, sparse_threshold=0.0)


def sklearn_model(
    estimator: Any,
    *,
    task: Task,
    outputs: list[OutputColumn],
    metrics: dict[str, float],
    details: dict[str, Any] | None = None,
) -> TrainedModel:
    """Serialize a fitted scikit-learn estimator with skops (never pickle)."""
    import sklearn
    import skops.io
    from cairn.artifacts import SKLEARN_MODEL_FILE

    return TrainedModel(
        framework="sklearn",
        framework_version=sklearn.__version__,
        task=task,
        files={SKLEARN_MODEL_FILE: skops.io.dumps(estimator)},
        outputs=outputs,
        metrics=metrics,
        details=details or {},
        model=estimator,
    )


def ensure_not_stopped(ctx: TrainingContext) -> None:
    """After a stopped loop: go on to package the partial model only when that was asked for."""
    if ctx.stop_requested():
        if not ctx.keep_partial_model():
            raise TrainingStopped("stopped on request")
        return
    if ctx.should_stop():
        raise RuntimeExceeded("max_runtime_s passed during training")
