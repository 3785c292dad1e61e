"""A synthetic credit-risk dataset: numeric and categorical columns, a `default` label with signal.

The label is drawn from a logistic model of the columns (debt-to-income, late payments, income,
employment, purpose...), so a trained model has something real to find and its explanations name
the columns that drive the risk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

LABEL = "default"
EMPLOYMENT = ("salaried", "self_employed", "contract", "unemployed", "retired")
HOME_OWNERSHIP = ("own", "mortgage", "rent")
PURPOSE = ("car", "home_improvement", "education", "business", "debt_consolidation", "medical")

_EMPLOYMENT_RISK = {
    "salaried": -0.4,
    "self_employed": 0.2,
    "contract": 0.3,
    "unemployed": 1.3,
    "retired": 0.0,
}
_HOME_RISK = {"own": -0.5, "mortgage": -0.2, "rent": 0.3}
_PURPOSE_RISK = {
    "car": -0.2,
    "home_improvement": -0.3,
    "education": 0.1,
    "business": 0.6,
    "debt_consolidation": 0.4,
    "medical": 0.3,
}


@dataclass(frozen=True)
class CreditData:
    """The CSV files written and the frames they hold (features plus the label, last)."""

    train_path: Path
    validation_path: Path
    train: pd.DataFrame
    validation: pd.DataFrame

    @property
    def feature_columns(self) -> list[str]:
        return [column for column in self.train.columns if column != LABEL]


def generate_credit_frame(rows: int, seed: int = 7) -> pd.DataFrame:
    """`rows` loan applications; `default` is 1 for about one in five."""
    rng = np.random.default_rng(seed)
    age = rng.integers(19, 76, rows)
    employment = rng.choice(EMPLOYMENT, rows, p=[0.55, 0.15, 0.12, 0.08, 0.10])
    income = np.round(
        rng.lognormal(10.9, 0.45, rows) * np.where(employment == "unemployed", 0.35, 1)
    )
    home = rng.choice(HOME_OWNERSHIP, rows, p=[0.25, 0.4, 0.35])
    purpose = rng.choice(PURPOSE, rows)
    loan_amount = np.round(rng.gamma(2.2, 6500, rows), -2) + 500
    term = rng.choice([12, 24, 36, 48, 60], rows)
    history = np.clip(np.round((age - 18) * 12 * rng.uniform(0.2, 1.0, rows)), 0, None)
    open_accounts = rng.poisson(4, rows)
    late_payments = rng.poisson(0.6, rows) + (rng.random(rows) < 0.05) * rng.integers(2, 8, rows)
    debt_to_income = np.round(np.clip(rng.normal(0.32, 0.13, rows), 0.01, 0.95), 3)
    utilisation = np.round(rng.beta(2.0, 3.5, rows), 3)

    installment = loan_amount / term
    logit = (
        -2.9
        + 3.2 * (debt_to_income - 0.32)
        + 0.55 * late_payments
        + 2.1 * (utilisation - 0.36)
        + 6.0 * installment / np.maximum(income / 12, 1)
        - 0.55 * np.log(income / 55_000)
        - 0.004 * (history - 120) / 12
        - 0.015 * (age - 40)
        + 0.04 * np.maximum(open_accounts - 6, 0)
        + np.vectorize(_EMPLOYMENT_RISK.__getitem__)(employment)
        + np.vectorize(_HOME_RISK.__getitem__)(home)
        + np.vectorize(_PURPOSE_RISK.__getitem__)(purpose)
    )
    default = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame(
        {
            "age": age,
            "income": income.astype(int),
            "employment": employment,
            "home_ownership": home,
            "purpose": purpose,
            "loan_amount": loan_amount.astype(int),
            "term_months": term,
            "credit_history_months": history.astype(int),
            "open_accounts": open_accounts,
            "late_payments": late_payments,
            "debt_to_income": debt_to_income,
            "credit_utilisation": utilisation,
            LABEL: default,
        }
    )


def write_credit_data(
    directory: Path, rows: int, validation_share: float = 0.2, seed: int = 7
) -> CreditData:
    """Generate, split and write `credit-train.csv` and `credit-validation.csv` under directory."""
    frame = generate_credit_frame(rows, seed)
    cut = int(rows * (1 - validation_share))
    train, validation = (
        frame.iloc[:cut].reset_index(drop=True),
        frame.iloc[cut:].reset_index(drop=True),
    )
    directory.mkdir(parents=True, exist_ok=True)
    train_path = directory / "credit-train.csv"
    validation_path = directory / "credit-validation.csv"
    train.to_csv(train_path, index=False)
    validation.to_csv(validation_path, index=False)
    return CreditData(train_path, validation_path, train, validation)


def csv_row(frame: pd.DataFrame, index: int, columns: list[str]) -> str:
    """One row as the gateway's CSV body: the feature columns in order, no header, no label."""
    return ",".join(_cell(frame.at[index, column]) for column in columns)


def _cell(value: object) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)
