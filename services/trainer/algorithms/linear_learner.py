"""Linear learner: logistic / ridge regression (or SGD) on scaled numbers and one-hot categories."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from cairn.artifacts import OutputColumn
from pydantic import Field

from services.trainer.algorithms.base import (
    Algorithm,
    Hyperparameters,
    InvalidHyperparameters,
    TrainedModel,
    TrainingContext,
    classification_metrics,
    ensure_not_stopped,
    evaluation_set,
    preprocessor,
    regression_metrics,
    sklearn_model,
)
from services.trainer.features import LabelMode, TrainingData


class LinearLearnerHyperparameters(Hyperparameters):
    predictor_type: Literal["binary_classifier", "multiclass_classifier", "regressor"]
    optimizer: Literal["auto", "sgd"] = Field(
        default="auto", description="auto: lbfgs logistic regression / closed-form ridge."
    )
    epochs: int = Field(default=100, ge=1, le=10_000)
    wd: float = Field(default=1e-4, ge=0, description="L2 weight decay.")
    learning_rate: float = Field(default=0.01, gt=0, le=10, description="sgd only.")
    seed: int = 0


class LinearLearner(Algorithm[LinearLearnerHyperparameters]):
    name = "linear-learner"
    hyperparameters_model = LinearLearnerHyperparameters

    def label_mode(self, hyperparameters: LinearLearnerHyperparameters) -> LabelMode:
        return "values" if hyperparameters.predictor_type == "regressor" else "classes"

    def train(
        self,
        data: TrainingData,
        hyperparameters: LinearLearnerHyperparameters,
        ctx: TrainingContext,
    ) -> TrainedModel:
        from sklearn.pipeline import Pipeline

        hp = hyperparameters
        n_classes = len(data.class_labels or [])
        if hp.predictor_type == "binary_classifier" and n_classes != 2:
            raise InvalidHyperparameters(
                f"predictor_type binary_classifier needs 2 classes; the label has {n_classes}"
            )
        estimator = _estimator(hp)
        model = Pipeline([("prepare", preprocessor(data)), ("model", estimator)])
        model.fit(data.x_train, data.y_train)
        ensure_not_stopped(ctx)
        prefix, x, y = evaluation_set(data)
        if hp.predictor_type == "regressor":
            metrics = regression_metrics(prefix, y, model.predict(x))
            task: Any = "regression"
            outputs = [OutputColumn(name="prediction")]
        else:
            metrics = classification_metrics(prefix, y, model.predict_proba(x), n_classes)
            task = "binary_classification" if n_classes == 2 else "multiclass_classification"
            outputs = (
                [OutputColumn(name="probability")]
                if n_classes == 2
                else [OutputColumn(name=f"probability_{c}") for c in data.class_labels or []]
            )
        ctx.progress(1, 1, metrics)
        return sklearn_model(
            model,
            task=task,
            outputs=outputs,
            metrics=metrics,
            details={"estimator": type(estimator).__name__, "n_features_in": int(np.shape(x)[1])},
        )


def _estimator(hp: LinearLearnerHyperparameters) -> Any:
    """Closed-form-ish solvers for `optimizer=auto`, SGD otherwise."""
    from sklearn.linear_model import LogisticRegression, Ridge, SGDClassifier, SGDRegressor

    if hp.predictor_type == "regressor":
        if hp.optimizer == "auto":
            return Ridge(alpha=max(hp.wd, 1e-12))
        return SGDRegressor(
            alpha=hp.wd, eta0=hp.learning_rate, max_iter=hp.epochs, random_state=hp.seed
        )
    if hp.optimizer == "auto":
        return LogisticRegression(C=1.0 / max(hp.wd, 1e-12), max_iter=hp.epochs)
    return SGDClassifier(
        loss="log_loss",
        alpha=hp.wd,
        eta0=hp.learning_rate,
        learning_rate="adaptive",
        max_iter=hp.epochs,
        random_state=hp.seed,
    )
