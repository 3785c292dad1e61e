"""PCA: project scaled numbers and one-hot categories onto the top principal components."""

from __future__ import annotations

from typing import Literal

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


class PCAHyperparameters(Hyperparameters):
    num_components: int = Field(ge=1, le=10_000)
    algorithm_mode: Literal["regular", "randomized"] = "regular"
    subtract_mean: bool = True
    seed: int = 0


class PCAAlgorithm(Algorithm[PCAHyperparameters]):
    name = "pca"
    hyperparameters_model = PCAHyperparameters

    def label_mode(self, hyperparameters: PCAHyperparameters) -> LabelMode:
        return "none"

    def train(
        self, data: TrainingData, hyperparameters: PCAHyperparameters, ctx: TrainingContext
    ) -> TrainedModel:
        from sklearn.decomposition import PCA
        from sklearn.pipeline import Pipeline

        hp = hyperparameters
        prepare = preprocessor(data, scale=hp.subtract_mean)
        width = prepare.fit(data.x_train).transform(data.x_train[:1]).shape[1]
        limit = min(width, len(data.x_train))
        if hp.num_components > limit:
            raise InvalidHyperparameters(
                f"num_components={hp.num_components} exceeds {limit} "
                f"(encoded features {width}, rows {len(data.x_train)})"
            )
        solver = "full" if hp.algorithm_mode == "regular" else "randomized"
        model = Pipeline(
            [
                ("prepare", prepare),
                (
                    "model",
                    PCA(n_components=hp.num_components, svd_solver=solver, random_state=hp.seed),
                ),
            ]
        )
        model.fit(data.x_train)
        ensure_not_stopped(ctx)
        explained = float(model[-1].explained_variance_ratio_.sum())
        metrics = {"train:explained_variance_ratio": explained}
        ctx.progress(1, 1, metrics)
        return sklearn_model(
            model,
            task="dimensionality_reduction",
            outputs=[OutputColumn(name=f"component_{i}") for i in range(hp.num_components)],
            metrics=metrics,
            details={"num_components": hp.num_components},
        )
