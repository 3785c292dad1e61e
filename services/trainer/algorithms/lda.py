"""Latent Dirichlet Allocation (SageMaker's `lda`) on scikit-learn, over word-count rows.

SageMaker fits LDA by a spectral decomposition with restarts; scikit-learn fits it by online
variational Bayes, one pass over the documents per iteration, which lets each iteration report
the per-word log-likelihood bound (SageMaker's `pwll`). Served output: `topic_mixture`.
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
    sklearn_model,
)
from services.trainer.features import LabelMode, TrainingData

# The per-iteration pwll is measured on this many documents: scoring runs a full E-step, and on
# every document it would cost as much as the training pass itself.
SCORED_DOCUMENTS = 256


class LDAHyperparameters(Hyperparameters):
    num_topics: int = Field(ge=1, le=10_000)
    feature_dim: int | None = Field(default=None, ge=1, le=1_000_000)
    mini_batch_size: int = Field(default=128, ge=1, le=1_000_000)
    alpha0: float = Field(default=1.0, gt=0, le=1_000)
    max_restarts: int = Field(default=10, ge=1, le=1000, description="Accepted; no spectral step.")
    max_iterations: int = Field(default=1000, ge=1, le=100_000)
    tol: float = Field(default=1e-8, gt=0, le=1.0)
    seed: int = 0


class LDAAlgorithm(Algorithm[LDAHyperparameters]):
    name = "lda"
    hyperparameters_model = LDAHyperparameters

    def label_mode(self, hyperparameters: LDAHyperparameters) -> LabelMode:
        return "none"

    def train(
        self, data: TrainingData, hyperparameters: LDAHyperparameters, ctx: TrainingContext
    ) -> TrainedModel:
        from sklearn.decomposition import LatentDirichletAllocation
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import Pipeline

        hp = hyperparameters
        vocabulary = data.x_train.shape[1]
        if hp.feature_dim is not None and hp.feature_dim != vocabulary:
            raise InvalidHyperparameters(
                f"feature_dim={hp.feature_dim} but the rows have {vocabulary} word columns"
            )
        if any(column.dtype == "category" for column in data.inputs):
            raise InvalidHyperparameters("lda takes word counts: every column must be a number")
        counts = np.nan_to_num(data.x_train.astype(np.float64), nan=0.0)
        if (counts < 0).any():
            raise InvalidHyperparameters("lda takes word counts: a column holds a negative number")
        held_out = (
            np.nan_to_num(data.x_validation.astype(np.float64), nan=0.0)
            if data.x_validation is not None
            else None
        )
        prefix = "validation" if held_out is not None else "train"
        scored = (held_out if held_out is not None else counts)[:SCORED_DOCUMENTS]
        lda = LatentDirichletAllocation(
            n_components=hp.num_topics,
            doc_topic_prior=hp.alpha0 / hp.num_topics,
            learning_method="online",
            batch_size=hp.mini_batch_size,
            total_samples=len(counts),
            random_state=hp.seed,
        )
        rng = np.random.default_rng(hp.seed)
        previous = -np.inf
        metrics: dict[str, float] = {}
        for iteration in range(1, hp.max_iterations + 1):
            if ctx.should_stop():
                break
            order = rng.permutation(len(counts))
            for start in range(0, len(counts), hp.mini_batch_size):
                lda.partial_fit(counts[order[start : start + hp.mini_batch_size]])
            pwll = float(lda.score(scored) / max(scored.sum(), 1.0))
            metrics = {f"{prefix}:pwll": pwll}
            ctx.progress(iteration, hp.max_iterations, metrics)
            if abs(pwll - previous) < hp.tol * max(abs(pwll), 1.0):
                break
            previous = pwll
        ensure_not_stopped(ctx)
        model = Pipeline(
            [("fill", SimpleImputer(strategy="constant", fill_value=0.0)), ("model", lda)]
        )
        model[0].fit(counts[:1])  # the imputer only maps NaN to 0; fitted for serving
        return sklearn_model(
            model,
            task="topic_model",
            outputs=[OutputColumn(name="topic_mixture")],
            metrics=metrics,
            details={"num_topics": hp.num_topics, "feature_dim": vocabulary, "solver": "online VB"},
        )
