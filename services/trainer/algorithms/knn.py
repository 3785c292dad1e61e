"""k-nearest neighbours classifier / regressor (brute-force search: exact and skops-safe)."""

from __future__ import annotations

from typing import Any, Literal

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


class KNNHyperparameters(Hyperparameters):
    k: int = Field(ge=1, le=1024)
    predictor_type: Literal["classifier", "regressor"]
    weights: Literal["uniform", "distance"] = "uniform"
    index_metric: Literal["L2", "L1"] = "L2"


class KNNAlgorithm(Algorithm[KNNHyperparameters]):
    name = "knn"
    hyperparameters_model = KNNHyperparameters

    def label_mode(self, hyperparameters: KNNHyperparameters) -> LabelMode:
        return "classes" if hyperparameters.predictor_type == "classifier" else "values"

    def train(
        self, data: TrainingData, hyperparameters: KNNHyperparameters, ctx: TrainingContext
    ) -> TrainedModel:
        from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
        from sklearn.pipeline import Pipeline

        hp = hyperparameters
        if hp.k > len(data.x_train):
            raise InvalidHyperparameters(f"k={hp.k} exceeds the {len(data.x_train)} train rows")
        options: dict[str, Any] = {
            "n_neighbors": hp.k,
            "weights": hp.weights,
            "algorithm": "brute",
            "p": 2 if hp.index_metric == "L2" else 1,
        }
        estimator: Any = (
            KNeighborsClassifier(**options)
            if hp.predictor_type == "classifier"
            else KNeighborsRegressor(**options)
        )
        model = Pipeline([("prepare", preprocessor(data)), ("model", estimator)])
        model.fit(data.x_train, data.y_train)
        ensure_not_stopped(ctx)
        prefix, x, y = evaluation_set(data)
        task: Any
        if hp.predictor_type == "classifier":
            n_classes = len(data.class_labels or [])
            metrics = classification_metrics(prefix, y, model.predict_proba(x), n_classes)
            task = "binary_classification" if n_classes == 2 else "multiclass_classification"
            outputs = (
                [OutputColumn(name="probability")]
                if n_classes == 2
                else [OutputColumn(name=f"probability_{c}") for c in data.class_labels or []]
            )
        else:
            metrics = regression_metrics(prefix, y, model.predict(x))
            task = "regression"
            outputs = [OutputColumn(name="prediction")]
        ctx.progress(1, 1, metrics)
        return sklearn_model(model, task=task, outputs=outputs, metrics=metrics)
