"""Consolidation: many people's answers -> one label per item, with its confidence, plus how well
the people agree (Krippendorff's alpha, pairwise agreement) and how good each one is.

Classification uses crowd-kit's Dawid-Skene (EM over each annotator's confusion matrix) or its
majority vote; the confidence is the posterior (or vote share) of the chosen label. Multi-label
answers are a yes/no vote per label; boxes are clustered by IoU (same label, one box per person
per cluster) and a cluster most people drew is kept as the mean of its boxes.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from services.labeling.domain import Annotation, Box


@dataclass(frozen=True)
class Consolidated:
    label: str
    confidence: float
    annotator_count: int


@dataclass
class Consolidation:
    """The job's labels by item, and its agreement figures."""

    labels: dict[str, Consolidated] = field(default_factory=dict)
    agreement: dict[str, Any] = field(default_factory=dict)


def _frame(answers: Sequence[tuple[str, str, str]]) -> Any:
    import pandas as pd

    return pd.DataFrame(answers, columns=["task", "worker", "label"])


def classify(
    annotations: Sequence[Annotation], method: str, iterations: int = 100
) -> Consolidation:
    """One label per item from single-label answers (Dawid-Skene or majority vote)."""
    answers = [(a.item_id, a.annotator, a.label) for a in annotations if a.label is not None]
    if not answers:
        return Consolidation(agreement=_empty_agreement())
    from crowdkit.aggregation import DawidSkene, MajorityVote

    frame = _frame(answers)
    aggregator: Any = DawidSkene(n_iter=iterations) if method == "dawid-skene" else MajorityVote()
    chosen = aggregator.fit_predict(frame)
    probabilities = aggregator.probas_
    counts = frame.groupby("task")["worker"].nunique()
    labels = {
        str(task): Consolidated(
            label=str(label),
            confidence=round(float(probabilities.loc[task, label]), 6),
            annotator_count=int(counts[task]),
        )
        for task, label in chosen.items()
    }
    consensus = {task: found.label for task, found in labels.items()}
    agreement = agreement_of(answers, consensus)
    if method == "dawid-skene":
        agreement["estimated_accuracy"] = _diagonal(aggregator)
    return Consolidation(labels, agreement)


def _diagonal(aggregator: Any) -> dict[str, float]:
    """Each annotator's Dawid-Skene accuracy: P(answer = truth), weighted by the class priors.

    crowd-kit's `errors_` is indexed by (worker, answered label), one column per true label.
    """
    errors, priors = aggregator.errors_, aggregator.priors_
    accuracy: dict[str, float] = {}
    for worker in errors.index.get_level_values(0).unique():
        rows = errors.loc[worker]
        accuracy[str(worker)] = round(
            float(
                sum(
                    priors[label] * rows.loc[label, label]
                    for label in priors.index
                    if label in rows.index and label in rows.columns
                )
            ),
            4,
        )
    return accuracy


def multi_label(annotations: Sequence[Annotation], labels: Sequence[str]) -> Consolidation:
    """Each label is chosen when more than half the item's annotators chose it."""
    by_item: dict[str, list[Annotation]] = defaultdict(list)
    for annotation in annotations:
        by_item[annotation.item_id].append(annotation)
    out: dict[str, Consolidated] = {}
    answers: list[tuple[str, str, str]] = []
    for item_id, given in by_item.items():
        shares = {label: sum(label in a.labels for a in given) / len(given) for label in labels}
        chosen = [label for label in labels if shares[label] > 0.5]
        confidence = sum(max(share, 1 - share) for share in shares.values()) / len(labels)
        out[item_id] = Consolidated("|".join(chosen), round(confidence, 6), len(given))
        answers.extend((item_id, a.annotator, "|".join(a.labels)) for a in given)
    consensus = {item_id: found.label for item_id, found in out.items()}
    return Consolidation(out, agreement_of(answers, consensus))


def iou(a: Box, b: Box) -> float:
    width = min(a.x + a.width, b.x + b.width) - max(a.x, b.x)
    height = min(a.y + a.height, b.y + b.height) - max(a.y, b.y)
    if width <= 0 or height <= 0:
        return 0.0
    overlap = width * height
    return overlap / (a.width * a.height + b.width * b.height - overlap)


def _mean_box(members: list[tuple[str, Box]]) -> Box:
    boxes = [box for _, box in members]
    return Box(
        label=boxes[0].label,
        x=sum(b.x for b in boxes) / len(boxes),
        y=sum(b.y for b in boxes) / len(boxes),
        width=sum(b.width for b in boxes) / len(boxes),
        height=sum(b.height for b in boxes) / len(boxes),
    )


def cluster_boxes(given: Sequence[Annotation], threshold: float) -> tuple[list[Box], list[float]]:
    """Boxes most annotators drew (IoU >= threshold to the cluster's mean, same label), each
    with the share of annotators who drew it."""
    clusters: list[list[tuple[str, Box]]] = []
    for annotation in given:
        for box in annotation.boxes:
            best, best_iou = None, threshold
            for cluster in clusters:
                if cluster[0][1].label != box.label:
                    continue
                if any(who == annotation.annotator for who, _ in cluster):
                    continue
                overlap = iou(_mean_box(cluster), box)
                if overlap >= best_iou:
                    best, best_iou = cluster, overlap
            if best is None:
                clusters.append([(annotation.annotator, box)])
            else:
                best.append((annotation.annotator, box))
    kept = [cluster for cluster in clusters if len(cluster) * 2 > len(given)]
    return [_mean_box(c) for c in kept], [len(c) / len(given) for c in kept]


def boxes(annotations: Sequence[Annotation], threshold: float) -> Consolidation:
    import json

    by_item: dict[str, list[Annotation]] = defaultdict(list)
    for annotation in annotations:
        by_item[annotation.item_id].append(annotation)
    out: dict[str, Consolidated] = {}
    answers: list[tuple[str, str, str]] = []
    for item_id, given in by_item.items():
        kept, shares = cluster_boxes(given, threshold)
        drawn = sum(len(a.boxes) for a in given)
        # Boxes drawn but not kept lower the confidence as much as boxes kept raise it.
        confidence = sum(shares) / max(len(kept), drawn / len(given), 1) if drawn else 1.0
        payload = [box.model_dump(mode="json") for box in kept]
        out[item_id] = Consolidated(json.dumps(payload), round(min(confidence, 1.0), 6), len(given))
        answers.extend((item_id, a.annotator, str(len(a.boxes))) for a in given)
    consensus = {item_id: str(len(json.loads(found.label))) for item_id, found in out.items()}
    return Consolidation(out, agreement_of(answers, consensus))


def _empty_agreement() -> dict[str, Any]:
    return {"krippendorff_alpha": None, "pairwise": None, "annotators": {}}


def agreement_of(
    answers: Sequence[tuple[str, str, str]], consensus: dict[str, str]
) -> dict[str, Any]:
    """Krippendorff's alpha (nominal), pairwise agreement, and per annotator: answers, agreement
    with the consolidated label, and pairwise agreement with the others."""
    if not answers:
        return _empty_agreement()
    by_item: dict[str, dict[str, str]] = defaultdict(dict)
    for task, worker, label in answers:
        by_item[task][worker] = label
    pairs_same = pairs_all = 0
    per_worker: dict[str, dict[str, float]] = defaultdict(
        lambda: {"answers": 0, "with_consensus": 0, "pairs": 0, "pairs_same": 0}
    )
    for task, given in by_item.items():
        for worker, label in given.items():
            stats = per_worker[worker]
            stats["answers"] += 1
            stats["with_consensus"] += label == consensus.get(task)
        for (w1, l1), (w2, l2) in itertools.combinations(given.items(), 2):
            same = l1 == l2
            pairs_all += 1
            pairs_same += same
            for worker in (w1, w2):
                per_worker[worker]["pairs"] += 1
                per_worker[worker]["pairs_same"] += same
    annotators = {
        worker: {
            "answers": int(stats["answers"]),
            "agreement_with_consensus": round(stats["with_consensus"] / stats["answers"], 4),
            "pairwise_agreement": (
                round(stats["pairs_same"] / stats["pairs"], 4) if stats["pairs"] else None
            ),
        }
        for worker, stats in sorted(per_worker.items())
    }
    return {
        "krippendorff_alpha": _alpha(answers),
        "pairwise": round(pairs_same / pairs_all, 4) if pairs_all else None,
        "annotators": annotators,
    }


def _alpha(answers: Sequence[tuple[str, str, str]]) -> float | None:
    """crowd-kit's Krippendorff's alpha; None when it is undefined (one value, one answer)."""
    from crowdkit.metrics.data import alpha_krippendorff

    try:
        value = float(alpha_krippendorff(_frame(answers)))
    except (ZeroDivisionError, ValueError):
        return None
    return round(value, 4) if math.isfinite(value) else None
