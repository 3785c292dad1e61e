"""Monitor on the real broker and S3 server: captured traffic + a schedule -> a run with a report
and DriftDetected; the same drift delivered three times -> one retrain."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cairn.auth import Scope
from cairn.bus import EventProducer, TailedEvent, tail_events
from cairn.contracts.envelope import Envelope
from cairn.contracts.events import DriftDetected
from cairn.service import Service
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore

from services.monitor.app import create_service
from services.monitor.config import MonitorSettings
from tests.support.auth import scoped_headers
from tests.support.http_server import served
from tests.support.tansu import unique_name
from tests.unit.test_monitor_checks import deploy_model, labelled_frame, write_capture

pytestmark = pytest.mark.integration

WATCHED = [
    "MonitoringRunCompleted",
    "DriftDetected",
    "BaselineComputed",
    "RetrainRequested",
    "TrainingJobRequested",
]


@asynccontextmanager
async def serving(service: Service, scopes: list[Scope]) -> AsyncIterator[httpx.AsyncClient]:
    """The service's API, consumers and schedule loop on a free port; a client with a key."""
    headers = scoped_headers(service.store, service.settings, scopes, name="operator")
    async with (
        served(service.api, "monitor", timeout_s=90) as url,
        httpx.AsyncClient(base_url=url, timeout=30, headers=headers) as client,
    ):
        yield client


@asynccontextmanager
async def trail(settings: CairnSettings) -> AsyncIterator[list[Envelope[Any]]]:
    """Every watched event on the bus, in arrival order, while the block runs."""
    seen: list[Envelope[Any]] = []

    async def follow() -> None:
        item: TailedEvent
        async for item in tail_events(settings, WATCHED, from_beginning=True):
            if isinstance(item.event, Envelope):
                seen.append(item.event)

    task = asyncio.create_task(follow())
    try:
        yield seen
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def wait_for(
    seen: list[Envelope[Any]], kind: str, match: Any, timeout_s: float = 20
) -> Envelope[Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for envelope in seen:
            if envelope.type == kind and match(envelope.data):
                return envelope
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {kind}; seen {[e.type for e in seen]}")


async def wait_until_skipped(
    api: httpx.AsyncClient, group: str, run_id: str, timeout_s: float = 20
) -> None:
    """Until the group's retrain policy records that it skipped drift run `run_id`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        policy = (await api.get(f"/retrain-policies/{group}")).json()
        if run_id in policy["skipped"]:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"drift run {run_id} was not handled by the retrain policy of {group}")


@pytest.fixture
def settings(kafka_settings: CairnSettings, s3_settings: CairnSettings) -> CairnSettings:
    return kafka_settings.model_copy(
        update={
            "store_url": s3_settings.store_url,
            "s3_endpoint": s3_settings.s3_endpoint,
            "s3_access_key": s3_settings.s3_access_key,
            "s3_secret_key": s3_settings.s3_secret_key,
        }
    )


async def test_schedule_runs_reports_drift_and_retrains_once(
    settings: CairnSettings, s3_store: ObjectStore
) -> None:
    endpoint, group, job = unique_name("ep"), unique_name("credit"), unique_name("job")
    deploy_model(s3_store, endpoint, group, 1, job, rounds=3)
    drifted = labelled_frame(400, seed=11, shift=0.8)
    write_capture(s3_store, endpoint, drifted, "req", datetime.now(UTC))
    service = create_service(
        settings,
        s3_store,
        MonitorSettings(consumer_group=unique_name("cairn.monitor"), tick_s=0.2),
    )
    # The trail starts after the service created its topics: it tails the topics that exist.
    async with serving(service, ["read", "deploy"]) as api, trail(settings) as seen:
        created = await api.post(f"/schedules/{endpoint}", json={"interval_s": 1, "min_rows": 50})
        assert created.status_code == 201, created.text
        policy = await api.put(
            f"/retrain-policies/{group}",
            json={"endpoint_name": endpoint, "cooldown_s": 3600, "min_new_labelled_rows": 0},
        )
        assert policy.status_code == 200, policy.text

        completed = await wait_for(
            seen, "MonitoringRunCompleted", lambda d: d.endpoint_name == endpoint
        )
        assert completed.data.rows_checked == 400
        assert {"f0", "f1"} <= set(completed.data.drifted_features)
        drift = await wait_for(seen, "DriftDetected", lambda d: d.endpoint_name == endpoint)
        report = json.loads(s3_store.get_bytes(drift.data.report_uri))
        assert report["summary"]["run_id"] == drift.data.run_id
        assert s3_store.get_bytes(report["charts"]["f0"]).startswith(b"\x89PNG")
        runs = (await api.get(f"/schedules/{endpoint}/runs")).json()
        assert [run["run_id"] for run in runs] == [drift.data.run_id]
        # The report over HTTP keeps each feature's binned distributions (the console plots them).
        served_report = (await api.get(f"/schedules/{endpoint}/runs/{drift.data.run_id}")).json()
        f0 = served_report["distributions"]["f0"]
        assert len(f0["edges"]) == len(f0["reference"]) + 1 == len(f0["current"]) + 1
        assert sum(f0["reference"]) == pytest.approx(1) and sum(f0["current"]) == pytest.approx(1)
        assert f0["reference"] != f0["current"]
        missing = await api.get(f"/schedules/{endpoint}/runs/no-such-run")
        assert missing.status_code == 404 and missing.json()["code"] == "run_not_found"

        # The monitor's own DriftDetected started one retrain; two redeliveries add none. A
        # sentinel drift of another run (same endpoint, so the same partition) comes after them:
        # once the policy records it (skipped: cooldown), the redeliveries were handled.
        sentinel = drift.data.model_copy(update={"run_id": "sentinel"})
        async with EventProducer(settings, source="monitor") as producer:
            for data in (drift.data, drift.data, sentinel):
                await producer.publish(
                    DriftDetected.model_validate(data.model_dump()),
                    correlation_id=drift.correlation_id,
                )
        request = await wait_for(seen, "TrainingJobRequested", lambda d: group in d.job_name)
        assert request.correlation_id == drift.correlation_id
        await wait_until_skipped(api, group, "sentinel")
        retrains = [e for e in seen if e.type == "RetrainRequested"]
        requests = [e for e in seen if e.type == "TrainingJobRequested"]
        assert len([e for e in retrains if e.data.model_package_group == group]) == 1
        assert len([e for e in requests if group in e.data.job_name]) == 1
        stored = (await api.get(f"/retrain-policies/{group}")).json()
        assert list(stored["jobs"]) == [request.data.job_name]
