"""The tuner against a simulated trainer: jobs run to their budget with the best trial reported,
early stopping and Hyperband save rounds, a restart duplicates nothing, failures are counted,
completion criteria end a job early, warm start chains parents, stop stops."""

from __future__ import annotations

from typing import Any

import pytest
from cairn.contracts.events import TrainingJobRequested
from cairn.contracts.tuner_events import (
    HyperParameterTuningJobCompleted,
    HyperParameterTuningJobFailed,
    HyperParameterTuningJobStarted,
    HyperParameterTuningJobStopped,
    TrainingJobStopRequested,
    TuningTrialCompleted,
)
from cairn.errors import Conflict, InvalidInput
from cairn.store import InMemoryObjectStore

from services.tuner.domain import best_trial
from services.tuner.handlers import TunerHandlers
from tests.unit.tuner_sim import Sim, tuning_request

LIMITS = {"max_number_of_training_jobs": 12, "max_parallel_training_jobs": 3}


async def run_job(sim: Sim, store: InMemoryObjectStore, **overrides: Any) -> TunerHandlers:
    handlers = sim.handlers(store)
    created = await handlers.create(tuning_request(resource_limits=LIMITS, **overrides))
    await handlers.on_requested(created.envelope)
    await sim.run(handlers)
    return handlers


@pytest.mark.parametrize("strategy", ["Random", "Bayesian"])
async def test_a_job_runs_its_budget_and_reports_the_best_trial(strategy: str) -> None:
    store, sim = InMemoryObjectStore(), Sim()
    handlers = await run_job(sim, store, strategy=strategy)
    job = await handlers.describe("tune-1")
    assert job.status == "Completed" and len(job.trials) == 12
    names = [r.job_name for r in sim.of(TrainingJobRequested)]
    assert names == [f"tune-1-{n}" for n in range(12)]  # deterministic names, each requested once
    [done] = sim.of(HyperParameterTuningJobCompleted)
    best = max(job.trials, key=lambda t: t.objective_value or 0)
    assert done.best_training_job is not None
    assert done.best_training_job.training_job_name == best.training_job_name
    assert done.best_training_job.artifact_uri == f"models/{best.training_job_name}/"
    assert (
        len(sim.of(TuningTrialCompleted)) == 12 and len(sim.of(HyperParameterTuningJobStarted)) == 1
    )
    assert all(r.tags["cairn:tuning-job"] == "tune-1" for r in sim.of(TrainingJobRequested))


async def test_never_more_trials_run_at_once_than_max_parallel() -> None:
    store, sim = InMemoryObjectStore(), Sim()
    handlers = sim.handlers(store)
    created = await handlers.create(tuning_request(resource_limits=LIMITS))
    await handlers.on_requested(created.envelope)
    peak = 0
    while await sim.step(handlers):
        peak = max(peak, len(sim.running))
    assert peak == 3


@pytest.mark.parametrize(
    "overrides",
    [
        {"early_stopping_type": "Auto"},
        {"strategy": "Hyperband", "hyperband": {"min_resource": 10, "max_resource": 100}},
    ],
)
async def test_early_stopping_stops_trials_and_saves_rounds(overrides: dict[str, Any]) -> None:
    baseline = Sim()
    await run_job(baseline, InMemoryObjectStore())
    store, sim = InMemoryObjectStore(), Sim()
    handlers = await run_job(sim, store, **overrides)
    job = await handlers.describe("tune-1")
    stopped = [t for t in job.trials if t.status == "Stopped"]
    assert stopped and all(t.early_stopped for t in stopped)
    # A trial may finish before its stop request lands; every stopped one was asked to stop.
    assert {t.training_job_name for t in stopped} <= {
        s.job_name for s in sim.of(TrainingJobStopRequested)
    }
    assert sim.rounds_trained < 0.9 * baseline.rounds_trained
    assert all((t.rounds_used or 0) < 100 for t in stopped)


async def test_a_restarted_tuner_resumes_without_duplicates() -> None:
    store, sim = InMemoryObjectStore(), Sim()
    first = sim.handlers(store)
    created = await first.create(tuning_request(resource_limits=LIMITS, strategy="Bayesian"))
    await first.on_requested(created.envelope)
    for _ in range(4):
        await sim.step(first)
    # A new process: nothing in memory, only the store; events keep arriving; the sweep runs.
    second = sim.handlers(store)
    await second.sweep()
    await sim.run(second)
    job = await second.describe("tune-1")
    assert job.status == "Completed" and len(job.trials) == 12
    assert sorted(sim.requested_names) == sorted(set(sim.requested_names))
    assert len(sim.of(HyperParameterTuningJobCompleted)) == 1


