"""The trainer on the real broker and S3 server: request -> package; duplicates; scripts; a
request naming a private location; the worker pools it declares."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from cairn.artifacts import load_model
from cairn.bus import EventProducer
from cairn.bus.lag import existing_partitions
from cairn.bus.publish import Signer
from cairn.bus.subscribe import DLQ_REASON
from cairn.contracts import spec_for
from cairn.contracts.events import InputChannel, TrainingJobRequested
from cairn.contracts.state import WorkerPoolDeclaration, list_states
from cairn.service import Service
from cairn.settings import CairnSettings
from cairn.store import ObjectStore

from services.trainer.app import create_service
from services.trainer.config import TrainerSettings
from tests.support.auth import scoped_headers, token_for
from tests.support.tansu import unique_name
from tests.support.trainer_data import credit_frame, to_csv_bytes

pytestmark = pytest.mark.integration


@pytest.fixture
async def trainer(
    kafka_settings: CairnSettings, s3_settings: CairnSettings, s3_store: ObjectStore
) -> AsyncIterator[Service]:
    settings = kafka_settings.model_copy(
        update={
            "store_url": s3_settings.store_url,
            "s3_endpoint": s3_settings.s3_endpoint,
            "s3_access_key": s3_settings.s3_access_key,
            "s3_secret_key": s3_settings.s3_secret_key,
        }
    )
    service = create_service(
        settings, s3_store, TrainerSettings(worker_id="it-worker", heartbeat_s=0.2)
    )
    async with service.api.router.lifespan_context(service.api):
        yield service


def producer(trainer: Service, **kwargs: Any) -> EventProducer:
    """A user's producer, signing with a key that holds `train` (the bus checks it)."""
    key_id, secret = token_for(trainer.store, trainer.settings, ["train"]).split(":", 1)
    return EventProducer(trainer.settings, source="test", signer=Signer(key_id, secret), **kwargs)


def http(trainer: Service) -> httpx.AsyncClient:
    headers = scoped_headers(trainer.store, trainer.settings, ["train", "read"])
    transport = httpx.ASGITransport(app=trainer.api)
    return httpx.AsyncClient(transport=transport, base_url="http://trainer", headers=headers)


