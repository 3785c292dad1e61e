"""Baselines in the spirit of SageMaker Model Monitor: statistics.json and constraints.json.

Computed once per model version from its training data. A numeric feature keeps a quantile
sketch (`sketch_size` evenly spaced quantiles) for people to read, and its reference sample
(`reference.npz`: the training values sorted, or beyond `max_values` that many quantiles), which
is what the KS test compares against; a categorical feature keeps its domain and frequencies,
which give the reference counts of the chi-squared test. So a check never reads the training
data again.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from cairn.artifacts.manifest import InputColumn
from pydantic import BaseModel, Field

InferredType = Literal["Fractional", "Integral", "String"]
HISTOGRAM_BINS = 20


class NumericalStatistics(BaseModel):
    mean: float
    std_dev: float
    min: float
    max: float
    quantiles: list[float] = Field(description="sketch_size quantiles at i/(sketch_size-1)")


class CategoricalStatistics(BaseModel):
    distinct_count: int
    frequencies: dict[str, float] = Field(description="category -> share of present values")


class FeatureStatistics(BaseModel):
    name: str
    inferred_type: InferredType
    num_present: int
    num_missing: int
    completeness: float
    numerical_statistics: NumericalStatistics | None = None
    string_statistics: CategoricalStatistics | None = None


class Statistics(BaseModel):
    """`statistics.json`: one entry per model input, in signature order."""

    version: int = 0
    model_package_group: str
    model_version: int
    item_count: int
    label_column: str | None = None
    features: list[FeatureStatistics]

    def feature(self, name: str) -> FeatureStatistics | None:
        return next((item for item in self.features if item.name == name), None)


class FeatureConstraint(BaseModel):
    name: str
    inferred_type: InferredType
    completeness: float = Field(description="Minimum share of present values (the baseline's).")
    num_constraints: dict[str, bool] | None = None
    string_domain: list[str] | None = None


class Constraints(BaseModel):
    """`constraints.json`: what a good batch looks like."""

    version: int = 0
    features: list[FeatureConstraint]
    monitoring_config: dict[str, float | str | bool] = Field(default_factory=dict)


def _inferred_type(column: InputColumn) -> InferredType:
    types = {"float": "Fractional", "int": "Integral", "category": "String", "text": "String"}
    return types[column.dtype]  # type: ignore[return-value]


def category_key(value: object) -> str:
    """Categories are compared as strings; 3.0 matches the category "3" (as the model does)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def compute_baseline(
    frame: pd.DataFrame,
    inputs: list[InputColumn],
    *,
    group: str,
    version: int,
    label_column: str | None,
    sketch_size: int,
) -> tuple[Statistics, Constraints]:
    """Statistics and constraints of the model inputs in a training frame."""
    probabilities = np.linspace(0.0, 1.0, sketch_size)
    rows = len(frame)
    described = [
        _describe(
            column,
            frame[column.name] if column.name in frame.columns else pd.Series([None] * rows),
            probabilities,
        )
        for column in inputs
    ]
    statistics = Statistics(
        model_package_group=group,
        model_version=version,
        item_count=rows,
        label_column=label_column,
        features=[stats for stats, _ in described],
    )
    return statistics, Constraints(features=[constraint for _, constraint in described])


def _describe(
    column: InputColumn, series: pd.Series, probabilities: npt.NDArray[np.float64]
) -> tuple[FeatureStatistics, FeatureConstraint]:
    """One input column's statistics (quantile sketch or category shares) and constraint."""
    rows = len(series)
    present = series.dropna()
    completeness = len(present) / rows if rows else 0.0
    inferred = _inferred_type(column)
    stats = FeatureStatistics(
        name=column.name,
        inferred_type=inferred,
        num_present=len(present),
        num_missing=rows - len(present),
        completeness=completeness,
    )
    constraint = FeatureConstraint(
        name=column.name, inferred_type=inferred, completeness=completeness
    )
    if column.dtype == "category":
        shares = present.map(category_key).value_counts(normalize=True).sort_index()
        stats.string_statistics = CategoricalStatistics(
            distinct_count=len(shares),
            frequencies={str(k): float(v) for k, v in shares.items()},
        )
        constraint.string_domain = sorted(set(column.categories or []) | set(shares.index))
        return stats, constraint
    values = pd.to_numeric(present, errors="coerce").dropna().to_numpy(dtype=np.float64)
    if len(values) == 0:
        values = np.zeros(1)
    stats.numerical_statistics = NumericalStatistics(
        mean=float(values.mean()),
        std_dev=float(values.std()),
        min=float(values.min()),
        max=float(values.max()),
        quantiles=np.quantile(values, probabilities).tolist(),
    )
    constraint.num_constraints = {"is_non_negative": bool(values.min() >= 0)}
    return stats, constraint


