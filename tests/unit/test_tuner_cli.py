"""`cairn tune create` flags become a valid tuning request; the leaderboard shows best first."""

from __future__ import annotations

import pytest
from cairn.contracts.tuner_events import HyperParameterTuningJobRequested
from cairn_cli.tune_cmd import leaderboard
from cairn_sdk.tuning import parse_range, tuning_request
from rich.console import Console


def test_range_flags_parse_like_the_issue_writes_them() -> None:
    assert parse_range("eta=0.01:0.3:log") == (
        "continuous",
        {"name": "eta", "min_value": 0.01, "max_value": 0.3, "scaling_type": "Logarithmic"},
    )
    assert parse_range("max_depth=3:10:int")[1]["max_value"] == 10
    assert parse_range("booster=gbtree,dart") == (
        "categorical",
        {"name": "booster", "values": ["gbtree", "dart"]},
    )
    with pytest.raises(ValueError, match="NAME=MIN:MAX"):
        parse_range("eta")


def test_the_cli_body_is_a_valid_request() -> None:
    body = tuning_request(
        "t1",
        "xgboost",
        {"train": "data/t.csv", "validation": "data/v.csv"},
        objective="validation:auc",
        ranges=["eta=0.01:0.3:log", "max_depth=3:10:int", "booster=gbtree,dart"],
        strategy="Bayesian",
        max_jobs=40,
        max_parallel=4,
        early_stopping="Auto",
        warm_start=["parent"],
        register_group="credit",
    )
    request = HyperParameterTuningJobRequested.model_validate(body)
    assert request.resource_limits.max_parallel_training_jobs == 4
    assert request.warm_start is not None and request.warm_start.parent_tuning_jobs == ["parent"]


def test_the_leaderboard_lists_the_best_trial_first() -> None:
    job = {
        "tuning_job_name": "t1",
        "status": "InProgress",
        "objective": {"type": "Minimize"},
        "trial_counts": {"Completed": 2},
        "max_number_of_training_jobs": 4,
        "trials": [
            {
                "number": 0,
                "parameters": {"eta": 0.1},
                "objective_value": 0.5,
                "status": "Completed",
            },
            {
                "number": 1,
                "parameters": {"eta": 0.2},
                "objective_value": 0.3,
                "status": "Completed",
            },
            {
                "number": 2,
                "parameters": {"eta": 0.3},
                "objective_value": None,
                "status": "Stopped",
                "early_stopped": True,
                "rounds_used": 30,
            },
        ],
    }
    console = Console(record=True, width=120)
    console.print(leaderboard(job))
    text = console.export_text()
    assert text.index("eta=0.2") < text.index("eta=0.1") < text.index("eta=0.3")
    assert "early stop" in text
