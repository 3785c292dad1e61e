"""Auto-labelling (Ground Truth's automated data labeling): the rules, pure and without I/O.

Each round trains a model on the human labels so far, except a held-out share chosen by a hash of
the item id (so an item stays on the same side in every round). The model scores the held-out
items and every item no one has labelled yet. The threshold is the lowest confidence at which
(1) the held-out items scored at least that high were right at least `target_precision` of the
time by the one-sided 95% Wilson lower bound of their precision, on at least `min_support` items
(the best of many cuts on one small sample flatters its measured precision), and (2) the items it
will label are expected to be right that often, each one's chance calibrated on the held-out items
(the items left after a round are harder than the ones labelled so far). Items above it get the
model's label; the rest go to people, least confident first, and the next round starts once people
have labelled `round_step` more items.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field

AUTOLABEL_TASKS = frozenset({"tabular-classification", "text-classification"})
LABEL_COLUMN = "label"
TEXT_FEATURES = 256  # hashed token counts of a text item: the model's columns


class AutoLabelRound(BaseModel):
    """One round's outcome, kept on the job's auto-label state."""

    round: int = Field(ge=1)
    training_job: str
    human_labels: int = Field(ge=0, description="Human-labelled items when the round started.")
    held_out: int = Field(default=0, ge=0)
    threshold: float | None = Field(default=None, description="None: no threshold met the target.")
    held_out_precision: float | None = None
    machine_labeled: int = Field(default=0, ge=0)
    status: str = "Training"
    reason: str = ""


class AutoLabelState(BaseModel):
    """`labeling/jobs/<job>/autolabel.json`: the rounds of one job's auto-labelling."""

    job_name: str
    target_precision: float = Field(gt=0, le=1)
    rounds: list[AutoLabelRound] = Field(default_factory=list)
    training_requested: bool = False

    @property
    def current(self) -> AutoLabelRound | None:
        return self.rounds[-1] if self.rounds else None

    @property
    def training(self) -> bool:
        return self.current is not None and self.current.status == "Training"

    @property
    def machine_labeled(self) -> int:
        return sum(one.machine_labeled for one in self.rounds)


@dataclass(frozen=True)
class Threshold:
    """The chosen confidence threshold and what it gave on the held-out labels."""

    value: float
    precision: float
    support: int


