"""Tuning requests: bad input is a 400 naming the field; strategies map to Optuna; the same seed
gives the same trials; a rebuilt study carries the stored history."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from cairn.errors import InvalidInput

from services.tuner.domain import (
    TuningJob,
    max_trials,
    parse_trial_name,
    trial_hyperparameters,
    validate_request,
)
from services.tuner.study import ask, distributions, pruner_for, rebuild, sampler_for, to_internal
from tests.unit.tuner_sim import tuning_request


def ranges(**kinds: Any) -> dict[str, Any]:
    return {"parameter_ranges": kinds}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (ranges(integer=[{"name": "d", "min_value": 9, "max_value": 3}]), "integer[0]"),
        (ranges(continuous=[{"name": "e", "min_value": 0.2, "max_value": 0.2}]), "continuous[0]"),
        (ranges(categorical=[{"name": "b", "values": []}]), "categorical[0].values"),
        (
            ranges(
                continuous=[
                    {"name": "e", "min_value": 0, "max_value": 1, "scaling_type": "Logarithmic"}
                ]
            ),
            "continuous[0].min_value",
        ),
        (
            {"strategy": "Grid"}
            | ranges(continuous=[{"name": "e", "min_value": 0.1, "max_value": 1}]),
            "parameter_ranges.continuous",
        ),
        ({"objective": {"metric_name": "validation:f1"}}, "objective.metric_name"),
        ({"objective": {"metric_name": "test:auc"}}, "objective.metric_name"),
        (
            ranges(integer=[{"name": f"p{i}", "min_value": 0, "max_value": 9} for i in range(31)]),
            "parameter_ranges",
        ),
        (
            {
                "resource_limits": {
                    "max_number_of_training_jobs": 4,
                    "max_parallel_training_jobs": 5,
                }
            },
            "resource_limits.max_parallel_training_jobs",
        ),
        ({"strategy": "Hyperband"}, "hyperband"),
        (
            ranges(integer=[{"name": "num_round", "min_value": 5, "max_value": 50}]),
            "static_hyperparameters",
        ),
    ],
)
def test_bad_input_is_refused_naming_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        validate_request(tuning_request(**overrides))
    assert field in refused.value.message
    assert refused.value.http_status == 400


def test_a_validation_objective_needs_a_validation_channel() -> None:
    definition = tuning_request().training_job_definition.model_dump()
    definition["input_channels"] = definition["input_channels"][:1]
    with pytest.raises(InvalidInput, match="validation' input channel"):
        validate_request(tuning_request(training_job_definition=definition))


def test_a_script_objective_must_be_one_of_its_metric_definitions() -> None:
    definition = tuning_request().training_job_definition.model_dump()
    definition |= {"algorithm": "script", "entry_point": "code/train.py"}
    with pytest.raises(InvalidInput, match="metric_definitions"):
        validate_request(tuning_request(training_job_definition=definition))
    definition["metric_definitions"] = [{"name": "validation:auc", "regex": "auc=([0-9.]+)"}]
    validate_request(tuning_request(training_job_definition=definition))


def test_grid_runs_one_trial_per_combination() -> None:
    grid = tuning_request(
        strategy="Grid",
        parameter_ranges={
            "categorical": [{"name": "booster", "values": ["gbtree", "dart"]}],
            "integer": [{"name": "max_depth", "min_value": 3, "max_value": 5}],
        },
        resource_limits={"max_number_of_training_jobs": 100, "max_parallel_training_jobs": 2},
    )
    assert max_trials(grid) == 6
    job = TuningJob(tuning_job_name="g", request=grid, seed=1, max_trials=6)
    seen = set()
    for _ in range(6):
        parameters, attrs = ask(job)
        seen.add((parameters["booster"], parameters["max_depth"]))
        job = _with_running_trial(job, parameters, attrs)
    assert len(seen) == 6


def _with_running_trial(job: TuningJob, parameters: dict[str, Any], attrs: dict[str, Any]) -> Any:
    from services.tuner.domain import Trial

    number = len(job.trials)
    trial = Trial(
        number=number,
        training_job_name=f"{job.tuning_job_name}-{number}",
        parameters=parameters,
        system_attrs=attrs,
    )
    return job.model_copy(update={"trials": [*job.trials, trial]})


def test_strategies_map_to_optunas_samplers_and_pruners() -> None:
    def job(**overrides: Any) -> TuningJob:
        return TuningJob(
            tuning_job_name="t", request=tuning_request(**overrides), seed=3, max_trials=8
        )

    assert isinstance(sampler_for(job(strategy="Bayesian"), 0), optuna.samplers.TPESampler)
    assert isinstance(sampler_for(job(strategy="Random"), 0), optuna.samplers.RandomSampler)
    hyperband = job(strategy="Hyperband", hyperband={"min_resource": 10, "max_resource": 90})
    assert isinstance(pruner_for(hyperband), optuna.pruners.HyperbandPruner)
    assert isinstance(pruner_for(job(early_stopping_type="Auto")), optuna.pruners.MedianPruner)
    assert isinstance(pruner_for(job()), optuna.pruners.NopPruner)
    # Hyperband trains every trial up to max_resource rounds, reported often enough to prune.
    values = trial_hyperparameters(hyperband.request, {"eta": 0.1})
    assert values["num_round"] == 90 and values["eval_metric"] == "auc"


def test_scaling_types_map_to_distributions() -> None:
    request = tuning_request(
        parameter_ranges={
            "continuous": [
                {"name": "a", "min_value": 0.001, "max_value": 1, "scaling_type": "Logarithmic"},
                {
                    "name": "b",
                    "min_value": 0.9,
                    "max_value": 0.999,
                    "scaling_type": "ReverseLogarithmic",
                },
            ],
            "integer": [{"name": "c", "min_value": 1, "max_value": 9}],
        }
    )
    space = distributions(request)
    assert space["a"].log and not space["c"].log  # type: ignore[attr-defined]
    assert to_internal(request, {"b": 0.99}, space) == {"b": pytest.approx(0.01)}
    assert to_internal(request, {"c": 42}, space) is None  # outside the range: not a seed


def test_the_same_seed_gives_the_same_trials_and_another_seed_others() -> None:
    def sequence(seed: int) -> list[dict[str, Any]]:
        job = TuningJob(tuning_job_name="s", request=tuning_request(), seed=seed, max_trials=8)
        out = []
        for _ in range(4):
            parameters, attrs = ask(job)
            out.append(parameters)
            job = _with_running_trial(job, parameters, attrs)
        return out

    assert sequence(11) == sequence(11)
    assert sequence(11) != sequence(12)
    assert len({p["eta"] for p in sequence(11)}) == 4  # not the same draw every time


def test_a_rebuilt_study_holds_seeds_and_trials_in_order() -> None:
    from services.tuner.domain import SeedTrial, Trial

    job = TuningJob(
        tuning_job_name="r",
        request=tuning_request(),
        seed=1,
        max_trials=8,
        warm_start_trials=[
            SeedTrial(
                training_job_name="old-1",
                parameters={"eta": 0.1, "max_depth": 4},
                objective_value=0.8,
            )
        ],
        trials=[
            Trial(
                number=0,
                training_job_name="r-0",
                parameters={"eta": 0.2, "max_depth": 5},
                status="Completed",
                objective_value=0.85,
            ),
            Trial(
                number=1,
                training_job_name="r-1",
                parameters={"eta": 0.05, "max_depth": 3},
                status="Stopped",
                intermediate={10: 0.5},
            ),
            Trial(number=2, training_job_name="r-2", parameters={"eta": 0.3, "max_depth": 8}),
        ],
    )
    study = rebuild(job, 3).study
    states = [t.state.name for t in study.get_trials()]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED", "RUNNING"]
    assert study.best_value == 0.85


def test_trial_names_parse_back() -> None:
    assert parse_trial_name("credit-tune-12") == ("credit-tune", 12)
    assert parse_trial_name("no_trial_here") is None
