"""The experiments service's pure parts: the run rules (order-tolerant, idempotent) and the
`--where` / `--sort` parser (no eval; a bad query names the spot)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cairn.contracts.envelope import Envelope
from cairn.contracts.events import TrainingJobRequested
from cairn.contracts.pipeline_events import (
    PipelineExecutionStarted,
    PipelineExecutionSucceeded,
    PipelineStepStarted,
    PipelineStepSucceeded,
)
from cairn.contracts.tuner_events import HyperParameterTuningJobRequested, TuningTrialCompleted
from cairn.errors import InvalidInput
from cairn.store import open_store
from pydantic import BaseModel

from services.experiments.domain import (
    Run,
    blank,
    moved,
    with_experiment,
    with_lineage,
    with_points,
)
from services.experiments.handlers import ExperimentsHandlers
from services.experiments.pipeline_runs import PipelineRuns
from services.experiments.query import parse_where, sort_runs


def run(name: str, metrics: dict[str, float], **parameters: object) -> Run:
    return blank("training", name).model_copy(
        update={"metrics": metrics, "parameters": dict(parameters), "status": "Completed"}
    )


RUNS = [
    run("a", {"validation:auc": 0.91, "train:logloss": 0.2}, max_depth=3, booster="gbtree"),
    run("b", {"validation:auc": 0.75}, max_depth=6, booster="dart"),
    run("c", {}, max_depth=4),
]


@pytest.mark.parametrize(
    ("where", "names"),
    [
        ("auc > 0.8", ["a"]),
        ("metrics.validation:auc >= 0.75", ["a", "b"]),
        ("max_depth > 3 and not booster == 'dart'", ["c"]),
        ('params.booster == "dart" or auc > 0.9', ["a", "b"]),
        ("(auc < 0.8 or logloss < 1) and kind == training", ["a", "b"]),
        ("status != Completed", []),
        ("auc > 'x'", []),
        ("", ["a", "b", "c"]),
    ],
)
def test_where_selects_runs(where: str, names: list[str]) -> None:
    predicate = parse_where(where)
    assert [r.name for r in RUNS if predicate(r)] == names


@pytest.mark.parametrize(
    ("where", "spot"),
    [
        ("auc >> 1", "character 5"),
        ("auc > ", "the end"),
        ("auc 0.8", "comparison"),
        ("(auc > 1", "`)`"),
        ("auc > 1 garbage", "`and`"),
        ("__import__('os') > 1", "character"),
    ],
)
def test_a_bad_where_names_the_spot(where: str, spot: str) -> None:
    with pytest.raises(InvalidInput, match="where") as raised:
        parse_where(where)
    assert spot in raised.value.message


def test_sort_orders_by_a_metric_with_runs_lacking_it_last() -> None:
    assert [r.name for r in sort_runs(RUNS, "auc")] == ["b", "a", "c"]
    assert [r.name for r in sort_runs(RUNS, "-auc")] == ["a", "b", "c"]
    assert [r.name for r in sort_runs(RUNS, "max_depth desc")] == ["b", "c", "a"]
    with pytest.raises(InvalidInput, match="sort"):
        sort_runs(RUNS, "auc sideways")


def test_events_in_any_order_and_twice_give_the_same_run() -> None:
    start = blank("training", "j")
    done = moved(with_points(start, 2, {"loss": 0.5}), "Completed")
    late = moved(with_points(with_points(done, 4, {"loss": 0.4}), 2, {"loss": 0.5}), "InProgress")
    assert late.status == "Completed", "a late progress event does not move a run back"
    assert [(p.step, p.value) for p in late.history["loss"]] == [(2, 0.5), (4, 0.4)]
    assert moved(late, "Failed").status == "Completed", "one outcome per run"
    named = with_experiment(start, "credit")
    assert with_experiment(named, None, inherited="pipeline-x").experiment == "credit"
    assert with_experiment(start, None, inherited="pipeline-x").experiment == "pipeline-x"
    linked = with_lineage(with_lineage(start, inputs=["data/a"]), inputs=["data/a", "data/b"])
    assert linked.lineage.inputs == ["data/a", "data/b"]


def envelope(data: BaseModel, source: str = "test") -> Envelope[Any]:
    return Envelope[Any](type=type(data).__name__, source=source, correlation_id="c", data=data)


async def test_a_pipeline_execution_is_the_parent_of_its_steps_runs(tmp_path: Path) -> None:
    handlers = ExperimentsHandlers(open_store(f"file://{tmp_path}"))
    pipelines = PipelineRuns(handlers)
    common = {"execution_id": "e-1", "pipeline_name": "credit-flow"}
    await pipelines.on_started(
        envelope(
            PipelineExecutionStarted(
                **common, pipeline_version=2, parameters={"min_auc": 0.8}, started_by="me"
            )
        )
    )
    step = {"step_name": "train", "step_type": "Training"}
    await pipelines.on_step_started(
        envelope(PipelineStepStarted(**common, **step, attempt=1, request_id="e-1-train"))
    )
    metrics = {"metrics": {"auc": 0.9}, "model_artifact": "models/x/"}
    await pipelines.on_step_succeeded(
        envelope(PipelineStepSucceeded(**common, **step, properties=metrics))
    )
    await pipelines.on_succeeded(envelope(PipelineExecutionSucceeded(**common)))
    execution = await handlers.get("pipeline.e-1")
    assert execution.status == "Completed" and execution.experiment == "credit-flow"
    assert execution.parameters == {"pipeline_version": 2, "min_auc": 0.8}
    assert execution.metrics == {"train.auc": 0.9}
    assert execution.lineage.children == ["training.e-1-train"]
    child = await handlers.get("e-1-train")
    assert child.lineage.parent == "pipeline.e-1" and child.experiment == "credit-flow"
    [found] = await handlers.query(None, "train.auc > 0.5", None, 10)
    assert found.run_id == "pipeline.e-1"


async def test_a_tuning_job_is_a_run_whose_trials_are_its_children(tmp_path: Path) -> None:
    handlers = ExperimentsHandlers(open_store(f"file://{tmp_path}"))
    channels = [{"name": "train", "uri": "data/credit/train.csv"}]
    request = HyperParameterTuningJobRequested.model_validate(
        {
            "tuning_job_name": "tune-1",
            "objective": {"metric_name": "validation:auc"},
            "parameter_ranges": {
                "integer": [{"name": "max_depth", "min_value": 2, "max_value": 8}]
            },
            "training_job_definition": {"algorithm": "xgboost", "input_channels": channels},
            "experiment": "credit",
        }
    )
    await handlers.on_tuning_requested(envelope(request))
    trial = TrainingJobRequested.model_validate(
        {
            "job_name": "tune-1-3",
            "algorithm": "xgboost",
            "hyperparameters": {"max_depth": 5},
            "input_channels": channels,
        }
    )
    await handlers.on_training_requested(envelope(trial, source="tuner"))
    completed = TuningTrialCompleted(
        tuning_job_name="tune-1",
        trial_number=3,
        training_job_name="tune-1-3",
        status="Completed",
        parameters={"max_depth": 5},
        objective_value=0.87,
    )
    await handlers.on_trial_completed(envelope(completed))
    await handlers.on_trial_completed(envelope(completed))  # redelivered: nothing doubles
    tuning = await handlers.get("tuning.tune-1")
    assert tuning.experiment == "credit" and tuning.parameters["range.max_depth"]["kind"] == (
        "integer"
    )
    assert [(p.step, p.value) for p in tuning.history["objective"]] == [(3, 0.87)]
    assert tuning.lineage.children == ["training.tune-1-3"]
    child = await handlers.get("training.tune-1-3")
    assert child.experiment == "credit" and child.lineage.parent == "tuning.tune-1"
    assert child.parameters == {"algorithm": "xgboost", "max_depth": 5}
