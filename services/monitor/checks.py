"""Per-run checks on captured traffic: data quality and model quality (drift is in `drift`).

Pure computation: no store, bus or HTTP.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from services.monitor.baseline import (
    Constraints,
    FeatureConstraint,
    category_key,
)
from services.monitor.capture import CapturedRow


@dataclass
class CurrentBatch:
    """The captured rows of one run, as raw cells by feature name, plus what did not fit."""

    frame: pd.DataFrame
    predictions: list[float | list[float] | None]
    inference_keys: list[str | None]
    malformed_rows: int = 0
    extra_columns: list[str] = field(default_factory=list)


def current_batch(rows: Sequence[CapturedRow], feature_names: list[str]) -> CurrentBatch:
    """Rows as a frame of raw cells by feature name; list rows of the wrong width are malformed."""
    width = len(feature_names)
    records: list[dict[str, Any]] = []
    predictions: list[float | list[float] | None] = []
    keys: list[str | None] = []
    malformed = 0
    extra: set[str] = set()
    for item in rows:
        if isinstance(item.row, dict):
            record = item.row
            extra.update(set(record) - set(feature_names))
        elif len(item.row) == width:
            record = dict(zip(feature_names, item.row, strict=True))
        else:
            malformed += 1
            continue
        records.append(record)
        predictions.append(item.prediction)
        keys.append(item.inference_key)
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    return CurrentBatch(frame, predictions, keys, malformed, sorted(extra))


# Data quality -----------------------------------------------------------------------------------


def _is_missing(series: pd.Series) -> pd.Series:
    return series.isna() | series.map(lambda value: isinstance(value, str) and not value.strip())


def check_quality(batch: CurrentBatch, constraints: Constraints) -> list[str]:
    """Violations of the baseline's constraints: columns, types, completeness, unseen categories."""
    violations: list[str] = []
    if batch.malformed_rows:
        violations.append(
            f"malformed_rows: {batch.malformed_rows} rows do not have the "
            f"{len(constraints.features)} columns of the baseline"
        )
    if batch.extra_columns:
        violations.append(f"extra_columns: {', '.join(batch.extra_columns)}")
    if len(batch.frame) == 0:
        return violations
    for constraint in constraints.features:
        if constraint.name not in batch.frame.columns:
            violations.append(f"missing_column: {constraint.name}")
        else:
            violations.extend(_column_violations(constraint, batch.frame[constraint.name]))
    return violations


def _column_violations(constraint: FeatureConstraint, series: pd.Series) -> list[str]:
    name, rows = constraint.name, len(series)
    missing = _is_missing(series)
    present = series[~missing]
    completeness = 1.0 - float(missing.mean())
    baseline = constraint.completeness
    # Below the baseline by more than sampling noise (3 standard errors) plus one point.
    tolerance = 3 * math.sqrt(max(baseline * (1 - baseline), 1e-12) / rows) + 0.01
    violations: list[str] = []
    if completeness < baseline - tolerance:
        violations.append(
            f"completeness: {name} is {completeness:.3f} complete, baseline {baseline:.3f}"
        )
    if constraint.string_domain is not None:
        unseen = sorted({category_key(v) for v in present} - set(constraint.string_domain))
        if unseen:
            shown = ", ".join(unseen[:5]) + (" ..." if len(unseen) > 5 else "")
            violations.append(f"unseen_categories: {name} has {len(unseen)} new ({shown})")
    else:
        violations.extend(_numeric_violations(constraint, pd.to_numeric(present, errors="coerce")))
    return violations


def _numeric_violations(constraint: FeatureConstraint, numbers: pd.Series) -> list[str]:
    name = constraint.name
    not_numeric = int(numbers.isna().sum())
    if not_numeric:
        return [f"type_mismatch: {name} has {not_numeric} non-numeric values"]
    if constraint.inferred_type == "Integral" and not np.all(
        np.mod(numbers.to_numpy(dtype=np.float64), 1) == 0
    ):
        return [f"type_mismatch: {name} is Integral but has fractional values"]
    if (constraint.num_constraints or {}).get("is_non_negative") and (numbers < 0).any():
        return [f"negative_values: {name} was never negative in the baseline"]
    return []


def encode_batch(batch: CurrentBatch, constraints: Constraints) -> npt.NDArray[np.float64]:
    """The batch as a float matrix in baseline order: numbers, or category codes; else NaN."""
    frame = batch.frame
    matrix = np.full((len(frame), len(constraints.features)), np.nan)
    for index, constraint in enumerate(constraints.features):
        if constraint.name not in frame.columns:
            continue
        series = frame[constraint.name]
        if constraint.string_domain is not None:
            codes = {value: float(code) for code, value in enumerate(constraint.string_domain)}
            matrix[:, index] = [
                np.nan
                if value is None or (isinstance(value, float) and math.isnan(value))
                # An unseen category is a quality violation; for drift it counts as missing.
                else codes.get(category_key(value), np.nan)
                for value in series
            ]
        else:
            matrix[:, index] = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
    return matrix


# Model quality ----------------------------------------------------------------------------------


def quality_metrics(
    task: str,
    class_labels: list[str] | None,
    predictions: Sequence[float | list[float] | None],
    labels: Sequence[float | int | str],
) -> dict[str, float]:
    """Accuracy and AUC (classification) or RMSE and MAE (regression) over labelled rows."""
    pairs = [(p, y) for p, y in zip(predictions, labels, strict=True) if p is not None]
    if not pairs:
        return {}
    metrics: dict[str, float] = {"labelled_rows": float(len(pairs))}
    if task == "regression":
        predicted = np.array([float(p) for p, _ in pairs])  # type: ignore[arg-type]
        actual = np.array([float(y) for _, y in pairs])
        metrics["rmse"] = float(np.sqrt(np.mean((predicted - actual) ** 2)))
        metrics["mae"] = float(np.mean(np.abs(predicted - actual)))
        return metrics
    index = {category_key(label): i for i, label in enumerate(class_labels or [])}
    truth = [_class_of(y, index) for _, y in pairs]
    kept = [(p, t) for (p, _), t in zip(pairs, truth, strict=True) if t is not None]
    if kept:
        metrics.update(_classification_metrics(task, kept))
    return metrics


def _class_of(label: float | int | str, index: dict[str, int]) -> int | None:
    """A label's class number: its position among the class labels, or the label as a number."""
    key = category_key(label)
    if key in index:
        return index[key]
    try:
        return int(float(key))
    except ValueError:
        return None


def _classification_metrics(
    task: str, kept: list[tuple[float | list[float], int]]
) -> dict[str, float]:
    actual_classes = np.array([t for _, t in kept])
    if task == "binary_classification":
        scores = np.array([float(p if not isinstance(p, list) else p[-1]) for p, _ in kept])
        metrics = {"accuracy": float(np.mean((scores >= 0.5).astype(int) == actual_classes))}
        if len(set(actual_classes.tolist())) == 2:
            from sklearn.metrics import roc_auc_score

            metrics["auc"] = float(roc_auc_score(actual_classes, scores))
        return metrics
    predicted = np.array([int(np.argmax(p)) if isinstance(p, list) else int(p) for p, _ in kept])
    return {"accuracy": float(np.mean(predicted == actual_classes))}
