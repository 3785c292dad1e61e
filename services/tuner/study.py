"""The search, by Optuna: ranges as distributions, strategies as samplers and pruners, and the
study rebuilt from the stored trials each time it is asked something.

The tuner keeps no study between events: `rebuild` adds the warm-start results, then every trial
in number order (with the samplers' and pruners' bookkeeping stored on it), to an in-memory study.
Each ask gets a sampler seeded from the job's seed and the trial number, so the same seed gives
the same sequence however often the tuner restarts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import optuna
from cairn.contracts.events import HyperparameterValue
from cairn.contracts.tuner_events import HyperParameterTuningJobRequested
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState, create_trial

from services.tuner.domain import SeedTrial, Trial, TuningJob, grid_points

optuna.logging.set_verbosity(optuna.logging.WARNING)

Distributions = dict[str, BaseDistribution]
_SEED_STRIDE = 7919


def distributions(request: HyperParameterTuningJobRequested) -> Distributions:
    """One Optuna distribution per range; ReverseLogarithmic samples `1 - x` log-uniformly."""
    ranges = request.parameter_ranges
    found: Distributions = {}
    for integer in ranges.integer:
        log = integer.scaling_type == "Logarithmic"
        found[integer.name] = IntDistribution(integer.min_value, integer.max_value, log=log)
    for continuous in ranges.continuous:
        low, high = continuous.min_value, continuous.max_value
        if continuous.scaling_type == "ReverseLogarithmic":
            found[continuous.name] = FloatDistribution(1 - high, 1 - low, log=True)
        else:
            log = continuous.scaling_type == "Logarithmic"
            found[continuous.name] = FloatDistribution(low, high, log=log)
    for categorical in ranges.categorical:
        found[categorical.name] = CategoricalDistribution(list(categorical.values))
    return found


def _reversed(request: HyperParameterTuningJobRequested) -> set[str]:
    return {
        c.name
        for c in request.parameter_ranges.continuous
        if c.scaling_type == "ReverseLogarithmic"
    }


def to_parameters(
    request: HyperParameterTuningJobRequested, internal: dict[str, Any]
) -> dict[str, HyperparameterValue]:
    """Optuna's values as the hyperparameters a trial gets."""
    flipped = _reversed(request)
    return {name: (1 - value if name in flipped else value) for name, value in internal.items()}


def to_internal(
    request: HyperParameterTuningJobRequested,
    parameters: dict[str, HyperparameterValue],
    space: Distributions,
) -> dict[str, Any] | None:
    """A trial's hyperparameters as Optuna values in `space`; None when one does not fit."""
    flipped = _reversed(request)
    internal: dict[str, Any] = {}
    for name, distribution in space.items():
        if name not in parameters:
            continue
        value = parameters[name]
        if name in flipped and isinstance(value, int | float):
            value = 1 - value
        if not _fits(distribution, value):
            return None
        internal[name] = value
    return internal or None


def _fits(distribution: BaseDistribution, value: Any) -> bool:
    if isinstance(distribution, CategoricalDistribution):
        return value in distribution.choices
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(distribution, IntDistribution) and value != int(value):
        return False
    low, high = distribution.low, distribution.high  # type: ignore[attr-defined]
    return bool(low <= value <= high) and math.isfinite(value)


