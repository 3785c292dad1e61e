"""Tuner benchmark: search quality, compute saved by early stopping, platform overhead.

    .venv/bin/python -m bench.tuner.run [--trials 40] [--seeds 3] [--quick] [--no-platform]

Datasets scikit-learn ships offline: breast cancer (binary, validation:logloss), digits
(10 classes, validation:mlogloss), diabetes (regression, validation:rmse). XGBoost, 300 rounds.

1. Bayesian (TPE) vs Random: best objective after 10, 20, 40 trials, mean over seeds.
2. Hyperband and early stopping Auto (median rule) vs Random without stopping: boosting rounds
   consumed until the best objective reaches Random's final best.
   Parts 1 and 2 drive the tuner's own logic (`services.tuner.study` / `trials`: the study rebuilt
   from the stored trials, the same samplers and pruners) with trials trained in this process,
   one at a time, the pruner asked at every progress report (every 10 rounds).
3. Overhead: wall time per trial through the platform (tuner + trainer services on a real Tansu
   broker, in-memory store) vs the same Optuna study run in one process (the anchor), at max
   parallel 1 and 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import xgboost
from cairn.contracts.events import TrainingJobCompleted, TrainingJobProgressed
from cairn.contracts.tuner_events import HyperParameterTuningJobRequested, TrainingJobStopped
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.model_selection import train_test_split

from services.tuner.domain import Trial, TuningJob, best_trial, max_trials, trial_job_name
from services.tuner.study import ask
from services.tuner.trials import record_outcome, record_progress

ROUNDS = 300
EVERY = 10


@dataclass
class Dataset:
    name: str
    objective: str  # xgboost objective
    metric: str  # eval metric name
    x_train: Any
    y_train: Any
    x_val: Any
    y_val: Any
    num_class: int | None = None


def datasets() -> list[Dataset]:
    found = []
    for name, loader, objective, metric in (
        ("breast_cancer", load_breast_cancer, "binary:logistic", "logloss"),
        ("digits", load_digits, "multi:softprob", "mlogloss"),
        ("diabetes", load_diabetes, "reg:squarederror", "rmse"),
    ):
        x, y = loader(return_X_y=True)
        xt, xv, yt, yv = train_test_split(x, y, test_size=0.3, random_state=0)
        classes = 10 if name == "digits" else None
        found.append(Dataset(name, objective, metric, xt, yt, xv, yv, classes))
    return found


def request_for(data: Dataset, strategy: str, seed: int, trials: int, **extra: Any) -> Any:
    return HyperParameterTuningJobRequested.model_validate(
        {
            "tuning_job_name": "bench",
            "strategy": strategy,
            "objective": {"metric_name": f"validation:{data.metric}", "type": "Minimize"},
            "parameter_ranges": {
                "continuous": [
                    {
                        "name": "eta",
                        "min_value": 0.005,
                        "max_value": 0.5,
                        "scaling_type": "Logarithmic",
                    },
                    {"name": "subsample", "min_value": 0.5, "max_value": 1.0},
                    {
                        "name": "min_child_weight",
                        "min_value": 0.5,
                        "max_value": 20,
                        "scaling_type": "Logarithmic",
                    },
                    {
                        "name": "lambda",
                        "min_value": 0.01,
                        "max_value": 10,
                        "scaling_type": "Logarithmic",
                    },
                ],
                "integer": [{"name": "max_depth", "min_value": 1, "max_value": 10}],
            },
            "training_job_definition": {
                "algorithm": "xgboost",
                "input_channels": [
                    {"name": "train", "uri": "data/t.csv"},
                    {"name": "validation", "uri": "data/v.csv"},
                ],
                "static_hyperparameters": {"num_round": ROUNDS} if strategy != "Hyperband" else {},
            },
            "resource_limits": {"max_number_of_training_jobs": trials},
            "random_seed": seed,
            **extra,
        }
    )


def train_trial(data: Dataset, params: dict[str, Any], on_round: Any) -> tuple[float, int]:
    """Train with the pruner asked every EVERY rounds; (final objective, rounds used)."""
    xgb_params = {
        "objective": data.objective,
        "eval_metric": data.metric,
        "tree_method": "hist",
        "nthread": 1,
        "max_depth": params["max_depth"],
        "eta": params["eta"],
        "subsample": params["subsample"],
        "min_child_weight": params["min_child_weight"],
        "lambda": params["lambda"],
        "seed": 0,
    }
    if data.num_class:
        xgb_params["num_class"] = data.num_class
    dtrain = xgboost.DMatrix(data.x_train, label=data.y_train)
    dval = xgboost.DMatrix(data.x_val, label=data.y_val)
    state = {"rounds": 0, "value": math.inf}

    class Callback(xgboost.callback.TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            state["rounds"] = epoch + 1
            state["value"] = float(evals_log["validation"][data.metric][-1])
            if (epoch + 1) % EVERY == 0:
                return bool(on_round(epoch + 1, state["value"]))
            return False

    xgboost.train(
        xgb_params,
        dtrain,
        num_boost_round=ROUNDS,
        evals=[(dval, "validation")],
        callbacks=[Callback()],
        verbose_eval=False,
    )
    return state["value"], state["rounds"]


def run_search(data: Dataset, request: Any) -> list[tuple[float | None, int]]:
    """(objective if completed, rounds used) per trial, through the tuner's study and pruners."""
    job = TuningJob(
        tuning_job_name="bench",
        request=request,
        seed=request.random_seed,
        max_trials=max_trials(request),
    )
    results: list[tuple[float | None, int]] = []
    metric = request.objective.metric_name
    for number in range(job.max_trials):
        parameters, attrs = ask(job)
        name = trial_job_name("bench", number)
        trial = Trial(
            number=number,
            training_job_name=name,
            parameters=parameters,
            system_attrs=attrs,
            requested=True,
        )
        job = job.model_copy(update={"trials": [*job.trials, trial]})

        def on_round(step: int, value: float, number: int = number, name: str = name) -> bool:
            nonlocal job
            job = record_progress(
                job,
                number,
                name,
                TrainingJobProgressed(
                    job_name=name, iteration=step, total_iterations=ROUNDS, metrics={metric: value}
                ),
            )
            return job.trials[number].status == "Stopping"

        value, rounds = train_trial(data, parameters, on_round)
        if job.trials[number].status == "Stopping":
            job = record_outcome(
                job, number, name, TrainingJobStopped(job_name=name, iteration=rounds)
            )
            results.append((None, rounds))
        else:
            job = record_outcome(
                job,
                number,
                name,
                TrainingJobCompleted(
                    job_name=name,
                    algorithm="xgboost",
                    artifact_uri="x",
                    metrics={metric: value},
                    device="cpu",
                    training_time_s=0,
                    total_time_s=0,
                ),
            )
            results.append((value, rounds))
    assert best_trial(job) is not None
    return results


