"""An execution's state machine without I/O: the DAG runs in order under the parallelism cap,
conditions pick a branch, retries follow their policy, Fail steps and stops end it, and a retry of
the execution re-runs only what failed. Triggers: filters, parameter mapping, once per event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cairn.contracts.envelope import Envelope
from cairn.contracts.events import DatasetIngested
from cairn.errors import InvalidInput, UnknownEventType

from services.pipelines import domain
from services.pipelines.definition import parse_definition
from services.pipelines.triggers import (
    TriggerRequest,
    due_time,
    execution_id_for,
    make_trigger,
    matches,
    names_of,
    parameters_for,
)
from tests.unit.test_pipelines_definition import credit_pipeline

T0 = datetime(2026, 11, 30, 12, tzinfo=UTC)


def execution(document: dict[str, Any] | None = None, **parameters: Any) -> domain.Execution:
    definition = parse_definition(document or credit_pipeline().to_dict())
    return domain.new_execution(
        execution_id="e1",
        pipeline_name="credit",
        version=1,
        definition=definition,
        parameters={"dataset": "dataset://credit@1", "min_auc": 0.7, **parameters},
        started_by="tester",
        now=T0,
    )


def run(run_: domain.Execution, name: str) -> int:
    assert name in domain.settle(run_, T0)
    assert domain.start_step(run_, name, request=("X", {}), cache_key=None, now=T0)
    return run_.steps[name].attempt


def outbox_types(run_: domain.Execution) -> list[str]:
    return [item.type for item in run_.outbox]


def test_the_dag_runs_in_order_and_the_condition_takes_its_branch() -> None:
    run_ = execution()
    assert domain.settle(run_, T0) == ["process"]  # train waits for process
    attempt = run(run_, "process")
    assert domain.settle(run_, T0) == []
    outputs = {"train": "outputs/p/train/", "validation": "outputs/p/validation/"}
    domain.step_succeeded(run_, "process", attempt, {"outputs": outputs}, T0)
    attempt = run(run_, "train")
    props = {"job_name": "j", "model_artifact": "models/j/", "metrics": {"validation-auc": 0.9}}
    domain.step_succeeded(run_, "train", attempt, props, T0)
    assert domain.settle(run_, T0) == ["register"]
    assert run_.steps["good-enough"].properties == {"outcome": True}
    assert run_.steps["too-weak"].status == "Skipped"
    domain.step_succeeded(run_, "register", run(run_, "register"), {"version": 1}, T0)
    assert domain.settle(run_, T0) == []
    assert run_.status == "Succeeded"
    assert outbox_types(run_)[0] == "PipelineExecutionStarted"
    assert outbox_types(run_)[-1] == "PipelineExecutionSucceeded"


def test_the_else_branch_reaches_the_fail_step() -> None:
    run_ = execution()
    domain.step_succeeded(run_, "process", run(run_, "process"), {"outputs": {}}, T0)
    domain.step_succeeded(
        run_, "train", run(run_, "train"), {"metrics": {"validation-auc": 0.5}}, T0
    )
    domain.settle(run_, T0)
    assert run_.status == "Failed"
    assert run_.failed_step == "too-weak"
    assert run_.steps["register"].status == "Skipped"
    assert "not good enough" in (run_.failure_reason or "")


def test_a_metric_the_job_never_reported_fails_the_condition_with_its_name() -> None:
    run_ = execution()
    domain.step_succeeded(run_, "process", run(run_, "process"), {"outputs": {}}, T0)
    domain.step_succeeded(run_, "train", run(run_, "train"), {"metrics": {}}, T0)
    domain.settle(run_, T0)
    assert run_.status == "Failed"
    assert "validation-auc" in (run_.failure_reason or "")


def test_retries_follow_the_policy_then_fail_for_good() -> None:
    run_ = execution()
    domain.step_succeeded(run_, "process", run(run_, "process"), {"outputs": {}}, T0)
    first = run(run_, "train")
    request_one = run_.steps["train"].request_id
    domain.step_failed(run_, "train", first, "algorithm_error", "bad data", T0)
    assert run_.status == "Failed"  # the policy retries `internal` only

    run_ = execution()
    domain.step_succeeded(run_, "process", run(run_, "process"), {"outputs": {}}, T0)
    first = run(run_, "train")
    domain.step_failed(run_, "train", first, "internal", "worker died", T0)
    assert run_.steps["train"].status == "Retrying"
    assert domain.settle(run_, T0) == []
    domain.wake(run_, T0)
    second = run(run_, "train")
    assert second == 2 and run_.steps["train"].request_id != request_one
    assert not domain.step_succeeded(run_, "train", first, {}, T0)  # a late answer is ignored
    domain.step_failed(run_, "train", second, "internal", "worker died again", T0)
    assert run_.status == "Failed"  # max_attempts 2


def test_retry_waits_grow_by_the_backoff_rate_and_stop_after_expire_after() -> None:
    doc = credit_pipeline().to_dict()
    train = next(s for s in doc["steps"] if s["name"] == "train")
    train["retry"] = [
        {"interval_s": 10, "backoff_rate": 3, "max_attempts": 5, "expire_after": "PT1M"}
    ]
    run_ = execution(doc)
    domain.step_succeeded(run_, "process", run(run_, "process"), {"outputs": {}}, T0)
    now = T0
    waits = []
    for attempt in (1, 2):
        domain.settle(run_, now)
        domain.start_step(run_, "train", request=("X", {}), cache_key=None, now=now)
        domain.step_failed(run_, "train", attempt, "internal", "x", now)
        retry_at = run_.steps["train"].retry_at
        assert retry_at is not None
        waits.append((retry_at - now).total_seconds())
        now = retry_at
        domain.wake(run_, now)
    assert waits == [10, 30]
    domain.settle(run_, now)
    domain.start_step(run_, "train", request=("X", {}), cache_key=None, now=now)
    domain.step_failed(run_, "train", 3, "internal", "x", now + timedelta(seconds=30))
    assert run_.status == "Failed"  # 70 s after the first attempt: past PT1M


def test_parallelism_caps_the_steps_started_together() -> None:
    doc = {
        "parallelism": {"max_parallel_steps": 2},
        "steps": [
            {"name": f"s{i}", "type": "Callback", "outputs": {"ok": "boolean"}} for i in range(5)
        ],
    }
    run_ = execution(doc)
    assert domain.settle(run_, T0) == ["s0", "s1"]
    for name in ("s0", "s1"):
        domain.start_step(run_, name, request=None, cache_key=None, now=T0)
    assert domain.settle(run_, T0) == []
    domain.step_succeeded(run_, "s0", 1, {"outputs": {"ok": True}}, T0)
    assert domain.settle(run_, T0) == ["s2"]


def test_a_timeout_is_a_failure_the_policy_may_retry() -> None:
    doc = {"steps": [{"name": "wait", "type": "Callback", "timeout_s": 5}]}
    run_ = execution(doc)
    domain.settle(run_, T0)
    domain.start_step(run_, "wait", request=None, cache_key=None, now=T0)
    assert domain.wake(run_, T0 + timedelta(seconds=4)) == []
    assert domain.wake(run_, T0 + timedelta(seconds=6)) == [("wait", 1)]


def test_stop_then_retry_reruns_only_what_failed() -> None:
    run_ = execution()
    domain.step_succeeded(run_, "process", run(run_, "process"), {"outputs": {}}, T0)
    attempt = run(run_, "train")
    domain.step_failed(run_, "train", attempt, "algorithm_error", "x", T0)
    assert run_.status == "Failed"
    domain.retry(run_, T0)
    assert run_.status == "Executing"
    assert domain.settle(run_, T0) == ["train"]  # process is not run again
    assert run(run_, "train") == 2
    domain.stop(run_, "tester", T0)
    assert run_.status == "Stopped" and domain.settle(run_, T0) == []
    assert outbox_types(run_)[-1] == "PipelineExecutionStopped"


def test_cache_hits_succeed_without_a_request() -> None:
    run_ = execution()
    domain.settle(run_, T0)
    assert domain.use_cache(run_, "process", "k", {"outputs": {}}, "e0", T0)
    assert run_.steps["process"].cache_hit
    assert "ProcessingJobRequested" not in outbox_types(run_)
    assert domain.settle(run_, T0) == ["train"]


def ingested(name: str = "credit") -> Envelope[DatasetIngested]:
    data = DatasetIngested(
        dataset_name=name,
        version=3,
        uri=f"dataset://{name}@3",
        location="datasets/x/",
        sha256="a" * 64,
        row_count=5000,
        columns=[],
        created=True,
    )
    return Envelope[DatasetIngested](
        type="DatasetIngested", source="ingest", correlation_id="c", data=data
    )


def test_a_trigger_filters_on_data_and_envelope_and_maps_fields_to_parameters() -> None:
    request = TriggerRequest(
        on="DatasetIngested",
        where='data.dataset_name == "credit" and data.row_count > 1000 and source == "ingest"',
        parameters={"dataset": "{data.uri}", "note": "v{data.version} of {data.dataset_name}"},
    )
    trigger = make_trigger(request, "credit", "tester", T0)
    names = names_of(ingested())
    assert matches(trigger, names)
    assert not matches(trigger, names_of(ingested("other")))
    assert parameters_for(trigger, names) == {
        "dataset": "dataset://credit@3",
        "note": "v3 of credit",
    }
    event_id = str(ingested().event_id)
    assert execution_id_for(trigger.trigger_name, event_id) == execution_id_for(
        trigger.trigger_name, event_id
    )


@pytest.mark.parametrize(
    ("fields", "error", "spot"),
    [
        ({"on": "DatasetIngestd"}, UnknownEventType, "DatasetIngestd"),
        ({"on": "DatasetIngested", "where": 'data.dataset_name == "credit'}, InvalidInput, "where"),
        ({"on": "DatasetIngested", "where": "data.name == 1"}, InvalidInput, "data.name"),
        ({"on": "DatasetIngested", "where": "__import__('os')"}, InvalidInput, "__import__"),
        ({"on": "DatasetIngested", "parameters": {"d": "{data.url}"}}, InvalidInput, "data.url"),
        ({"schedule": "every day"}, InvalidInput, "schedule"),
    ],
)
def test_bad_triggers_are_refused_naming_the_spot(
    fields: dict[str, Any], error: type[Exception], spot: str
) -> None:
    with pytest.raises(error, match=spot.replace("(", r"\(")):
        make_trigger(TriggerRequest(**fields), "credit", "tester", T0)


def test_a_schedule_comes_due_once_per_time() -> None:
    trigger = make_trigger(TriggerRequest(schedule="*/5 * * * *"), "credit", "tester", T0)
    assert due_time(trigger, T0 + timedelta(minutes=4)) is None
    due = due_time(trigger, T0 + timedelta(minutes=11))
    assert due == T0 + timedelta(minutes=10)  # the latest, not every missed one
    later = trigger.model_copy(update={"last_due_at": due})
    assert due_time(later, T0 + timedelta(minutes=12)) is None
