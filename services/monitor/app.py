"""Wiring of the monitor: subscribers, HTTP routes and the schedule loop's lifespan task."""

from __future__ import annotations

import asyncio
from typing import Literal

from cairn.contracts.envelope import Envelope
from cairn.contracts.events import (
    DriftDetected,
    EndpointUpdated,
    GroundTruthRecorded,
    InferenceCaptured,
    ModelApprovalChanged,
    ModelPackageRegistered,
    MonitoringScheduleRequested,
)
from cairn.http import require_api_key
from cairn.service import Service, lazy_service
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore
from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field

from services.monitor.baseline import Statistics
from services.monitor.config import MonitorSettings
from services.monitor.domain import RetrainPolicy, RetrainPolicyBody, RunSummary, Schedule
from services.monitor.handlers import Monitor, baseline_prefix
from services.monitor.retrain import Retrainer


class ScheduleBody(BaseModel):
    """POST /schedules/{endpoint}: the schedule (as MonitoringScheduleRequested, without action)."""

    interval_s: float = Field(default=3600.0, ge=1)
    drift_p_value: float = Field(default=0.05, gt=0, lt=1)
    correction: Literal["bonferroni", "fdr"] = "bonferroni"
    min_rows: int = Field(default=100, ge=1)


def create_service(
    settings: CairnSettings | None = None,
    store: ObjectStore | None = None,
    config: MonitorSettings | None = None,
) -> Service:
    """The monitor service: `Monitor` and `Retrainer` behind subscribers, HTTP and the loop."""
    config = config or MonitorSettings()
    service = Service("monitor", settings=settings, store=store)
    monitor = Monitor(service.store, service.publish, config)
    retrainer = Retrainer(monitor)
    service.api.state.monitor = monitor
    service.api.state.retrainer = retrainer
    # One consumer group per handler: a member joining never stalls the other handlers on a
    # rebalance, and each keeps its own offsets.
    group = config.consumer_group

    @service.on(MonitoringScheduleRequested, group=f"{group}.schedules")
    async def schedule_requested(envelope: Envelope[MonitoringScheduleRequested]) -> None:
        await monitor.on_schedule_requested(envelope)

    @service.on(EndpointUpdated, group=f"{group}.baselines")
    async def endpoint_updated(envelope: Envelope[EndpointUpdated]) -> None:
        await monitor.on_endpoint_updated(envelope)

    @service.on(InferenceCaptured, group=f"{group}.captured")
    async def inference_captured(envelope: Envelope[InferenceCaptured]) -> None:
        monitor.on_inference_captured(envelope.data)

    @service.on(GroundTruthRecorded, group=f"{group}.ground-truth")
    async def ground_truth(envelope: Envelope[GroundTruthRecorded]) -> None:
        await monitor.on_ground_truth(envelope)

    @service.on(DriftDetected, group=f"{group}.retrain", max_poll_interval_ms=900_000)
    async def drift_detected(envelope: Envelope[DriftDetected]) -> None:
        await retrainer.on_drift(envelope)

    @service.on(ModelPackageRegistered, group=f"{group}.challenger", max_poll_interval_ms=900_000)
    async def model_registered(envelope: Envelope[ModelPackageRegistered]) -> None:
        await retrainer.on_registered(envelope)

    @service.on(ModelApprovalChanged, group=f"{group}.approvals")
    async def approval_changed(envelope: Envelope[ModelApprovalChanged]) -> None:
        await retrainer.on_approval_changed(envelope)

    routes = APIRouter(tags=["monitor"], dependencies=[Depends(require_api_key)])

    @routes.get("/schedules")
    async def list_schedules() -> list[Schedule]:
        return await asyncio.to_thread(monitor.list_schedules)

    @routes.post("/schedules/{endpoint}", status_code=201)
    async def put_schedule(endpoint: str, body: ScheduleBody) -> Schedule | None:
        request = MonitoringScheduleRequested(endpoint_name=endpoint, **body.model_dump())
        return await asyncio.to_thread(monitor.apply_schedule, request)

    @routes.get("/schedules/{endpoint}")
    async def get_schedule(endpoint: str) -> Schedule:
        return await asyncio.to_thread(monitor.get_schedule, endpoint)

    @routes.delete("/schedules/{endpoint}", status_code=204)
    async def delete_schedule(endpoint: str) -> Response:
        await asyncio.to_thread(monitor.get_schedule, endpoint)  # 404 when there is none
        request = MonitoringScheduleRequested(endpoint_name=endpoint, action="delete")
        await asyncio.to_thread(monitor.apply_schedule, request)
        return Response(status_code=204)

    @routes.post("/schedules/{endpoint}/run")
    async def run_now(endpoint: str) -> RunSummary | None:
        await asyncio.to_thread(monitor.get_schedule, endpoint)
        return await monitor.run_endpoint(endpoint)

    @routes.get("/schedules/{endpoint}/runs")
    async def list_runs(endpoint: str) -> list[RunSummary]:
        return await asyncio.to_thread(monitor.list_runs, endpoint)

    @routes.get("/baselines/{group}/{version}")
    async def get_baseline(group: str, version: int) -> Statistics:
        raw = await asyncio.to_thread(
            service.store.get_bytes, baseline_prefix(group, version) + "statistics.json"
        )
        return Statistics.model_validate_json(raw)

    @routes.get("/retrain-policies")
    async def list_policies() -> list[RetrainPolicy]:
        return await asyncio.to_thread(retrainer.list_policies)

    @routes.put("/retrain-policies/{group}")
    async def put_policy(group: str, body: RetrainPolicyBody) -> RetrainPolicy:
        return await retrainer.put_policy(group, body)

    @routes.get("/retrain-policies/{group}")
    async def get_policy(group: str) -> RetrainPolicy:
        return await asyncio.to_thread(retrainer.get_policy, group)

    @routes.delete("/retrain-policies/{group}", status_code=204)
    async def delete_policy(group: str) -> Response:
        await asyncio.to_thread(retrainer.delete_policy, group)
        return Response(status_code=204)

    service.api.include_router(routes)
    service.background("monitor-schedules", monitor.run_forever)
    return service


__getattr__ = lazy_service(create_service)