def held_out(item_id: str, share: float) -> bool:
    """Whether an item is kept out of training to measure the model (fixed by its id)."""
    digest = hashlib.sha256(item_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def due(human_labels: int, unlabeled: int, state: AutoLabelState, first: int, step: int) -> bool:
    """A new round: enough human labels, enough new ones since the last round, work left."""
    if state.training or unlabeled == 0 or human_labels < first:
        return False
    last = state.current
    return last is None or human_labels >= last.human_labels + step


def wilson_lower_bound(hits: Any, counts: Any, z: float) -> Any:
    """The lower end of the Wilson score interval of hits / counts (z: its width in sigmas)."""
    share = hits / counts
    centre = share + z * z / (2 * counts)
    spread = z * np.sqrt(share * (1 - share) / counts + z * z / (4 * counts * counts))
    return (centre - spread) / (1 + z * z / counts)


def choose_threshold(
    confidence: Sequence[float] | npt.NDArray[Any],
    correct: Sequence[bool] | npt.NDArray[Any],
    target_precision: float,
    min_support: int = 20,
    z: float = 1.645,
    pool: Sequence[float] | npt.NDArray[Any] | None = None,
) -> Threshold | None:
    """The lowest confidence at which the items at or above it are right often enough.

    Args:
        confidence: the model's confidence in its label, per held-out item.
        correct: whether that label equals the human one, per held-out item.
        target_precision: the share of machine labels that must be right (0.95: 95%).
        min_support: the fewest held-out items a threshold must be measured on.
        z: how cautious: the precision's Wilson lower bound at `z` must reach the target
            (1.645: one-sided 95% confidence; 0: the measured precision itself, which the best
            of many cuts on one small sample flatters).
        pool: the confidences of the items the threshold will label. Once easy items have
            been labelled, the rest sit lower in the band above a threshold than the held-out
            items do; with `pool`, each pool item's chance of being right is read off the
            held-out items (isotonic calibration) and their mean must reach the target too.

    Returns:
        The threshold, or None when no threshold reaches the target on enough items.
    """
    scores = np.asarray(confidence, dtype=float)
    right = np.asarray(correct, dtype=bool)
    if scores.size == 0:
        return None
    order = np.argsort(-scores, kind="stable")
    scores, right = scores[order], right[order]
    hits = np.cumsum(right)
    counts = np.arange(1, scores.size + 1)
    # Only cut between distinct scores: items tied with the threshold are all machine-labelled.
    last_of_tie = np.append(scores[1:] != scores[:-1], True)
    precision = hits / counts
    bound = wilson_lower_bound(hits, counts, z) if z > 0 else precision
    meets = last_of_tie & (counts >= min_support) & (bound >= target_precision)
    if pool is not None and meets.any():
        meets &= _pool_precision(scores, right, np.asarray(pool, dtype=float)) >= target_precision
    if not meets.any():
        return None
    cut = int(np.flatnonzero(meets)[-1])
    return Threshold(float(scores[cut]), float(precision[cut]), int(counts[cut]))


def _pool_precision(scores: Any, right: Any, pool: Any) -> Any:
    """For each held-out cut (scores descending): the expected precision on the pool's items at
    or above it, each item's chance of being right calibrated on the held-out items."""
    from sklearn.isotonic import IsotonicRegression

    if pool.size == 0:
        return np.ones_like(scores)
    calibration = IsotonicRegression(y_min=0, y_max=1, increasing=True, out_of_bounds="clip")
    calibration.fit(scores, right.astype(float))
    ranked = np.sort(pool)
    expected = calibration.predict(ranked)
    tail_sums = np.cumsum(expected[::-1])[::-1]  # sum of expected hits at or above each rank
    first = np.searchsorted(ranked, scores, side="left")
    taken = ranked.size - first
    safe = np.maximum(taken, 1)
    return np.where(taken > 0, tail_sums[np.minimum(first, ranked.size - 1)] / safe, 1.0)


def class_columns(output_names: list[str]) -> list[str]:
    """The labels of a multi:softprob model's outputs (`probability_<label>`), in order."""
    return [name.removeprefix("probability_") for name in output_names]


def predictions(
    probabilities: npt.NDArray[Any], output_names: list[str]
) -> tuple[list[str], npt.NDArray[Any]]:
    """Each row's label (the most probable class) and the model's confidence in it."""
    labels = class_columns(output_names)
    matrix = np.asarray(probabilities, dtype=float)
    if matrix.ndim == 1:
        matrix = matrix.reshape(-1, 1)
    best = matrix.argmax(axis=1)
    return [labels[index] for index in best], matrix.max(axis=1)


def text_features(text: str) -> list[int]:
    """A text item as hashed token counts (the trainer's built-ins take numbers, not text)."""
    counts = [0] * TEXT_FEATURES
    for token in text.lower().split():
        digest = hashlib.blake2b(token.strip(".,;:!?\"'()").encode(), digest_size=4).digest()
        counts[int.from_bytes(digest, "big") % TEXT_FEATURES] += 1
    return counts


def feature_names(task_type: str, fields: list[str]) -> list[str]:
    if task_type == "text-classification":
        return [f"t{index}" for index in range(TEXT_FEATURES)]
    return [name for name in fields if name != LABEL_COLUMN]


def feature_row(task_type: str, text: str, fields: dict[str, Any], names: list[str]) -> list[Any]:
    if task_type == "text-classification":
        return list(text_features(text))
    return [fields.get(name) for name in names]


def training_csv(names: list[str], rows: list[list[Any]], labels: list[str]) -> bytes:
    """The train channel: a header, the features, the human label last."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*names, LABEL_COLUMN])
    for row, label in zip(rows, labels, strict=True):
        writer.writerow(["" if value is None else value for value in row] + [label])
    return out.getvalue().encode()
