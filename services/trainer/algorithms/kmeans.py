"""k-means clustering on scaled numbers and one-hot categories; predicts cluster and distance."""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt
from cairn.artifacts import OutputColumn
from pydantic import Field

from services.trainer.algorithms.base import (
    Algorithm,
    Hyperparameters,
    InvalidHyperparameters,
    TrainedModel,
    TrainingContext,
    ensure_not_stopped,
    preprocessor,
    sklearn_model,
)
from services.trainer.features import LabelMode, TrainingData


class KMeansHyperparameters(Hyperparameters):
    k: int = Field(ge=1, le=10_000)
    max_iter: int = Field(default=300, ge=1, le=10_000)
    init_method: Literal["kmeans++", "random"] = "kmeans++"
    seed: int = 0


class KMeansAlgorithm(Algorithm[KMeansHyperparameters]):
    name = "kmeans"
    hyperparameters_model = KMeansHyperparameters

    def label_mode(self, hyperparameters: KMeansHyperparameters) -> LabelMode:
        return "none"

    def train(
        self, data: TrainingData, hyperparameters: KMeansHyperparameters, ctx: TrainingContext
    ) -> TrainedModel:
        from sklearn.cluster import KMeans
        from sklearn.pipeline import Pipeline

        hp = hyperparameters
        if hp.k > len(data.x_train):
            raise InvalidHyperparameters(f"k={hp.k} exceeds the {len(data.x_train)} train rows")
        init = "k-means++" if hp.init_method == "kmeans++" else "random"
        model = Pipeline(
            [
                ("prepare", preprocessor(data)),
                (
                    "model",
                    KMeans(
                        n_clusters=hp.k,
                        init=init,
                        max_iter=hp.max_iter,
                        n_init=1,
                        random_state=hp.seed,
                    ),
                ),
            ]
        )
        model.fit(data.x_train)
        ensure_not_stopped(ctx)
        metrics = {"train:msd": _msd(model, data.x_train)}
        if data.x_validation is not None:
            metrics["validation:msd"] = _msd(model, data.x_validation)
        ctx.progress(int(model[-1].n_iter_), hp.max_iter, metrics)
        return sklearn_model(
            model,
            task="clustering",
            outputs=[
                OutputColumn(name="closest_cluster", dtype="int"),
                OutputColumn(name="distance_to_cluster"),
            ],
            metrics=metrics,
            details={"k": hp.k},
        )


def _msd(model: object, x: npt.NDArray[np.float32]) -> float:
    """Mean squared distance to the closest centre (SageMaker's `msd`)."""
    distances = model.transform(x)  # type: ignore[attr-defined]
    return float(np.mean(distances.min(axis=1) ** 2))
