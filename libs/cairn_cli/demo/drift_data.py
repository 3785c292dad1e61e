"""The credit data after a shift: incomes drop and what drives defaults changes.

A recession-like change: incomes fall to under half, contract and self-employed applicants and
education loans become the risky ones, and late payments stop telling much. The columns keep
their names and types, so the endpoint still answers; only a model that learns from the new,
labelled traffic scores it well again.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cairn_cli.demo.data import LABEL, generate_credit_frame

INCOME_FACTOR = 0.45


def generate_shifted_frame(rows: int, seed: int = 11) -> pd.DataFrame:
    """`rows` applications from after the shift, labelled by the new relationship."""
    frame = generate_credit_frame(rows, seed)
    rng = np.random.default_rng(seed + 1)
    frame["income"] = np.round(frame["income"] * INCOME_FACTOR).astype(int)
    employment = frame["employment"].to_numpy()
    logit = (
        -1.7
        + 1.9 * np.isin(employment, ["self_employed", "contract"])
        - 1.1 * (employment == "salaried")
        + 1.6 * (frame["purpose"].to_numpy() == "education")
        + 5.0 * (frame["debt_to_income"].to_numpy() - 0.32)
        - 2.5 * (frame["credit_utilisation"].to_numpy() - 0.36)
        + 0.05 * frame["late_payments"].to_numpy()
    )
    frame[LABEL] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame
