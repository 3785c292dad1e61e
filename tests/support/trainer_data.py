"""A synthetic credit-risk table with real signal, for training tests and demos.

`default` depends on income, debt ratio, late payments, purpose and housing through a logistic
model, so a decent classifier reaches an AUC well above 0.5 and a broken one does not.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

PURPOSES = ("car", "education", "home", "business", "vacation")
HOUSING = ("own", "rent", "mortgage")
FEATURES = (
    "age",
    "income",
    "debt_ratio",
    "late_payments",
    "credit_lines",
    "purpose",
    "housing",
)


def credit_frame(rows: int = 2000, seed: int = 0) -> pd.DataFrame:
    """A credit table: numeric and categorical columns plus a 0/1 `default` label."""
    rng = np.random.default_rng(seed)
    age = rng.integers(21, 75, rows)
    income = np.round(rng.lognormal(10.8, 0.5, rows), 2)
    debt_ratio = np.round(rng.beta(2, 5, rows), 4)
    late_payments = rng.poisson(0.6, rows)
    credit_lines = rng.integers(1, 15, rows)
    purpose = rng.choice(PURPOSES, rows)
    housing = rng.choice(HOUSING, rows, p=[0.3, 0.45, 0.25])
    purpose_risk = pd.Series(purpose).map(
        {"car": 0.0, "education": 0.4, "home": -0.3, "business": 0.8, "vacation": 0.6}
    )
    housing_risk = pd.Series(housing).map({"own": -0.5, "rent": 0.4, "mortgage": 0.0})
    logit = (
        -1.2
        - 0.9 * (np.log(income) - 10.8) / 0.5
        + 4.0 * (debt_ratio - 0.28)
        + 0.9 * late_payments
        - 0.02 * (age - 45)
        + purpose_risk.to_numpy()
        + housing_risk.to_numpy()
    )
    default = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame(
        {
            "default": default,
            "age": age,
            "income": income,
            "debt_ratio": debt_ratio,
            "late_payments": late_payments,
            "credit_lines": credit_lines,
            "purpose": purpose,
            "housing": housing,
        }
    )


def regression_frame(rows: int = 1000, seed: int = 0) -> pd.DataFrame:
    """A numeric table whose `target` is a noisy linear function of the features."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4))
    target = 3 * x[:, 0] - 2 * x[:, 1] + 0.5 * x[:, 2] + rng.normal(0, 0.1, rows)
    frame = pd.DataFrame(x, columns=["x0", "x1", "x2", "x3"])
    frame.insert(0, "target", target)
    return frame


def multiclass_frame(rows: int = 900, seed: int = 0) -> pd.DataFrame:
    """Three separable blobs labelled with strings, so label mapping is exercised."""
    rng = np.random.default_rng(seed)
    centers = np.array([[0, 0], [4, 4], [0, 5]])
    labels = rng.integers(0, 3, rows)
    x = centers[labels] + rng.normal(0, 0.8, (rows, 2))
    return pd.DataFrame(
        {"species": np.array(["a", "b", "c"])[labels], "f0": x[:, 0], "f1": x[:, 1]}
    )


def to_csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def to_jsonl_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_json(orient="records", lines=True).encode()