def best_after(results: list[tuple[float | None, int]], n: int) -> float:
    return min(v for v, _ in results[:n] if v is not None)


def rounds_to_reach(results: list[tuple[float | None, int]], target: float) -> int | None:
    used = 0
    for value, rounds in results:
        used += rounds
        if value is not None and value <= target + 1e-12:
            return used
    return None


def part_one_two(trials: int, seeds: int) -> dict[str, Any]:
    report: dict[str, Any] = {}
    checkpoints = [c for c in (10, 20, 40) if c <= trials]
    for data in datasets():
        row: dict[str, Any] = {"best_after": {}, "rounds": {}}
        runs: dict[str, list[list[tuple[float | None, int]]]] = {}
        for label, strategy, extra in (
            ("random", "Random", {}),
            ("bayesian", "Bayesian", {}),
            ("hyperband", "Hyperband", {"hyperband": {"min_resource": 10, "max_resource": ROUNDS}}),
            ("random+auto", "Random", {"early_stopping_type": "Auto"}),
        ):
            started = time.monotonic()
            runs[label] = [
                run_search(data, request_for(data, strategy, 100 + s, trials, **extra))
                for s in range(seeds)
            ]
            print(f"  {data.name} {label}: {time.monotonic() - started:.1f}s", flush=True)
        for label in ("random", "bayesian"):
            row["best_after"][label] = {
                c: statistics.mean(best_after(r, c) for r in runs[label]) for c in checkpoints
            }
        for label in ("hyperband", "random+auto"):
            ratios, reached = [], 0
            for base, other in zip(runs["random"], runs[label], strict=True):
                target = best_after(base, len(base))
                total = sum(r for _, r in base)
                needed = rounds_to_reach(other, target)
                reached += needed is not None
                ratios.append((needed if needed is not None else sum(r for _, r in other)) / total)
            row["rounds"][label] = {
                "mean_fraction_of_random_rounds": statistics.mean(ratios),
                "reached_random_best": f"{reached}/{seeds}",
                "total_rounds_fraction": statistics.mean(
                    sum(r for _, r in o) / sum(r for _, r in b)
                    for b, o in zip(runs["random"], runs[label], strict=True)
                ),
                "best_vs_random": statistics.mean(
                    best_after(o, len(o)) / best_after(b, len(b))
                    for b, o in zip(runs["random"], runs[label], strict=True)
                ),
            }
        report[data.name] = row
        print(json.dumps({data.name: row}, indent=1), flush=True)
    return report


def anchor_per_trial(data: Dataset, trials: int, parallel: int) -> float:
    """The same search as one Optuna study in this process (no platform): seconds per trial."""

    def objective(trial: optuna.Trial) -> float:
        params = {
            "eta": trial.suggest_float("eta", 0.005, 0.5, log=True),
            "subsample": trial.suggest_float("subsample", 0.5, 1.0),
            "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 20, log=True),
            "lambda": trial.suggest_float("lambda", 0.01, 10, log=True),
            "max_depth": trial.suggest_int("max_depth", 1, 10),
        }
        return train_trial(data, params, lambda step, value: False)[0]

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    started = time.monotonic()
    study.optimize(objective, n_trials=trials, n_jobs=parallel)
    return (time.monotonic() - started) / trials


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--no-platform", action="store_true")
    parser.add_argument("--platform-trials", type=int, default=8)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    np.seterr(all="ignore")
    results: dict[str, Any] = {"quality_and_rounds": part_one_two(args.trials, args.seeds)}
    if not args.no_platform:
        from bench.tuner.on_platform import platform_per_trial

        data = datasets()[0]
        results["overhead_s_per_trial"] = {
            f"parallel_{p}": {
                "anchor_in_process": anchor_per_trial(data, args.platform_trials, p),
                "platform": asyncio.run(platform_per_trial(args.platform_trials, p)),
            }
            for p in (1, 2)
        }
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
