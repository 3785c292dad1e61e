"""Each built-in algorithm: trains with signal, round-trips through a package, validates its HPs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from cairn.artifacts import Lineage, ModelManifest, Signature, load_model, write_model_package
from cairn.store import InMemoryObjectStore

from services.trainer.algorithms import (
    ALGORITHMS,
    InvalidHyperparameters,
    TrainedModel,
    TrainingContext,
)
from services.trainer.features import TrainingData, prepare
from tests.support.trainer_data import credit_frame, multiclass_frame, regression_frame

CREDIT = credit_frame(1200, seed=3)
REGRESSION = regression_frame(600)
MULTICLASS = multiclass_frame(600)


def split(frame: Any) -> tuple[Any, Any]:
    cut = int(len(frame) * 0.8)
    return frame[:cut], frame[cut:]


def train(
    name: str, hp: dict[str, Any], frame: Any, label: str | None
) -> tuple[TrainingData, TrainedModel]:
    algorithm = ALGORITHMS[name]
    parsed = algorithm.parse(hp)
    train_frame, validation_frame = split(frame)
    data = prepare(
        train_frame, validation_frame, label_column=label, mode=algorithm.label_mode(parsed)
    )
    return data, algorithm.train(data, parsed, TrainingContext())


def in_memory_predictions(trained: TrainedModel, x: np.ndarray) -> np.ndarray:
    """What the freshly trained estimator says, computed the way each task is served."""
    model = trained.model
    if trained.framework == "xgboost":
        return np.asarray(model.inplace_predict(x))
    if trained.task == "binary_classification":
        return model.predict_proba(x)[:, 1]
    if trained.task == "multiclass_classification":
        return model.predict_proba(x)
    if trained.task == "clustering":
        distances = model.transform(x)
        return np.column_stack([distances.argmin(axis=1), distances.min(axis=1)])
    if trained.task == "dimensionality_reduction":
        return model.transform(x)
    if trained.task == "anomaly_detection":
        return -model.score_samples(x)
    return model.predict(x)


CASES = [
    (
        "xgboost",
        {"num_round": 30, "max_depth": 3, "early_stopping_rounds": 5},
        CREDIT,
        "default",
        "validation:auc",
        0.7,
    ),
    (
        "xgboost",
        {"objective": "multi:softprob", "num_round": 10},
        MULTICLASS,
        "species",
        "validation:accuracy",
        0.9,
    ),
    (
        "xgboost",
        {"objective": "reg:squarederror", "num_round": 50},
        REGRESSION,
        "target",
        "validation:r2",
        0.8,
    ),
    (
        "linear-learner",
        {"predictor_type": "binary_classifier"},
        CREDIT,
        "default",
        "validation:auc",
        0.7,
    ),
    (
        "linear-learner",
        {"predictor_type": "multiclass_classifier", "optimizer": "sgd"},
        MULTICLASS,
        "species",
        "validation:accuracy",
        0.9,
    ),
    (
        "linear-learner",
        {"predictor_type": "regressor"},
        REGRESSION,
        "target",
        "validation:r2",
        0.95,
    ),
    ("knn", {"k": 15, "predictor_type": "classifier"}, CREDIT, "default", "validation:auc", 0.6),
    ("knn", {"k": 5, "predictor_type": "regressor"}, REGRESSION, "target", "validation:r2", 0.8),
    ("kmeans", {"k": 3}, MULTICLASS.drop(columns=["species"]), None, None, None),
    ("pca", {"num_components": 2}, CREDIT, "default", "train:explained_variance_ratio", 0.2),
    ("isolation-forest", {"num_trees": 50}, CREDIT.drop(columns=["default"]), None, None, None),
]


@pytest.mark.parametrize(("name", "hp", "frame", "label", "metric", "floor"), CASES)
def test_saved_model_predicts_like_the_trained_one(
    name: str,
    hp: dict[str, Any],
    frame: Any,
    label: str | None,
    metric: str | None,
    floor: float | None,
) -> None:
    data, trained = train(name, hp, frame, label)
    if metric is not None:
        assert trained.metrics[metric] > floor, trained.metrics
    manifest = ModelManifest(
        framework=trained.framework,
        framework_version=trained.framework_version,
        algorithm=name,
        task=trained.task,
        signature=Signature(inputs=data.inputs, outputs=trained.outputs),
        lineage=Lineage(algorithm=name),
    )
    store = InMemoryObjectStore()
    model = load_model(store, write_model_package(store, f"models/{name}", manifest, trained.files))
    x = data.x_validation[:40]
    np.testing.assert_allclose(model.predict(x), in_memory_predictions(trained, x), rtol=1e-5)


def test_kmeans_finds_the_three_blobs() -> None:
    data, trained = train("kmeans", {"k": 3}, MULTICLASS.drop(columns=["species"]), None)
    clusters = in_memory_predictions(trained, data.x_train)[:, 0]
    truth = MULTICLASS["species"][: len(clusters)].to_numpy()
    # each true blob lands (almost) entirely in one cluster
    for species in "abc":
        counts = np.bincount(clusters[truth == species].astype(int), minlength=3)
        assert counts.max() / counts.sum() > 0.95


def test_anomaly_scores_rank_outliers_above_normal_rows() -> None:
    data, trained = train("isolation-forest", {}, CREDIT.drop(columns=["default"]), None)
    assert trained.details["detector"] == "sklearn.ensemble.IsolationForest"
    normal = data.x_validation[:20].copy()
    outliers = normal.copy()
    outliers[:, 1] = 1e7  # absurd income
    outliers[:, 3] = 40  # absurd late payments
    scores = in_memory_predictions(trained, np.vstack([normal, outliers]))
    assert scores[20:].min() > np.median(scores[:20])


def test_xgboost_early_stopping_keeps_the_best_round() -> None:
    _, trained = train(
        "xgboost", {"num_round": 500, "eta": 0.5, "early_stopping_rounds": 3}, CREDIT, "default"
    )
    assert trained.details["best_iteration"] < 499
    assert trained.model.num_boosted_rounds() == trained.details["best_iteration"] + 1


@pytest.mark.parametrize(
    ("name", "hp", "reason"),
    [
        ("xgboost", {"num_round": 0}, "num_round"),
        ("xgboost", {"eta": 2}, "eta"),
        ("xgboost", {"max_dept": 3}, "max_dept"),
        ("xgboost", {"objective": "rank:pairwise"}, "objective"),
        ("linear-learner", {}, "predictor_type"),
        ("kmeans", {"k": "many"}, "k"),
        ("pca", {"num_components": -1}, "num_components"),
        ("knn", {"k": 3, "predictor_type": "ranker"}, "predictor_type"),
        ("isolation-forest", {"num_trees": 5}, "num_trees"),
    ],
)
def test_bad_hyperparameters_fail_fast_naming_the_parameter(
    name: str, hp: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidHyperparameters, match=reason):
        ALGORITHMS[name].parse(hp)


def test_hyperparameters_given_as_strings_are_accepted() -> None:
    parsed = ALGORITHMS["xgboost"].parse({"num_round": "12", "eta": "0.1", "lambda": "2"})
    assert (parsed.num_round, parsed.eta, parsed.lambda_) == (12, 0.1, 2.0)


def test_binary_objective_on_three_classes_is_refused() -> None:
    with pytest.raises(InvalidHyperparameters, match="2 classes"):
        train("xgboost", {"objective": "binary:logistic"}, MULTICLASS, "species")


def test_pca_with_more_components_than_features_is_refused() -> None:
    with pytest.raises(InvalidHyperparameters, match="num_components=50"):
        train("pca", {"num_components": 50}, REGRESSION, "target")
