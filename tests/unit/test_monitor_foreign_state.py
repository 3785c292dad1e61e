"""Other services' documents reach the monitor only through their contracts: an unreadable or
invalid one is logged and skipped, and the monitor keeps serving."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from cairn.contracts.events import (
    DeploymentRequested,
    MonitoringRunCompleted,
    MonitoringScheduleRequested,
    TrainingJobRequested,
)
from cairn.contracts.state import (
    EndpointStateView,
    ModelVersionView,
    TrainingJobView,
    state_spec,
)
from cairn.errors import ObjectNotFound
from cairn.store.memory import InMemoryObjectStore

from services.monitor.config import MonitorSettings
from services.monitor.domain import RetrainPolicyBody
from services.monitor.handlers import Monitor
from services.monitor.retrain import Retrainer
from tests.unit.test_monitor_checks import Published, deploy_model, labelled_frame, write_capture
from tests.unit.test_monitor_retrain import approval, drift_envelope

BROKEN = [b"\x00 not json", b'{"endpoint_name": "ep", "revision": 1, "status": "Sideways"}']


@pytest.mark.parametrize("broken", BROKEN)
async def test_unreadable_endpoint_state_skips_the_run_until_it_is_readable(
    broken: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    store = InMemoryObjectStore()
    deploy_model(store, "ep", "credit", 1, "job-1", rounds=3)
    write_capture(store, "ep", labelled_frame(300, seed=5), "r", datetime.now(UTC))
    key = state_spec(EndpointStateView).key("ep")
    valid = store.get_bytes(key)
    store.put_bytes(key, broken)
    published = Published()
    monitor = Monitor(store, published, MonitorSettings())
    monitor.apply_schedule(
        MonitoringScheduleRequested(endpoint_name="ep", interval_s=60, min_rows=100)
    )
    now = datetime.now(UTC) + timedelta(seconds=2)

    with caplog.at_level(logging.ERROR):
        assert await monitor.run_endpoint("ep", now=now) is None
    assert f"skipping {key}" in caplog.text
    schedule = monitor.get_schedule("ep")
    assert schedule.pending_run is None and schedule.next_run_at > now  # postponed, not stuck
    assert published.events == []

    store.put_bytes(key, valid)  # the deployer writes it again: the next run goes ahead
    summary = await monitor.run_endpoint("ep", now=now + timedelta(seconds=1))
    assert summary is not None and summary.rows_checked == 300
    assert [e.run_id for e in published.of(MonitoringRunCompleted)] == [summary.run_id]


async def test_unreadable_registry_and_trainer_documents_start_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = InMemoryObjectStore()
    deploy_model(store, "ep", "credit", 1, "job-1", rounds=3)
    published = Published()
    retrainer = Retrainer(Monitor(store, published, MonitorSettings()))
    await retrainer.put_policy("credit", RetrainPolicyBody(endpoint_name="ep", cooldown_s=0))
    job_key = state_spec(TrainingJobView).key("job-1")
    store.put_bytes(job_key, b'{"job_name": "job-1"}')  # no request, no status

    caplog.set_level(logging.ERROR)
    with pytest.raises(ObjectNotFound, match="training job"):
        await retrainer.on_drift(drift_envelope())  # the bus retries, then dead-letters it
    assert f"skipping {job_key}" in caplog.text
    assert published.of(TrainingJobRequested) == []
    assert "run-1" not in retrainer.get_policy("credit").handled_runs  # a redelivery may retry

    # An approval of a version whose registry document is unreadable deploys nothing.
    version_key = state_spec(ModelVersionView).key("credit", "7")
    store.put_bytes(version_key, b'{"version": "seven"}')
    await retrainer.on_approval_changed(approval(7))
    assert f"skipping {version_key}" in caplog.text
    assert published.of(DeploymentRequested) == []
