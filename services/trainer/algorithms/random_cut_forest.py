"""Random Cut Forest (SageMaker's `random-cut-forest`): robust random cut trees and CoDisp.

A real RCF on the `rrcf` library (see `cairn.builtins.random_cut_forest`). Each of `num_trees`
trees is built from `num_samples_per_tree` train rows drawn without replacement, as SageMaker
samples. rrcf is pure Python: scoring costs about a millisecond per tree and point, so
`isolation-forest` (same hyperparameter names) is the fast alternative for large batches.
"""

from __future__ import annotations

import numpy as np
from cairn.artifacts import OutputColumn
from pydantic import Field

from services.trainer.algorithms.base import (
    Algorithm,
    Hyperparameters,
    InvalidHyperparameters,
    TrainedModel,
    TrainingContext,
    ensure_not_stopped,
)
from services.trainer.features import LabelMode, TrainingData

SCORED_ROWS = 32  # validation rows scored for the metrics: about 1 ms per tree and row


class RandomCutForestHyperparameters(Hyperparameters):
    num_trees: int = Field(default=100, ge=50, le=1000)
    num_samples_per_tree: int = Field(default=256, ge=1, le=2048)
    feature_dim: int | None = Field(default=None, ge=1, le=10_000)
    seed: int = 0


class RandomCutForest(Algorithm[RandomCutForestHyperparameters]):
    name = "random-cut-forest"
    hyperparameters_model = RandomCutForestHyperparameters
    requires = (("rrcf",), "training")

    def label_mode(self, hyperparameters: RandomCutForestHyperparameters) -> LabelMode:
        return "none"

    def train(
        self,
        data: TrainingData,
        hyperparameters: RandomCutForestHyperparameters,
        ctx: TrainingContext,
    ) -> TrainedModel:
        import rrcf
        from cairn.builtins.random_cut_forest import FOREST_FILE, codisp, fill_missing, forest_json

        hp = hyperparameters
        width = data.x_train.shape[1]
        if hp.feature_dim is not None and hp.feature_dim != width:
            raise InvalidHyperparameters(f"feature_dim={hp.feature_dim} but the rows have {width}")
        if any(column.dtype == "category" for column in data.inputs):
            raise InvalidHyperparameters("random-cut-forest takes numbers: drop category columns")
        x = data.x_train.astype(np.float64)
        medians = [float(m) if np.isfinite(m) else 0.0 for m in np.nanmedian(x, axis=0)]
        x = fill_missing(x, medians)
        rng = np.random.default_rng(hp.seed)
        sample = min(hp.num_samples_per_tree, len(x))
        trees = []
        for number in range(1, hp.num_trees + 1):
            if ctx.should_stop():
                break
            rows = x[rng.choice(len(x), size=sample, replace=False)]
            trees.append(rrcf.RCTree(rows, random_state=int(rng.integers(2**31))))
            if number % 10 == 0 or number == hp.num_trees:
                ctx.progress(number, hp.num_trees, {})
        ensure_not_stopped(ctx)
        if data.x_validation is not None:
            prefix = "validation"
            held_out = fill_missing(data.x_validation[:SCORED_ROWS], medians)
            scores = np.array([codisp(trees, row) for row in held_out])
        else:  # each tree's own points: no insertion needed, far cheaper than scoring new rows
            prefix = "train"
            scores = np.array(
                [tree.codisp(leaf) for tree in trees for leaf in list(tree.leaves)[:SCORED_ROWS]]
            )
        metrics = {
            f"{prefix}:score_mean": float(np.mean(scores)),
            f"{prefix}:score_p99": float(np.quantile(scores, 0.99)),
        }
        ctx.progress(hp.num_trees, hp.num_trees, metrics)
        return TrainedModel(
            framework="rrcf",
            framework_version=_version(),
            task="anomaly_detection",
            files={FOREST_FILE: forest_json(trees, medians)},
            outputs=[OutputColumn(name="score")],
            metrics=metrics,
            details={
                "detector": "rrcf.RCTree (robust random cut forest, CoDisp)",
                "num_trees": len(trees),
                "num_samples_per_tree": sample,
            },
            model=trees,
        )


def _version() -> str:
    from importlib.metadata import version

    return version("rrcf")
