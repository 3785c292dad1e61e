"""Stopping and resuming transform jobs on the real broker and S3 server.

A job stopped while a worker holds a shard ends Stopped, announces it and leaves its other shards;
the same request resumes it and redoes only those. A job failed past its failure limit resumes
once the limit is raised. Either way every input record is in the output exactly once.

The worker is held by a gate in its store: reading a third input file waits until the test opens
it, so "mid-job" is a fact the test waits for, never a guess about timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from cairn.bus import consumer_group_lag, tail_events
from cairn.contracts.catalogue import spec_for
from cairn.service import Service
from cairn.settings import CairnSettings
from cairn.store import ObjectStore, S3ObjectStore

from services.batch.app import create_service
from services.batch.pools import WORKER_GROUP
from tests.integration.test_batch_service import (
    body,
    config,
    finished,
    http,
    ids_of,
    register_model,
    settings_for,
)
from tests.support.tansu import unique_name
from tests.unit.test_batch_transform import csv_text

pytestmark = pytest.mark.integration
WAIT_S = 60.0
FILES = 8
ROWS = 25


class GatedStore(S3ObjectStore):
    """The S3 store, except that reading a third distinct input file waits for `opened`."""

    def __init__(self, settings: CairnSettings, inputs: str) -> None:
        assert settings.store_url is not None and settings.s3_secret_key is not None
        super().__init__(
            settings.store_url.removeprefix("s3://"),
            endpoint=settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key.get_secret_value(),
        )
        self.inputs = inputs
        self.passed: set[str] = set()
        self.opened = threading.Event()
        self.holding = threading.Event()

    def get_range(self, key: str, start: int, end: int) -> bytes:
        if key.startswith(self.inputs) and not self.opened.is_set():
            if key not in self.passed and len(self.passed) >= 2:
                self.holding.set()
                assert self.opened.wait(WAIT_S * 2), "the test never opened the gate"
            self.passed.add(key)
        return super().get_range(key, start, end)


@pytest.fixture
def batch_settings(kafka_settings: CairnSettings, s3_settings: CairnSettings) -> CairnSettings:
    return settings_for(kafka_settings, s3_settings)


@pytest.fixture(scope="class")
def registered_model(s3_store: ObjectStore) -> tuple[str, int]:
    return register_model(s3_store)


@contextlib.asynccontextmanager
async def running(settings: CairnSettings, store: ObjectStore) -> AsyncIterator[Service]:
    service = create_service(settings, store, config())
    async with service.api.router.lifespan_context(service.api):
        yield service


async def until(condition: Callable[[], Any], what: str) -> Any:
    """Poll `condition` (run off the loop) until it is truthy; its value."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(condition)
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"waited {WAIT_S}s for {what}")


async def event_of(settings: CairnSettings, event_type: str, **match: Any) -> dict[str, Any]:
    """The first `event_type` on the bus whose data has the `match` fields."""

    async def find() -> dict[str, Any]:
        async for tailed in tail_events(settings, [event_type], from_beginning=True):
            if isinstance(tailed.event, dict):
                continue
            data = tailed.event.data.model_dump(mode="json")
            if all(data.get(name) == value for name, value in match.items()):
                return data
        raise AssertionError("the tail ended")

    return await asyncio.wait_for(find(), WAIT_S)


async def work_all_taken(settings: CairnSettings) -> None:
    """The sentinel that every shard event was handled: the worker group has no lag left."""
    topic = spec_for("TransformShardRequested").topic
    deadline = time.monotonic() + WAIT_S
    while (await consumer_group_lag(settings, WORKER_GROUP, [topic])).total > 0:
        assert time.monotonic() < deadline, "the workers never caught up"
        await asyncio.sleep(0.2)


def shard_states(store: ObjectStore, job: str) -> dict[str, str]:
    """Each shard document's status, by key."""
    return {
        info.key: json.loads(store.get_bytes(info.key))["status"]
        for info in store.list(f"batch/jobs/{job}/shards/")
    }


