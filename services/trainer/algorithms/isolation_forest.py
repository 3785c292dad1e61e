"""Isolation Forest (`isolation-forest`): the fast, vectorised alternative to Random Cut Forest.

Both build random partitioning trees and score a point by how easily it is cut off from the rest;
`random-cut-forest` is the real RCF (rrcf, collusive displacement). scikit-learn's
IsolationForest is much faster to train and score. The score is `-score_samples`: higher means
more anomalous. It takes RCF's hyperparameter names, so a job can switch between the two.
"""

from __future__ import annotations

import numpy as np
from cairn.artifacts import OutputColumn
from pydantic import Field

from services.trainer.algorithms.base import (
    Algorithm,
    Hyperparameters,
    TrainedModel,
    TrainingContext,
    ensure_not_stopped,
    preprocessor,
    sklearn_model,
)
from services.trainer.features import LabelMode, TrainingData

DETECTOR = "sklearn.ensemble.IsolationForest"


class IsolationForestHyperparameters(Hyperparameters):
    num_trees: int = Field(default=100, ge=50, le=1000)
    num_samples_per_tree: int = Field(default=256, ge=1, le=2048)
    seed: int = 0


class IsolationForestAlgorithm(Algorithm[IsolationForestHyperparameters]):
    name = "isolation-forest"
    hyperparameters_model = IsolationForestHyperparameters

    def label_mode(self, hyperparameters: IsolationForestHyperparameters) -> LabelMode:
        return "none"

    def train(
        self,
        data: TrainingData,
        hyperparameters: IsolationForestHyperparameters,
        ctx: TrainingContext,
    ) -> TrainedModel:
        from sklearn.ensemble import IsolationForest
        from sklearn.pipeline import Pipeline

        hp = hyperparameters
        detector = IsolationForest(
            n_estimators=hp.num_trees,
            max_samples=min(hp.num_samples_per_tree, len(data.x_train)),
            random_state=hp.seed,
        )
        model = Pipeline([("prepare", preprocessor(data, scale=False)), ("model", detector)])
        model.fit(data.x_train)
        ensure_not_stopped(ctx)
        scores = -model.score_samples(data.x_train)
        metrics = {
            "train:score_mean": float(np.mean(scores)),
            "train:score_p99": float(np.quantile(scores, 0.99)),
        }
        ctx.progress(1, 1, metrics)
        return sklearn_model(
            model,
            task="anomaly_detection",
            outputs=[OutputColumn(name="score")],
            metrics=metrics,
            details={
                "detector": DETECTOR,
                "note": "higher score = more anomalous (-score_samples)",
            },
        )
