"""Wiring of the monitor: subscribers, HTTP routers and the schedule loop."""

from __future__ import annotations

from cairn.contracts.events import (
    DriftDetected,
    EndpointUpdated,
    GroundTruthRecorded,
    InferenceCaptured,
    ModelApprovalChanged,
    ModelPackageRegistered,
    MonitoringScheduleRequested,
)
from cairn.service import Service, lazy_service
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore

from services.monitor.config import MonitorSettings
from services.monitor.handlers import Monitor
from services.monitor.retrain import Retrainer
from services.monitor.routes import ROUTERS

LONG_POLL_MS = 900_000  # retraining reads and scores whole datasets


def create_service(
    settings: CairnSettings | None = None,
    store: ObjectStore | None = None,
    config: MonitorSettings | None = None,
) -> Service:
    """The monitor service: `Monitor` and `Retrainer` behind subscribers, HTTP and the loop."""
    config = config or MonitorSettings()
    service = Service("monitor", settings=settings, store=store)
    monitor = Monitor(service.store, service.publish, config, authority=service)
    retrainer = Retrainer(monitor)
    service.api.state.monitor = monitor
    service.api.state.retrainer = retrainer
    # One consumer group per handler: a member joining never stalls the other handlers on a
    # rebalance, and each keeps its own offsets.
    group = config.consumer_group
    service.on(MonitoringScheduleRequested, group=f"{group}.schedules")(
        monitor.on_schedule_requested
    )
    service.on(EndpointUpdated, group=f"{group}.baselines")(monitor.on_endpoint_updated)
    service.on(InferenceCaptured, group=f"{group}.captured")(monitor.on_inference_captured)
    service.on(GroundTruthRecorded, group=f"{group}.ground-truth")(monitor.on_ground_truth)
    service.on(DriftDetected, group=f"{group}.retrain", max_poll_interval_ms=LONG_POLL_MS)(
        retrainer.on_drift
    )
    service.on(
        ModelPackageRegistered, group=f"{group}.challenger", max_poll_interval_ms=LONG_POLL_MS
    )(retrainer.on_registered)
    service.on(ModelApprovalChanged, group=f"{group}.approvals")(retrainer.on_approval_changed)
    for router in ROUTERS:
        service.include_router(router)
    service.background("monitor-schedules", monitor.run_forever)
    return service


__getattr__ = lazy_service(create_service)
