"""Auto-labelling on datasets with real signal: the share of items the machine labels, and how
often it is right, measured against the truth.

    .venv/bin/python bench/labeling/autolabel.py [--target 0.95 --seed 0]

The loop is the labeling service's (`services.labeling.autolabel`): people label items in the
order offered (random at first, then least confident first), three simulated annotators per item
(each right with probability `--annotator-accuracy`, majority vote). Every `--round-step` new human
labels a model is trained the way the service asks the trainer to (XGBoost, multi:softprob,
depth 4, eta 0.2, 60 rounds) on the human labels outside the held-out share; the threshold is
chosen on the held-out human labels for the target precision (`choose_threshold`); items above it
are machine-labelled, the rest go back to people. The figures compare every machine label with
the truth, which the loop never sees. Datasets: scikit-learn's handwritten digits (real images,
10 classes, bundled) and a 4-class, 5,000-item tabular set with real but imperfect signal.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import xgboost
from sklearn.datasets import load_digits, make_classification

from services.labeling.autolabel import choose_threshold, held_out, predictions

HELD_OUT_SHARE = 0.3
PARAMS = {"objective": "multi:softprob", "max_depth": 4, "eta": 0.2, "nthread": 2}
ROUNDS = 60


def datasets(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    digits = load_digits()
    tabular = make_classification(
        n_samples=5000,
        n_features=12,
        n_informative=6,
        n_classes=4,
        n_clusters_per_class=1,
        class_sep=1.3,
        flip_y=0.01,
        random_state=seed,
    )
    return {"digits (1,797 items, 10 classes)": (digits.data, digits.target), "tabular": tabular}


def human_label(truth: int, classes: int, accuracy: float, rng: np.random.Generator) -> int:
    """Three simulated annotators, majority vote (ties: the first answer)."""
    answers = [
        truth
        if rng.random() < accuracy
        else int(rng.choice([c for c in range(classes) if c != truth]))
        for _ in range(3)
    ]
    return max(answers, key=answers.count)


def run(
    features: np.ndarray,
    truth: np.ndarray,
    *,
    target: float,
    first: int,
    step: int,
    accuracy: float,
    seed: int,
    z: float = 1.645,
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    classes = int(truth.max()) + 1
    ids = [f"item-{index}" for index in range(len(truth))]
    order = list(rng.permutation(len(truth)))
    human: dict[int, int] = {}
    machine: dict[int, int] = {}
    rounds: list[dict[str, Any]] = []
    while len(human) + len(machine) < len(truth):
        goal = first if not rounds else len(human) + step
        while len(human) < goal and order:
            item = order.pop(0)
            human[item] = human_label(int(truth[item]), classes, accuracy, rng)
        if not order:
            break
        train = [i for i in human if not held_out(ids[i], HELD_OUT_SHARE)]
        check = [i for i in human if held_out(ids[i], HELD_OUT_SHARE)]
        seen = sorted({human[i] for i in train})
        if len(seen) < 2:
            continue
        encode = {label: code for code, label in enumerate(seen)}
        booster = xgboost.train(
            {**PARAMS, "num_class": len(seen)},
            xgboost.DMatrix(features[train], label=[encode[human[i]] for i in train]),
            ROUNDS,
        )
        names = [f"probability_{label}" for label in seen]
        held_labels, held_confidence = predictions(
            booster.predict(xgboost.DMatrix(features[check])), names
        )
        correct = [int(label) == human[i] for label, i in zip(held_labels, check, strict=True)]
        labels, confidence = predictions(booster.predict(xgboost.DMatrix(features[order])), names)
        chosen = choose_threshold(held_confidence, correct, target, z=z, pool=confidence)
        taken = right = 0
        if chosen is not None:
            for item, label, score in zip(order, labels, confidence, strict=True):
                if score >= chosen.value:
                    machine[item] = int(label)
                    taken += 1
                    right += int(label) == truth[item]
        rest = [
            (score, item)
            for item, score in zip(order, confidence, strict=True)
            if item not in machine
        ]
        order = [item for _, item in sorted(rest)]  # least confident first
        rounds.append(
            {
                "human_labels": len(human),
                "threshold": None if chosen is None else round(chosen.value, 4),
                "held_out_precision": None if chosen is None else round(chosen.precision, 4),
                "machine_labelled": taken,
                "machine_precision": round(right / taken, 4) if taken else None,
                "held_out_items": len(check),
            }
        )
    machine_right = sum(1 for item, label in machine.items() if label == truth[item])
    human_right = sum(1 for item, label in human.items() if label == truth[item])
    return {
        "items": len(truth),
        "human_labelled": len(human),
        "machine_labelled": len(machine),
        "machine_share": round(len(machine) / len(truth), 4),
        "machine_precision": round(machine_right / len(machine), 4) if machine else None,
        "human_accuracy": round(human_right / len(human), 4),
        "overall_accuracy": round((machine_right + human_right) / len(truth), 4),
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--first", type=int, default=200, help="Human labels before round 1.")
    parser.add_argument("--round-step", type=int, default=200)
    parser.add_argument("--annotator-accuracy", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--z", type=float, default=1.645, help="Caution of the threshold's bound.")
    args = parser.parse_args()
    for name, (features, truth) in datasets(args.seed).items():
        started = time.perf_counter()
        figures = run(
            np.asarray(features, dtype=np.float32),
            np.asarray(truth),
            target=args.target,
            first=args.first,
            step=args.round_step,
            accuracy=args.annotator_accuracy,
            seed=args.seed,
            z=args.z,
        )
        figures["seconds"] = round(time.perf_counter() - started, 1)
        print(json.dumps({"dataset": name, "target_precision": args.target, **figures}, indent=2))


if __name__ == "__main__":
    main()