async def events_for(
    settings: CairnSettings, job_name: str, until: set[str], timeout_s: float = 40
) -> list[dict[str, Any]]:
    """Trainer events about one job, read from the start until one of `until` shows."""
    topics = sorted(
        {
            spec_for(t).topic
            for t in ("TrainingJobStarted", "TrainingJobCompleted", "TrainingJobFailed")
        }
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            partitions = await existing_partitions(consumer, topics)
            if partitions and set(partitions) != consumer.assignment():
                consumer.assign(partitions)
                await consumer.seek_to_beginning(*partitions)
            batch = await consumer.getmany(timeout_ms=200) if consumer.assignment() else {}
            for records in batch.values():
                for record in records:
                    event = json.loads(record.value)
                    if event["data"].get("job_name") == job_name:
                        found.append(event)
            if any(event["type"] in until for event in found):
                return found
            await asyncio.sleep(0.05)
    finally:
        await consumer.stop()
    raise AssertionError(f"no {until} for {job_name} within {timeout_s}s; saw {found}")


def job_request(name: str, prefix: str, **overrides: Any) -> TrainingJobRequested:
    fields: dict[str, Any] = {
        "job_name": name,
        "algorithm": "xgboost",
        "hyperparameters": {"num_round": 20, "max_depth": 3},
        "input_channels": [
            InputChannel(name="train", uri=f"{prefix}/train.csv", label_column="default")
        ],
        "registration": {"model_package_group": "credit"},
    }
    return TrainingJobRequested(**(fields | overrides))


async def test_a_requested_job_completes_with_a_loadable_package_and_duplicates_are_rejected(
    trainer: Service, kafka_settings: CairnSettings, s3_store: ObjectStore
) -> None:
    prefix = f"data/{unique_name('credit')}"
    s3_store.put_bytes(f"{prefix}/train.csv", to_csv_bytes(credit_frame(600)))
    name = unique_name("job")
    async with producer(trainer) as user:
        await user.publish(job_request(name, prefix))
    events = await events_for(kafka_settings, name, {"TrainingJobCompleted", "TrainingJobFailed"})
    completed = next(e for e in events if e["type"] == "TrainingJobCompleted")["data"]
    assert completed["registration"] == {
        "model_package_group": "credit",
        "approval_status": "PendingManualApproval",
        "description": "",
    }
    model = load_model(s3_store, completed["artifact_uri"])
    assert model.predict(
        model.encode_rows([[30, 20000.0, 0.9, 4, 2, "business", "rent"]])
    ).shape == (1,)

    async with http(trainer) as client:
        described = (await client.get(f"/training-jobs/{name}")).json()
        assert described["status"] == "Completed"
        conflict = await client.post(
            "/training-jobs",
            json=job_request(name, prefix, algorithm="kmeans").model_dump(mode="json"),
        )
        assert conflict.status_code == 409 and conflict.json()["code"] == "conflict"
        assert "Completed" in (await client.get(f"/training-jobs/{name}/logs")).text
        assert name in {
            job["job_name"] for job in (await client.get("/training-jobs")).json()["training_jobs"]
        }

    # A different request with the same name, straight on the bus: rejected, the job untouched.
    before = s3_store.get_bytes(f"trainer/jobs/{name}.json")
    async with producer(trainer) as user:
        other = await user.publish(job_request(name, prefix, hyperparameters={"num_round": 3}))
    deadline = time.monotonic() + 20
    while not s3_store.exists(f"trainer/rejections/{name}/{other.event_id}.json"):
        assert time.monotonic() < deadline, "the conflicting request was not rejected"
        await asyncio.sleep(0.1)
    assert s3_store.get_bytes(f"trainer/jobs/{name}.json") == before


async def test_a_script_job_posted_over_http_completes(
    trainer: Service, kafka_settings: CairnSettings, s3_store: ObjectStore
) -> None:
    prefix = f"data/{unique_name('script')}"
    code = f"code/{unique_name('script')}/train.py"
    s3_store.put_bytes(f"{prefix}/train.csv", to_csv_bytes(credit_frame(100)))
    s3_store.put_bytes(
        code,
        b"import os\n"
        b"names = sorted(os.listdir(os.environ['SM_CHANNEL_TRAIN']))\n"
        b"path = os.path.join(os.environ['SM_MODEL_DIR'], 'model.txt')\n"
        b"open(path, 'w').write(str(names))\n",
    )
    name = unique_name("script")
    body = job_request(name, prefix, algorithm="script", entry_point=code, hyperparameters={})
    async with http(trainer) as client:
        created = await client.post("/training-jobs", json=body.model_dump(mode="json"))
        assert created.status_code == 202 and created.json()["status"] == "Pending"
    events = await events_for(kafka_settings, name, {"TrainingJobCompleted", "TrainingJobFailed"})
    completed = next(e for e in events if e["type"] == "TrainingJobCompleted")["data"]
    assert s3_store.get_bytes(completed["artifact_uri"] + "model.txt") == b"['train.csv']"


async def test_a_bus_request_naming_the_key_ring_fails_is_dead_lettered_and_writes_nothing(
    trainer: Service, kafka_settings: CairnSettings, s3_store: ObjectStore
) -> None:
    prefix = f"data/{unique_name('credit')}"
    s3_store.put_bytes(f"{prefix}/train.csv", to_csv_bytes(credit_frame(100)))
    name = unique_name("keysdump")
    async with producer(trainer) as user:
        bad = await user.publish(job_request(name, prefix, output_uri="gateway/keys"))
    events = await events_for(kafka_settings, name, {"TrainingJobFailed"})
    failed = next(e for e in events if e["type"] == "TrainingJobFailed")["data"]
    assert failed["failure_code"] == "invalid_input" and "output_uri" in failed["reason"]
    assert not any(e["type"] == "TrainingJobStarted" for e in events)
    dead = await dead_letters(kafka_settings, str(bad.event_id))
    assert "output_uri" in dead["reason"]
    assert not list(s3_store.list("gateway/", recursive=True))
    assert not s3_store.exists(f"trainer/jobs/{name}.json")


async def test_the_trainer_declares_its_worker_pools_at_start(
    trainer: Service, s3_store: ObjectStore
) -> None:
    declared = {pool.name: pool for pool in list_states(s3_store, WorkerPoolDeclaration)}
    assert {"trainer-cpu", "trainer-gpu"} <= set(declared)
    assert declared["trainer-cpu"].service == "trainer"
    assert declared["trainer-cpu"].group_id == "cairn.trainer"
    assert declared["trainer-gpu"].group_id == "cairn.trainer.gpu" and declared["trainer-gpu"].gpu
    assert declared["trainer-gpu"].event_types == ["GpuTrainingJobRequested"]


async def dead_letters(
    settings: CairnSettings, event_id: str, timeout_s: float = 20
) -> dict[str, Any]:
    """The dead-lettered copy of one TrainingJobRequested and the reason in its headers."""
    topic = spec_for("TrainingJobRequested").dlq_topic
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            partitions = await existing_partitions(consumer, [topic])
            if partitions and set(partitions) != consumer.assignment():
                consumer.assign(partitions)
                await consumer.seek_to_beginning(*partitions)
            batch = await consumer.getmany(timeout_ms=200) if consumer.assignment() else {}
            for records in batch.values():
                for record in records:
                    if json.loads(record.value)["event_id"] == event_id:
                        headers = {k: v.decode() for k, v in record.headers}
                        return {"reason": headers.get(DLQ_REASON, "")}
            await asyncio.sleep(0.05)
    finally:
        await consumer.stop()
    raise AssertionError(f"request {event_id} was not dead-lettered within {timeout_s}s")
