"""One PNG per drifted feature: the baseline's distribution next to the current batch's."""

from __future__ import annotations

import io
from typing import Literal

import matplotlib

matplotlib.use("Agg")  # no display in a service; must precede pyplot
import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from services.monitor.drift import FeatureResult

DISTRIBUTION_BINS = 20


class FeatureDistribution(BaseModel):
    """Reference and current shares of one feature, binned alike, for clients that plot them."""

    kind: Literal["numeric", "categorical"]
    edges: list[float] | None = None  # numeric: len(shares) + 1 bin edges
    categories: list[str] | None = None
    reference: list[float]
    current: list[float]


def drift_chart(
    result: FeatureResult,
    reference: npt.NDArray[np.float64],
    current: npt.NDArray[np.float64],
    domain: list[str] | None,
) -> bytes:
    """A PNG comparing the reference (baseline sketch) and current values of one feature."""
    current = current[~np.isnan(current)]
    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=80)
    try:
        if domain is not None:
            positions = np.arange(len(domain))
            ref_share = np.bincount(reference.astype(int), minlength=len(domain)) / max(
                len(reference), 1
            )
            cur_counts = np.bincount(current.astype(int), minlength=len(domain))[: len(domain)]
            cur_share = cur_counts / max(len(current), 1)
            axes.bar(positions - 0.2, ref_share, width=0.4, label="baseline")
            axes.bar(positions + 0.2, cur_share, width=0.4, label="current")
            axes.set_xticks(positions, domain, rotation=45, ha="right")
            axes.set_ylabel("share")
        else:
            low = float(min(reference.min(), current.min() if len(current) else reference.min()))
            high = float(max(reference.max(), current.max() if len(current) else reference.max()))
            bins = np.linspace(low, high if high > low else low + 1, 40).tolist()
            axes.hist(reference, bins=bins, density=True, alpha=0.5, label="baseline")
            axes.hist(current, bins=bins, density=True, alpha=0.5, label="current")
            axes.set_ylabel("density")
        axes.set_title(
            f"{result.feature}: {result.test} {result.statistic:.3f}, p={result.p_value:.2g}"
        )
        axes.legend()
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(figure)


def binned_distribution(
    reference: npt.NDArray[np.float64],
    current: npt.NDArray[np.float64],
    domain: list[str] | None,
) -> FeatureDistribution:
    """The reference's and the current batch's shares per category or per common numeric bin."""
    current = current[~np.isnan(current)]
    reference = reference[~np.isnan(reference)]
    if domain is not None:
        size = len(domain)
        ref_counts = np.bincount(reference.astype(int), minlength=size)[:size]
        cur_counts = np.bincount(current.astype(int), minlength=size)[:size]
        return FeatureDistribution(
            kind="categorical",
            categories=domain,
            reference=_shares(ref_counts),
            current=_shares(cur_counts),
        )
    both = np.concatenate([reference, current])
    low, high = (float(both.min()), float(both.max())) if len(both) else (0.0, 1.0)
    edges = np.linspace(low, high if high > low else low + 1, DISTRIBUTION_BINS + 1)
    return FeatureDistribution(
        kind="numeric",
        edges=edges.tolist(),
        reference=_shares(np.histogram(reference, bins=edges)[0]),
        current=_shares(np.histogram(current, bins=edges)[0]),
    )


def _shares(counts: npt.NDArray[np.int64]) -> list[float]:
    total = int(counts.sum())
    return [float(count) / total if total else 0.0 for count in counts]
