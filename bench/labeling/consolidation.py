"""Majority vote vs Dawid-Skene on simulated annotators with known confusion matrices.

7 annotators with accuracies 0.55-0.95 (one adversarial: it answers the next class on purpose),
3 of them drawn per item, 5,000 items, 4 classes; both methods run through the labeling
service's own consolidation (`services.labeling.consolidate`, crowd-kit underneath) and are
scored against the truth. Run: `python bench/labeling/consolidation.py [--items 5000 --seed 7]`.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from services.labeling.consolidate import classify
from services.labeling.domain import Annotation

CLASSES = ["a", "b", "c", "d"]
# (accuracy, adversarial): the adversarial annotator answers (truth + 1) mod 4 most of the time.
ANNOTATORS = [
    (0.95, False),
    (0.90, False),
    (0.80, False),
    (0.70, False),
    (0.60, False),
    (0.55, False),
    (0.85, True),
]


def simulate(items: int, per_item: int, seed: int) -> tuple[list[Annotation], dict[str, str]]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, len(CLASSES), size=items)
    annotations: list[Annotation] = []
    for item in range(items):
        for worker in rng.choice(len(ANNOTATORS), size=per_item, replace=False):
            accuracy, adversarial = ANNOTATORS[worker]
            true = int(truth[item])
            if adversarial:
                answer = (true + 1) % 4 if rng.random() < accuracy else true
            elif rng.random() < accuracy:
                answer = true
            else:
                answer = int(rng.choice([c for c in range(4) if c != true]))
            annotations.append(
                Annotation(
                    job_name="bench",
                    item_id=str(item),
                    annotator=f"w{worker}",
                    label=CLASSES[answer],
                )
            )
    return annotations, {str(i): CLASSES[int(t)] for i, t in enumerate(truth)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--per-item", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    annotations, truth = simulate(args.items, args.per_item, args.seed)
    report: dict[str, object] = {"items": args.items, "per_item": args.per_item}
    for method in ("majority-vote", "dawid-skene"):
        started = time.perf_counter()
        result = classify(annotations, method)
        seconds = time.perf_counter() - started
        correct = sum(result.labels[i].label == truth[i] for i in truth)
        report[method] = {"accuracy": round(correct / len(truth), 4), "seconds": round(seconds, 2)}
        if method == "dawid-skene":
            report["estimated_accuracy"] = result.agreement["estimated_accuracy"]
    report["krippendorff_alpha"] = classify(annotations, "majority-vote").agreement[
        "krippendorff_alpha"
    ]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