def reference_column(feature: FeatureStatistics, domain: list[str], size: int) -> npt.NDArray[Any]:
    """`size` values whose distribution is the baseline's: the quantiles of a numeric feature, or
    category codes (index in `domain`) repeated in proportion to their frequencies."""
    if feature.numerical_statistics is not None:
        quantiles = np.asarray(feature.numerical_statistics.quantiles, dtype=np.float64)
        if len(quantiles) == size:
            return quantiles
        return np.quantile(quantiles, np.linspace(0.0, 1.0, size))
    shares = feature.string_statistics.frequencies if feature.string_statistics else {}
    codes = {value: index for index, value in enumerate(domain)}
    counts = {codes[key]: share * size for key, share in shares.items() if key in codes}
    whole = {code: int(np.floor(count)) for code, count in counts.items()}
    # Largest remainders fill what flooring left out, so the column has exactly `size` values.
    remainder = size - sum(whole.values())
    for code in sorted(counts, key=lambda c: counts[c] - whole[c], reverse=True)[:remainder]:
        whole[code] += 1
    if not whole:
        return np.zeros(size)
    return np.repeat(np.array(list(whole), dtype=np.float64), list(whole.values()))


@dataclass(frozen=True)
class ReferenceSample:
    """Per numeric feature: its training values sorted, and how many values they stand for.

    Up to `max_values` values a feature's sample is exact (the KS test is then alibi-detect's on
    the whole training data); beyond, it is `max_values` evenly spaced quantiles, whose empirical
    distribution is within 1/max_values of the data's, and `counts` keeps the true sample size.
    """

    values: dict[str, npt.NDArray[np.float64]]
    counts: dict[str, int]

    def to_bytes(self) -> bytes:
        """An `.npz` of plain arrays (read back without pickle)."""
        names = list(self.values)
        arrays: dict[str, npt.NDArray[Any]] = {
            "names": np.array(names, dtype=np.str_),
            "counts": np.array([self.counts[name] for name in names], dtype=np.int64),
        }
        arrays.update({f"values_{index}": self.values[name] for index, name in enumerate(names)})
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ReferenceSample:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            names = [str(name) for name in archive["names"]]
            counts = [int(count) for count in archive["counts"]]
            values = {
                name: archive[f"values_{i}"].astype(np.float64) for i, name in enumerate(names)
            }
        return cls(values, dict(zip(names, counts, strict=True)))

    @classmethod
    def from_statistics(cls, statistics: Statistics) -> ReferenceSample:
        """The quantile sketch as the sample: for baselines stored before reference samples."""
        values = {
            feature.name: np.asarray(feature.numerical_statistics.quantiles, dtype=np.float64)
            for feature in statistics.features
            if feature.numerical_statistics is not None
        }
        return cls(values, {name: len(sample) for name, sample in values.items()})


def reference_sample(
    frame: pd.DataFrame, statistics: Statistics, *, max_values: int
) -> ReferenceSample:
    """The sorted training values of each numeric feature (quantiles beyond `max_values`)."""
    values: dict[str, npt.NDArray[np.float64]] = {}
    counts: dict[str, int] = {}
    for feature in statistics.features:
        if feature.numerical_statistics is None:
            continue
        column = frame[feature.name] if feature.name in frame.columns else pd.Series([], float)
        present = pd.to_numeric(column.dropna(), errors="coerce").dropna()
        sample = np.sort(present.to_numpy(dtype=np.float64))
        if len(sample) == 0:
            sample = np.zeros(1)  # as the statistics do: an empty feature is all zeros
        counts[feature.name] = len(sample)
        if len(sample) > max_values:
            sample = np.quantile(sample, np.linspace(0.0, 1.0, max_values))
        values[feature.name] = sample
    return ReferenceSample(values, counts)