def sampler_for(job: TuningJob, trial_number: int) -> optuna.samplers.BaseSampler:
    """The strategy's sampler, seeded for this trial."""
    request = job.request
    seed = (job.seed + _SEED_STRIDE * (trial_number + 1)) % (2**31 - 1)
    if request.strategy == "Grid":  # one shuffle of the grid for the whole job: trial n -> point n
        return optuna.samplers.GridSampler(dict(grid_points(request)), seed=job.seed)
    if request.strategy == "Bayesian":
        startup = min(10, max(3, request.resource_limits.max_number_of_training_jobs // 8))
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=startup, constant_liar=True, multivariate=True
        )
    return optuna.samplers.RandomSampler(seed=seed)


def pruner_for(job: TuningJob) -> optuna.pruners.BasePruner:
    """Hyperband's pruner, the median rule for early stopping Auto, else none."""
    request = job.request
    if request.strategy == "Hyperband" and request.hyperband is not None:
        band = request.hyperband
        return optuna.pruners.HyperbandPruner(
            min_resource=band.min_resource,
            max_resource=band.max_resource,
            reduction_factor=band.reduction_factor,
        )
    if request.early_stopping_type == "Auto":
        startup = min(5, max(2, request.resource_limits.max_number_of_training_jobs // 10))
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0)
    return optuna.pruners.NopPruner()


def uses_pruner(job: TuningJob) -> bool:
    return job.request.strategy == "Hyperband" or job.request.early_stopping_type == "Auto"


@dataclass
class Rebuilt:
    """A study holding the job's history, and the Optuna trial id of each of our trials."""

    study: optuna.Study
    space: Distributions
    trial_ids: dict[int, int]


def rebuild(job: TuningJob, trial_number: int) -> Rebuilt:
    """The study as the stored trials describe it (seeds first, then trials by number)."""
    request = job.request
    direction: Literal["maximize", "minimize"] = (
        "maximize" if request.objective.type == "Maximize" else "minimize"
    )
    study = optuna.create_study(
        study_name=job.tuning_job_name,
        direction=direction,
        sampler=sampler_for(job, trial_number),
        pruner=pruner_for(job),
    )
    space = distributions(request)
    for seed in job.warm_start_trials:
        frozen = _seed_trial(request, seed, space)
        if frozen is not None:
            study.add_trial(frozen)
    trial_ids: dict[int, int] = {}
    for trial in job.trials:
        study.add_trial(_frozen(request, trial, space))
        trial_ids[trial.number] = study.get_trials(deepcopy=False)[-1]._trial_id
    return Rebuilt(study, space, trial_ids)


def _seed_trial(
    request: HyperParameterTuningJobRequested, seed: SeedTrial, space: Distributions
) -> FrozenTrial | None:
    internal = to_internal(request, seed.parameters, space)
    if internal is None:
        return None
    return create_trial(
        params=internal,
        distributions={name: space[name] for name in internal},
        value=seed.objective_value,
        user_attrs={"training_job_name": seed.training_job_name},
    )


def _frozen(
    request: HyperParameterTuningJobRequested, trial: Trial, space: Distributions
) -> FrozenTrial:
    internal = to_internal(request, trial.parameters, space) or {}
    state = {
        "Completed": TrialState.COMPLETE,
        "Failed": TrialState.FAIL,
        "Stopped": TrialState.PRUNED,
    }.get(trial.status, TrialState.RUNNING)
    value = trial.objective_value
    if state == TrialState.COMPLETE and value is None:
        state = TrialState.FAIL
    return create_trial(
        state=state,
        params=internal,
        distributions={name: space[name] for name in internal},
        value=value if state == TrialState.COMPLETE else None,
        intermediate_values=dict(trial.intermediate),
        system_attrs=dict(trial.system_attrs),
        user_attrs={"training_job_name": trial.training_job_name},
    )


def ask(job: TuningJob) -> tuple[dict[str, HyperparameterValue], dict[str, Any]]:
    """The next trial's hyperparameters and the sampler's bookkeeping to store with it."""
    number = len(job.trials)
    rebuilt = rebuild(job, number)
    trial = rebuilt.study.ask(fixed_distributions=rebuilt.space)
    frozen = rebuilt.study._storage.get_trial(trial._trial_id)
    return to_parameters(job.request, dict(frozen.params)), dict(frozen.system_attrs)


def should_prune(job: TuningJob, trial_number: int) -> tuple[bool, dict[str, Any]]:
    """The pruner's verdict on a running trial, with its bookkeeping (Hyperband's rungs)."""
    rebuilt = rebuild(job, trial_number)
    trial_id = rebuilt.trial_ids[trial_number]
    frozen = rebuilt.study._storage.get_trial(trial_id)
    if frozen.state != TrialState.RUNNING or not frozen.intermediate_values:
        return False, dict(frozen.system_attrs)
    verdict = bool(rebuilt.study.pruner.prune(rebuilt.study, frozen))
    return verdict, dict(rebuilt.study._storage.get_trial(trial_id).system_attrs)
