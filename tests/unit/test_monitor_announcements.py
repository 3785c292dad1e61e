"""A baseline stored but never announced (the monitor killed between the write and the publish,
or a run stored it first) is announced by the next delivery, once: `BaselineComputed` is never
lost and a later delivery does not repeat it. The kill is a publish that fails after the write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cairn.contracts.envelope import Envelope
from cairn.contracts.events import (
    BaselineComputed,
    EndpointUpdated,
    MonitoringScheduleRequested,
    VariantState,
)
from cairn.errors import Unavailable
from cairn.store.memory import InMemoryObjectStore
from pydantic import BaseModel

from services.monitor.config import MonitorSettings
from services.monitor.handlers import Monitor
from tests.unit.test_monitor_checks import Published, deploy_model, labelled_frame, write_capture


class KilledBeforePublish(Published):
    async def __call__(
        self,
        data: BaseModel,
        cause: Envelope[Any] | None = None,
        correlation_id: str | None = None,
    ) -> Envelope[Any]:
        raise Unavailable("killed before the publish")


def endpoint_updated(uri: str) -> Envelope[EndpointUpdated]:
    variant = VariantState(
        variant_name="AllTraffic",
        model_package_group="credit",
        model_version=1,
        artifact_uri=uri,
        weight=1.0,
        instance_count=1,
    )
    update = EndpointUpdated(
        endpoint_name="ep", revision=1, status="InService", production_variants=[variant]
    )
    return Envelope[EndpointUpdated](
        type="EndpointUpdated", source="deployer", correlation_id="c", data=update
    )


async def test_a_baseline_stored_before_a_kill_is_announced_by_the_redelivery_once() -> None:
    store = InMemoryObjectStore()
    deploy_model(store, "ep", "credit", 1, "job-1", rounds=3)
    delivery = endpoint_updated("models/job-1/")
    with pytest.raises(Unavailable):
        await Monitor(store, KilledBeforePublish(), MonitorSettings()).on_endpoint_updated(delivery)
    assert store.exists("monitor/baselines/credit/1/statistics.json")

    published = Published()
    restarted = Monitor(store, published, MonitorSettings())
    await restarted.on_endpoint_updated(delivery)  # the offset was never committed
    await restarted.on_endpoint_updated(delivery)
    await Monitor(store, published, MonitorSettings()).on_endpoint_updated(delivery)

    [computed] = published.of(BaselineComputed)
    assert (computed.model_package_group, computed.model_version) == ("credit", 1)
    assert computed.statistics_uri == "monitor/baselines/credit/1/statistics.json"


async def test_a_baseline_a_run_stored_first_is_announced_by_the_next_update() -> None:
    store = InMemoryObjectStore()
    deploy_model(store, "ep", "credit", 1, "job-1", rounds=3)
    write_capture(store, "ep", labelled_frame(200, seed=3), "r", datetime.now(UTC))
    published = Published()
    monitor = Monitor(store, published, MonitorSettings(run_lease_s=0))
    monitor.apply_schedule(
        MonitoringScheduleRequested(endpoint_name="ep", interval_s=60, min_rows=100)
    )
    window_closed = datetime.now(UTC) + timedelta(seconds=2)
    assert await monitor.run_endpoint("ep", now=window_closed) is not None
    assert store.exists("monitor/baselines/credit/1/statistics.json")
    assert not published.of(BaselineComputed)

    await monitor.on_endpoint_updated(endpoint_updated("models/job-1/"))

    assert len(published.of(BaselineComputed)) == 1
