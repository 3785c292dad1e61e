"""StopTrainingJob: a running job stops within a second (with or without its partial model), a
Pending one at once; finished jobs refuse; the route needs `train` and is audited; one log per
attempt."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from cairn.artifacts import read_manifest
from cairn.audit import list_audit_records
from cairn.contracts.envelope import Envelope, utc_now
from cairn.contracts.events import (
    TrainingJobCompleted,
    TrainingJobProgressed,
    TrainingJobStarted,
)
from cairn.contracts.tuner_events import TrainingJobStopped, TrainingJobStopRequested
from cairn.errors import Conflict
from cairn.store import InMemoryObjectStore
from pydantic import BaseModel

from services.trainer.app import create_service
from services.trainer.config import TrainerSettings
from services.trainer.domain import TrainingJob, job_key, request_fingerprint
from tests.support.auth import auth_settings, scoped_headers
from tests.support.trainer_data import credit_frame, to_csv_bytes
from tests.unit.test_trainer_handlers import Harness, envelope, request

LONG = {"num_round": 10000, "max_depth": 6, "progress_every": 5, "eval_metric": "auc"}


@pytest.fixture
def store() -> InMemoryObjectStore:
    store = InMemoryObjectStore()
    frame = credit_frame(800, seed=5)
    store.put_bytes("data/credit/train/part-0.csv", to_csv_bytes(frame[:600]))
    store.put_bytes("data/credit/validation.csv", to_csv_bytes(frame[600:]))
    return store


def long_request(name: str = "job-1") -> Any:
    return request(
        name,
        hyperparameters=LONG,
        input_channels=[
            {"name": "train", "uri": "data/credit/train/", "label_column": "default"},
            {"name": "validation", "uri": "data/credit/validation.csv", "label_column": "default"},
        ],
    )


def short_request() -> Any:
    return long_request().model_copy(update={"hyperparameters": {"num_round": 5}})


async def first_progress(harness: Harness) -> None:
    deadline = time.monotonic() + 30
    while not harness.of(TrainingJobProgressed):
        assert time.monotonic() < deadline, harness.events
        await asyncio.sleep(0.02)


async def stop_when_progressing(harness: Harness, keep: bool) -> None:
    """Wait for the job's first progress, then ask it to stop."""
    await first_progress(harness)
    await harness.handlers.stop(
        TrainingJobStopRequested(job_name="job-1", reason="pruned", keep_partial_model=keep)
    )


@pytest.mark.parametrize("keep", [False, True])
async def test_a_running_job_stops_before_its_last_round(
    store: InMemoryObjectStore, keep: bool
) -> None:
    harness = Harness(store)
    run = asyncio.ensure_future(harness.handlers.on_requested(envelope(long_request())))
    await stop_when_progressing(harness, keep)
    await asyncio.wait_for(run, timeout=10)
    [stopped] = harness.of(TrainingJobStopped)
    assert not harness.of(TrainingJobCompleted)
    job = harness.handlers.jobs.get(job_key("job-1")).doc
    assert (job.status, job.stop_reason) == ("Stopped", "pruned")
    assert stopped.reason == "pruned"
    assert stopped.iteration is not None and 0 < stopped.iteration < LONG["num_round"]
    if keep:
        assert stopped.artifact_uri == "models/job-1/"
        rounds = read_manifest(store, "models/job-1/").details["num_round"]
        assert 0 < rounds < LONG["num_round"]
    else:
        assert stopped.artifact_uri is None and not store.exists("models/job-1/manifest.json")


async def test_a_stop_written_by_another_replica_is_noticed_by_polling(
    store: InMemoryObjectStore,
) -> None:
    worker, other = Harness(store, worker_id="w1"), Harness(store, worker_id="w2")
    run = asyncio.ensure_future(worker.handlers.on_requested(envelope(long_request())))
    await first_progress(worker)
    stopping = await other.handlers.stop(TrainingJobStopRequested(job_name="job-1"))
    assert stopping.status == "Stopping"
    await asyncio.wait_for(run, timeout=10)
    assert len(worker.of(TrainingJobStopped)) == 1 and not other.of(TrainingJobStopped)


