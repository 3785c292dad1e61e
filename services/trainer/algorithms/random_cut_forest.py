"""Anomaly detection in the spirit of Random Cut Forest, implemented with Isolation Forest.

Both build random partitioning trees and score a point by how easily it is cut off from the rest;
scikit-learn's IsolationForest is the honest, well-tested stand-in. The score is
`-score_samples`: higher means more anomalous. The manifest names the detector.
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


class RandomCutForestHyperparameters(Hyperparameters):
    num_trees: int = Field(default=100, ge=50, le=1000)
    num_samples_per_tree: int = Field(default=256, ge=1, le=2048)
    seed: int = 0


class RandomCutForest(Algorithm[RandomCutForestHyperparameters]):
    name = "random-cut-forest"
    hyperparameters_model = RandomCutForestHyperparameters

    def label_mode(self, hyperparameters: RandomCutForestHyperparameters) -> LabelMode:
        return "none"

    def train(
        self,
        data: TrainingData,
        hyperparameters: RandomCutForestHyperparameters,
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
                "note": "Isolation Forest stands in for Random Cut Forest; higher score = "
                "more anomalous (-score_samples).",
            },
        )