def all_ids(store: ObjectStore, output: str) -> list[str]:
    return [i for n in range(FILES) for i in ids_of(store.get_bytes(f"{output}/part-{n}.csv.out"))]


class TestStopAndResume:
    async def test_a_stopped_job_leaves_its_shards_and_resumes_only_those(
        self,
        batch_settings: CairnSettings,
        s3_store: ObjectStore,
        registered_model: tuple[str, int],
    ) -> None:
        prefix = f"data/{unique_name('bstop')}"
        for n in range(FILES):
            s3_store.put_bytes(f"{prefix}/part-{n}.csv", csv_text(ROWS, n * ROWS))
        gated = GatedStore(batch_settings, prefix + "/")
        name, output = unique_name("bjob"), f"outputs/{unique_name('bout')}"
        request = body(name, registered_model, prefix, output)
        async with running(batch_settings, gated) as batch, http(batch) as client:
            assert (await client.post("/transform-jobs", json=request)).status_code == 202
            await until(gated.holding.is_set, "a worker held on its third shard")
            stopped = await client.post(f"/transform-jobs/{name}/stop")
            assert stopped.status_code == 200 and stopped.json()["status"] == "Stopped"
            event = await event_of(batch_settings, "TransformJobStopped", job_name=name)
            assert event["shards_total"] == FILES and event["shards_done"] <= 2
            gated.opened.set()  # the held shard finishes; the rest must be left
            await work_all_taken(batch_settings)
            left = shard_states(s3_store, name)
            pending = [key for key, status in left.items() if status == "Pending"]
            assert len(left) == FILES and len(pending) == FILES - 3, left
            assert (await client.get(f"/transform-jobs/{name}")).json()["status"] == "Stopped"

            resumed = await client.post("/transform-jobs", json=request)
            assert resumed.status_code == 202 and resumed.json()["resumed"] is True
            job = await finished(client, name)
            started = await event_of(
                batch_settings, "TransformJobStarted", job_name=name, attempt=2
            )
        assert job["status"] == "Completed", job
        assert started["shards_pending"] == len(pending)  # only the unfinished shards again
        assert all_ids(s3_store, output) == [f"id-{i}" for i in range(FILES * ROWS)]
        assert job["records_in"] == job["records_out"] == FILES * ROWS

    async def test_a_job_failed_past_its_limit_resumes_once_the_limit_is_raised(
        self,
        batch_settings: CairnSettings,
        s3_store: ObjectStore,
        registered_model: tuple[str, int],
    ) -> None:
        prefix = f"data/{unique_name('bfail')}"
        for n in range(FILES):
            rows = csv_text(ROWS, n * ROWS)
            if n == 0:
                rows += b"id-bad,1.0,nope,2.0\n"
            s3_store.put_bytes(f"{prefix}/part-{n}.csv", rows)
        name, output = unique_name("bjob"), f"outputs/{unique_name('bout')}"
        request = body(name, registered_model, prefix, output)
        async with running(batch_settings, s3_store) as batch, http(batch) as client:
            assert (await client.post("/transform-jobs", json=request)).status_code == 202
            failed = await finished(client, name)
            assert failed["status"] == "Failed", failed
            assert failed["failure_code"] == "too_many_failed_records"
            await work_all_taken(batch_settings)
            changed = await client.post("/transform-jobs", json=request | {"max_payload_mb": 5})
            assert changed.status_code == 409  # another request: it would not be the same job
            raised = await client.post("/transform-jobs", json=request | {"max_failed_records": 1})
            assert raised.status_code == 202 and raised.json()["resumed"] is True
            job = await finished(client, name)
        assert job["status"] == "Completed", job
        assert (job["records_in"], job["records_out"], job["records_failed"]) == (
            FILES * ROWS + 1,
            FILES * ROWS,
            1,
        )
        assert all_ids(s3_store, output) == [f"id-{i}" for i in range(FILES * ROWS)]
        errors = [s3_store.get_bytes(info.key) for info in s3_store.list(f"{output}/errors/")]
        assert len(errors) == 1 and b"id-bad" in errors[0]