async def test_an_unpublished_trial_is_requested_after_a_crash() -> None:
    store, sim = InMemoryObjectStore(), Sim()
    handlers = sim.handlers(store)
    created = await handlers.create(tuning_request(resource_limits=LIMITS))
    doc = handlers.jobs.get("tune-1.json")
    handlers.jobs.replace(
        "tune-1.json", doc.doc.model_copy(update={"started_published": True}), doc.etag
    )

    async def dies(*_: Any, **__: Any) -> Any:
        raise RuntimeError("killed")

    handlers.engine.publish = dies
    with pytest.raises(RuntimeError):
        await handlers.on_requested(created.envelope)
    assert not sim.of(TrainingJobRequested)
    restarted = sim.handlers(store)
    await restarted.sweep()
    await sim.run(restarted)
    assert (await restarted.describe("tune-1")).status == "Completed"
    assert sorted(sim.requested_names) == [f"tune-1-{n}" for n in sorted(range(12), key=str)]


async def test_failed_trials_count_and_end_the_job_past_the_limit() -> None:
    store, sim = InMemoryObjectStore(), Sim(fail_when=lambda params: True)
    limits = LIMITS | {"max_failed_training_jobs": 2}
    handlers = sim.handlers(store)
    created = await handlers.create(tuning_request(resource_limits=limits))
    await handlers.on_requested(created.envelope)
    await sim.run(handlers)
    job = await handlers.describe("tune-1")
    assert job.status == "Failed" and "failed" in job.end_reason
    assert job.count("Failed") == 3 and len(job.trials) < 12  # never retried forever
    assert [e.reason for e in sim.of(HyperParameterTuningJobFailed)] == [job.end_reason]


async def test_a_target_objective_ends_the_job_early() -> None:
    store, sim = InMemoryObjectStore(), Sim()
    criteria = {"target_objective_metric_value": 0.5}
    handlers = await run_job(sim, store, completion_criteria=criteria)
    job = await handlers.describe("tune-1")
    assert job.status == "Completed" and "target" in job.end_reason
    assert len(job.trials) < 12


async def test_warm_start_chains_parents_and_past_jobs() -> None:
    store, sim = InMemoryObjectStore(), Sim()
    await run_job(sim, store)
    handlers = sim.handlers(store)
    child = tuning_request(
        tuning_job_name="tune-2",
        resource_limits=LIMITS,
        warm_start={"parent_tuning_jobs": ["tune-1"]},
    )
    await handlers.on_requested((await handlers.create(child)).envelope)
    await sim.run(handlers)
    grandchild = tuning_request(
        tuning_job_name="tune-3",
        resource_limits=LIMITS,
        warm_start={"type": "TransferLearning", "parent_tuning_jobs": ["tune-2"]},
    )
    created = await handlers.create(grandchild)
    # tune-3 learns from tune-2's trials and, through it, from tune-1's.
    assert len(created.job.warm_start_trials) == 24
    await handlers.on_requested(created.envelope)
    await sim.run(handlers)
    done = sim.of(HyperParameterTuningJobCompleted)[-1]
    overall = done.overall_best_training_job
    assert overall is not None and done.best_training_job is not None
    assert overall.objective_value >= done.best_training_job.objective_value
    with pytest.raises(InvalidInput, match=r"warm_start.parent_tuning_jobs\[0\]"):
        await handlers.create(
            tuning_request(tuning_job_name="tune-4", warm_start={"parent_tuning_jobs": ["nope"]})
        )


async def test_stopping_a_job_stops_its_running_trials() -> None:
    store, sim = InMemoryObjectStore(), Sim()
    handlers = sim.handlers(store)
    created = await handlers.create(tuning_request(resource_limits=LIMITS))
    await handlers.on_requested(created.envelope)
    await sim.step(handlers)
    stopping = await handlers.stop("tune-1", "enough")
    assert stopping.status == "Stopping"
    assert len(sim.of(TrainingJobStopRequested)) == 3
    await sim.run(handlers)
    job = await handlers.describe("tune-1")
    assert job.status == "Stopped" and len(job.trials) == 3
    assert len(sim.of(HyperParameterTuningJobStopped)) == 1
    with pytest.raises(Conflict):
        await handlers.stop("tune-1", "again")


async def test_a_bad_request_from_the_bus_fails_and_is_dead_lettered() -> None:
    store, sim = InMemoryObjectStore(), Sim()
    handlers = sim.handlers(store)
    from tests.unit.tuner_sim import envelope

    bad = tuning_request(objective={"metric_name": "validation:nope"})
    await handlers.on_requested(envelope(bad))
    [failed] = sim.of(HyperParameterTuningJobFailed)
    assert "objective.metric_name" in failed.reason and sim.dead_letters
    assert not store.exists("tuner/jobs/tune-1.json")
    assert best_trial is not None
