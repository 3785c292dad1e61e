"""The monitor's drift tests have the power of alibi-detect's on the whole training data.

Tolerance: with the whole reference kept (up to `reference_max_values`, 100k by default) the KS
statistic equals alibi-detect's `KSDrift` to 1e-6 and its p-value to a relative 1e-5 (alibi
returns float32), chi-squared likewise against `TabularDrift`, and every decision is the same.
Beyond the cap the reference is that many quantiles: D stays within 1/cap of the exact one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from alibi_detect.cd import KSDrift, TabularDrift
from cairn.artifacts.manifest import InputColumn
from cairn.contracts.state import ModelVersionView, read_state
from cairn.store.memory import InMemoryObjectStore

from services.monitor.baseline import ReferenceSample
from services.monitor.baseline_store import Baselines
from services.monitor.drift import ks_statistic
from tests.unit.test_monitor_checks import deploy_model, detector_for

FEATURES = 8
REFERENCE_ROWS = 20_000


def frame_of(values: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(values, columns=[f"f{i}" for i in range(values.shape[1])])


@pytest.mark.parametrize("correction", ["bonferroni", "fdr"])
def test_ks_decisions_and_p_values_match_alibi_on_the_whole_reference(correction: str) -> None:
    rng = np.random.default_rng(3)
    reference = rng.normal(size=(REFERENCE_ROWS, FEATURES))
    detector = detector_for(frame_of(reference), correction=correction)
    exact = KSDrift(reference, p_val=0.05, correction=correction)
    flagged = 0
    for trial, (rows, shift) in enumerate([(1000, 0.0), (1000, 0.08), (1000, 0.12), (3000, 0.06)]):
        current = rng.normal(size=(rows, FEATURES))
        current[:, :3] += shift  # small shifts: where a 1,001-point sketch lacks the power
        ours = detector.check(current, max_rows=10_000, seed=trial)
        theirs = exact.predict(current, drift_type="batch", return_p_val=True)["data"]
        assert [r.statistic for r in ours] == pytest.approx(theirs["distance"], abs=1e-6)
        assert [r.p_value for r in ours] == pytest.approx(theirs["p_val"], rel=1e-5, abs=1e-12)
        threshold = float(np.min(theirs["threshold"]))
        assert ours[0].threshold == pytest.approx(threshold)
        alibi_flags = [
            bool(p <= threshold if correction == "fdr" else p < threshold) for p in theirs["p_val"]
        ]
        assert [r.drifted for r in ours] == alibi_flags
        assert any(r.drifted for r in ours) == bool(theirs["is_drift"])
        flagged += sum(alibi_flags)
    assert flagged >= 3, "the shifted batches should be caught"


def test_ks_on_a_small_shift_is_as_strong_as_the_exact_test() -> None:
    """The issue's case: D near 0.05 with 1k rows is drift for an exact KS (p < 0.01)."""
    rng = np.random.default_rng(11)
    reference = rng.normal(size=(REFERENCE_ROWS, 1))
    current = rng.normal(loc=0.1, size=(1000, 1))
    result = detector_for(frame_of(reference)).check(current, max_rows=10_000)[0]
    exact = KSDrift(reference, p_val=0.05).predict(current, return_p_val=True)["data"]
    assert result.p_value == pytest.approx(float(exact["p_val"][0]), rel=1e-5)
    assert result.p_value < 0.01 and result.drifted