async def test_a_pending_job_is_stopped_at_once_and_never_trains(
    store: InMemoryObjectStore,
) -> None:
    harness = Harness(store)
    created = await harness.handlers.create(long_request())
    stopped = await harness.handlers.stop(TrainingJobStopRequested(job_name="job-1"))
    assert stopped.status == "Stopped"
    assert [e.job_name for e in harness.of(TrainingJobStopped)] == ["job-1"]
    await harness.handlers.on_requested(created.envelope)  # the request arrives afterwards
    assert not harness.of(TrainingJobStarted)
    again = await harness.handlers.stop(TrainingJobStopRequested(job_name="job-1"))
    assert again.status == "Stopped" and len(harness.of(TrainingJobStopped)) == 1


async def test_a_finished_job_cannot_be_stopped(store: InMemoryObjectStore) -> None:
    harness = Harness(store)
    await harness.handlers.on_requested(envelope(short_request()))
    with pytest.raises(Conflict):
        await harness.handlers.stop(TrainingJobStopRequested(job_name="job-1"))
    # From the bus it is only logged: the tuner may race a trial's own end.
    stop = Envelope[TrainingJobStopRequested](
        type="TrainingJobStopRequested",
        source="tuner",
        correlation_id="c",
        data=TrainingJobStopRequested(job_name="job-1"),
    )
    await harness.handlers.on_stop_requested(stop)
    assert harness.handlers.jobs.get(job_key("job-1")).doc.status == "Completed"
    assert not harness.audits[1:]  # only the create


async def test_a_taken_over_attempt_keeps_its_own_log(store: InMemoryObjectStore) -> None:
    store.put_bytes("trainer/jobs/job-1/attempts/1/logs.txt", b"attempt one was here\n")
    dead = TrainingJob(
        job_name="job-1",
        request=short_request(),
        request_sha256=request_fingerprint(short_request()),
        status="InProgress",
        attempt=1,
        worker_id="dead-worker",
        heartbeat_at=utc_now() - timedelta(seconds=5),
    )
    harness = Harness(store, worker_id="w2")
    harness.handlers.jobs.create(job_key("job-1"), dead)
    await harness.handlers.on_requested(envelope(short_request()))
    assert await harness.handlers.logs("job-1", 1) == "attempt one was here\n"
    latest = await harness.handlers.logs("job-1")
    assert "attempt 2 on worker w2" in latest and "Completed" in latest


# The route ----------------------------------------------------------------------------------


@pytest.fixture
async def api(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    store = InMemoryObjectStore()
    settings = auth_settings(store_url="memory://trainer-stop")
    service = create_service(settings, store, TrainerSettings(worker_id="w1"))
    published: list[BaseModel] = []

    async def publish(data: BaseModel, *_: Any, **__: Any) -> Envelope[Any]:
        published.append(data)
        return Envelope[Any](type=type(data).__name__, source="t", correlation_id="c", data=data)

    monkeypatch.setattr(service, "publish", publish)
    transport = httpx.ASGITransport(app=service.api)
    async with httpx.AsyncClient(transport=transport, base_url="http://trainer") as client:
        yield (service, store, settings, published), client


async def test_the_stop_route_needs_train_and_is_audited(
    api: tuple[Any, httpx.AsyncClient],
) -> None:
    (_service, store, settings, published), client = api
    job = {
        "job_name": "job-1",
        "algorithm": "xgboost",
        "input_channels": [{"name": "train", "uri": "data/credit/train.csv"}],
    }
    trainer = scoped_headers(store, settings, ["train"], name="ds")
    assert (await client.post("/training-jobs", json=job, headers=trainer)).status_code == 202
    reader = scoped_headers(store, settings, ["read"])
    assert (await client.post("/training-jobs/job-1/stop", headers=reader)).status_code == 403
    stopped = await client.post(
        "/training-jobs/job-1/stop", json={"keep_partial_model": True}, headers=trainer
    )
    assert stopped.status_code == 202 and stopped.json()["status"] == "Stopped"
    kinds = [type(e).__name__ for e in published if type(e).__name__ != "AuditRecorded"]
    assert kinds == ["TrainingJobRequested", "TrainingJobStopped"]
    records = list_audit_records(store, action="training_job.stop")
    assert {(r.principal, r.outcome) for r in records} == {("ds", "success"), ("tester", "denied")}
    missing = await client.post("/training-jobs/nope/stop", headers=trainer)
    assert missing.status_code == 404
    logs = await client.get("/training-jobs/job-1/logs?attempt=3", headers=reader)
    assert logs.status_code == 404
