"""Auto-labelling's threshold: chosen on held-out human labels for a target precision."""

from __future__ import annotations

import numpy as np
import xgboost
from sklearn.datasets import make_classification

from services.labeling.autolabel import (
    AutoLabelRound,
    AutoLabelState,
    choose_threshold,
    due,
    held_out,
    predictions,
    text_features,
)


def test_the_lowest_threshold_whose_items_are_right_often_enough():
    confidence = [0.99, 0.98, 0.97, 0.9, 0.9, 0.8, 0.7, 0.6]
    correct = [True, True, True, True, False, True, False, False]
    chosen = choose_threshold(confidence, correct, 0.8, min_support=2, z=0)
    assert chosen is not None and chosen.value == 0.8  # 5 of the top 6 are right: 0.83
    assert chosen.support == 6 and abs(chosen.precision - 5 / 6) < 1e-9
    strict = choose_threshold(confidence, correct, 0.95, min_support=2, z=0)
    assert strict is not None and strict.value == 0.97  # never cut between the two 0.9s
    assert choose_threshold(confidence, correct, 0.95, min_support=4, z=0) is None
    assert choose_threshold(confidence, correct, 0.95, min_support=2) is None  # 3 of 3: too few
    assert choose_threshold([], [], 0.95) is None


def test_a_pool_left_in_the_doubtful_band_raises_the_threshold():
    """Held-out items right at 0.99+ and 90% right near 0.8: a pool sitting near 0.8 must not
    be labelled on the strength of the 0.99s above it."""
    confidence = [0.995] * 200 + [0.8] * 50
    correct = [True] * 200 + [True] * 45 + [False] * 5
    alone = choose_threshold(confidence, correct, 0.95, z=0)
    assert alone is not None and alone.value == 0.8  # 245 of 250 right overall
    pooled = choose_threshold(confidence, correct, 0.95, z=0, pool=[0.81] * 500 + [0.996] * 10)
    assert pooled is not None and pooled.value == 0.995


def test_on_real_signal_most_items_are_machine_labelled_at_the_target_precision():
    """4 classes with real but imperfect signal; 800 human labels, 3,700 items left."""
    features, truth = make_classification(
        n_samples=4500,
        n_features=12,
        n_informative=6,
        n_classes=4,
        n_clusters_per_class=1,
        class_sep=1.3,
        flip_y=0.01,
        random_state=3,
    )
    ids = [f"item-{index}" for index in range(len(truth))]
    human = np.arange(800)
    check = np.array([i for i in human if held_out(ids[i], 0.3)])
    train = np.array([i for i in human if not held_out(ids[i], 0.3)])
    rest = np.arange(800, len(truth))
    booster = xgboost.train(
        {"objective": "multi:softprob", "num_class": 4, "max_depth": 4, "eta": 0.2},
        xgboost.DMatrix(features[train], label=truth[train]),
        60,
    )
    names = [f"probability_{label}" for label in range(4)]
    held_labels, held_confidence = predictions(
        booster.predict(xgboost.DMatrix(features[check])), names
    )
    correct = [label == str(truth[i]) for label, i in zip(held_labels, check, strict=True)]
    chosen = choose_threshold(held_confidence, correct, 0.95)
    assert chosen is not None and chosen.precision >= 0.95

    labels, confidence = predictions(booster.predict(xgboost.DMatrix(features[rest])), names)
    machine = confidence >= chosen.value
    right = np.array([label == str(truth[i]) for label, i in zip(labels, rest, strict=True)])
    assert machine.mean() > 0.3  # a real share of the work is taken off people
    assert right[machine].mean() >= 0.95  # on fresh items, not only the held-out ones
    assert right[~machine].mean() < right[machine].mean()  # the doubtful ones go to people


def test_rounds_start_with_enough_labels_and_wait_for_more():
    state = AutoLabelState(job_name="j", target_precision=0.95)
    assert not due(99, 500, state, first=100, step=50)
    assert due(100, 500, state, first=100, step=50)
    finished = AutoLabelRound(round=1, training_job="t", human_labels=100, status="Completed")
    state = state.model_copy(update={"rounds": [finished]})
    assert not due(149, 500, state, first=100, step=50) and due(150, 500, state, 100, 50)
    training = state.model_copy(
        update={"rounds": [finished.model_copy(update={"status": "Training"})]}
    )
    assert not due(400, 500, training, first=100, step=50)
    assert not due(400, 0, state, first=100, step=50)


def test_text_items_become_stable_hashed_counts():
    assert text_features("Great product, great price!") == text_features(
        "great PRODUCT great price"
    )
    assert sum(text_features("one two three")) == 3