def test_chi_squared_matches_tabular_drift_on_the_whole_reference() -> None:
    rng = np.random.default_rng(5)
    rows = REFERENCE_ROWS
    train = pd.DataFrame(
        {
            "x": rng.normal(size=rows),
            "colour": rng.choice(["red", "green", "blue"], p=[0.5, 0.3, 0.2], size=rows),
            "size": rng.choice(["s", "m", "l", "xl"], size=rows),
        }
    )
    inputs = [
        InputColumn(name="x", dtype="float"),
        InputColumn(name="colour", dtype="category", categories=["blue", "green", "red"]),
        InputColumn(name="size", dtype="category", categories=["l", "m", "s", "xl"]),
    ]
    detector = detector_for(train, inputs=inputs)
    codes = {"colour": ["blue", "green", "red"], "size": ["l", "m", "s", "xl"]}

    def encoded(frame: pd.DataFrame) -> np.ndarray:
        columns = [frame["x"].to_numpy()]
        columns += [frame[name].map(codes[name].index).to_numpy(float) for name in codes]
        return np.column_stack(columns)

    exact = TabularDrift(encoded(train), p_val=0.05, categories_per_feature={1: 3, 2: 4})
    current = pd.DataFrame(
        {
            "x": rng.normal(size=1500),
            "colour": rng.choice(["red", "green", "blue"], p=[0.44, 0.33, 0.23], size=1500),
            "size": rng.choice(["s", "m", "l", "xl"], size=1500),
        }
    )
    ours = detector.check(encoded(current), max_rows=10_000)
    theirs = exact.predict(encoded(current), return_p_val=True)["data"]
    assert [r.test for r in ours] == ["ks", "chi2", "chi2"]
    assert [r.statistic for r in ours] == pytest.approx(theirs["distance"], rel=1e-5)
    assert [r.p_value for r in ours] == pytest.approx(theirs["p_val"], rel=1e-5, abs=1e-12)
    threshold = float(theirs["threshold"])
    assert [r.drifted for r in ours] == [bool(p < threshold) for p in theirs["p_val"]]
    assert ours[1].drifted, "a 6-point shift in a category's share over 1.5k rows is drift"


def test_beyond_the_cap_the_reference_is_quantiles_within_one_over_the_cap() -> None:
    rng = np.random.default_rng(9)
    reference = rng.normal(size=(60_000, 3))
    cap = 5000
    detector = detector_for(frame_of(reference), max_values=cap)
    assert len(detector.samples[0]) == cap and detector.sample_counts.tolist() == [60_000] * 3
    exact = KSDrift(reference, p_val=0.05)
    for trial in range(3):
        current = rng.normal(loc=0.03 * trial, size=(2000, 3))
        ours = detector.check(current, max_rows=10_000)
        theirs = exact.predict(current, return_p_val=True)["data"]
        for result, distance, p_value in zip(
            ours, theirs["distance"], theirs["p_val"], strict=True
        ):
            assert abs(result.statistic - distance) <= 1 / (cap - 1)
            assert result.p_value == pytest.approx(float(p_value), rel=0.1, abs=1e-4)


def test_ks_statistic_handles_ties_like_scipy() -> None:
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(1)
    reference = np.sort(rng.integers(0, 5, size=500).astype(float))
    current = np.sort(rng.integers(0, 6, size=120).astype(float))
    expected = ks_2samp(reference, current).statistic
    assert ks_statistic(reference, current) == pytest.approx(expected, abs=1e-12)


def test_reference_sample_is_stored_with_the_baseline_and_read_back_without_pickle() -> None:
    store = InMemoryObjectStore()
    train = deploy_model(store, "ep", "credit", 1, "job-1")
    uri = read_state(store, ModelVersionView, "credit", "1").artifact_uri  # type: ignore[union-attr]
    _, created = Baselines(store, 101, 100_000).ensure("credit", 1, uri)
    assert created
    stored = ReferenceSample.from_bytes(store.get_bytes("monitor/baselines/credit/1/reference.npz"))
    assert stored.counts["f0"] == len(train)
    assert np.array_equal(stored.values["f0"], np.sort(train["f0"].to_numpy()))

    # A baseline stored before reference samples gets one from its training data.
    store.delete("monitor/baselines/credit/1/reference.npz")
    again, created = Baselines(store, 101, 100_000).ensure("credit", 1, uri)
    assert not created and again.reference.counts["f0"] == len(train)
    assert store.exists("monitor/baselines/credit/1/reference.npz")

    # ... and when its training data is gone too, the KS test falls back to the quantile sketch.
    store.delete("monitor/baselines/credit/1/reference.npz")
    store.delete("data/job-1/train.csv")
    fallback, _ = Baselines(store, 101, 100_000).ensure("credit", 1, uri)
    assert fallback.reference.counts["f0"] == 101
