"""Scale-out rules without I/O: what a resumed attempt records, and the SDK's request body."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
from cairn.contracts.envelope import utc_now
from cairn.contracts.events import TrainingJobRequested
from cairn_sdk import Client

from services.trainer.domain import TrainingJob, claimed, progressed, resumed, wait_left_s


def job(**fields: Any) -> TrainingJob:
    request = TrainingJobRequested.model_validate(
        {
            "job_name": "spot",
            "algorithm": "xgboost",
            "input_channels": [{"name": "train", "uri": "data/t.csv"}],
        }
        | fields
    )
    return TrainingJob(job_name="spot", request=request, request_sha256="x")


def test_a_resumed_attempt_records_rounds_saved_and_rounds_redone() -> None:
    now = utc_now()
    first = claimed(job(), event_id="e1", worker_id="a", now=now)
    first = progressed(first, 1, 287)  # the last round the killed attempt reported
    second = claimed(first, event_id="e1", worker_id="b", now=now)
    second = resumed(second, 2, 280)
    assert [a.worker_id for a in second.attempts] == ["a", "b"]
    assert second.attempts[1].resumed_from_round == 280
    assert (second.rounds_saved_by_resume, second.rounds_redone) == (280, 7)
    assert resumed(second, 1, 999) == second  # not the current attempt: untouched


def test_max_wait_counts_from_the_jobs_creation() -> None:
    waiting = job(stopping_condition={"max_runtime_s": 60, "max_wait_time_s": 120})
    assert wait_left_s(waiting, waiting.created_at + timedelta(seconds=100)) == 20
    assert wait_left_s(job(), utc_now()) is None


def test_the_sdk_sends_instances_input_mode_checkpoints_and_max_wait() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(202, json={"job_name": "j", "status": "Pending"})

    client = Client(trainer_url="http://trainer", transport=httpx.MockTransport(handler))
    client.create_training_job(
        "j",
        "xgboost",
        {"train": "data/t.parquet"},
        instance_count=2,
        input_mode="Pipe",
        checkpoint_uri="outputs/ckpt/j",
        checkpoint_interval_rounds=5,
        max_runtime_s=60,
        max_wait_s=600,
    )
    request = TrainingJobRequested.model_validate(seen[0])
    assert request.resources.instance_count == 2 and request.input_mode == "Pipe"
    assert request.checkpoint_config is not None
    assert (request.checkpoint_config.uri, request.checkpoint_config.interval_rounds) == (
        "outputs/ckpt/j",
        5,
    )
    assert request.stopping_condition.max_wait_time_s == 600
