"""The monitor's HTTP API: schedules and their runs, baselines, retraining policies."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from cairn.auth import requires
from cairn.contracts.events import MonitoringScheduleRequested
from cairn.errors import InvalidInput
from fastapi import APIRouter, Depends, Request, Response
from fastapi import Path as PathParam
from pydantic import Field, ValidationError

from services.monitor.baseline import Statistics
from services.monitor.domain import (
    MAX_INTERVAL_S,
    RetrainPolicy,
    RetrainPolicyBody,
    RunSummary,
    Schedule,
    Stored,
)
from services.monitor.handlers import Monitor
from services.monitor.retrain import Retrainer
from services.monitor.runs import RunReport


class ScheduleBody(Stored):
    """POST /schedules/{endpoint}: the schedule (as MonitoringScheduleRequested, without action)."""

    interval_s: float = Field(default=3600.0, ge=1, le=MAX_INTERVAL_S)
    drift_p_value: float = Field(default=0.05, gt=0, lt=1)
    correction: Literal["bonferroni", "fdr"] = "bonferroni"
    min_rows: int = Field(default=100, ge=1)


def get_monitor(request: Request) -> Monitor:
    monitor: Monitor = request.app.state.monitor
    return monitor


def get_retrainer(request: Request) -> Retrainer:
    retrainer: Retrainer = request.app.state.retrainer
    return retrainer


MonitorDep = Annotated[Monitor, Depends(get_monitor)]
RetrainerDep = Annotated[Retrainer, Depends(get_retrainer)]

READ = [requires("read")]

schedules = APIRouter(prefix="/schedules", tags=["monitor"])
baselines = APIRouter(prefix="/baselines", tags=["monitor"])
policies = APIRouter(prefix="/retrain-policies", tags=["monitor"])
ROUTERS = (schedules, baselines, policies)


@schedules.get("", dependencies=READ)
async def list_schedules(monitor: MonitorDep) -> list[Schedule]:
    return await asyncio.to_thread(monitor.list_schedules)


@schedules.post(
    "/{endpoint}",
    status_code=201,
    dependencies=[requires("deploy", action="monitoring_schedule.create")],
)
async def put_schedule(endpoint: str, body: ScheduleBody, monitor: MonitorDep) -> Schedule | None:
    try:
        request = MonitoringScheduleRequested(endpoint_name=endpoint, **body.model_dump())
    except ValidationError as exc:  # the path's endpoint name: the body was validated already
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise InvalidInput(f"invalid request: {problems}", endpoint_name=endpoint) from exc
    return await asyncio.to_thread(monitor.apply_schedule, request)


@schedules.get("/{endpoint}", dependencies=READ)
async def get_schedule(endpoint: str, monitor: MonitorDep) -> Schedule:
    return await asyncio.to_thread(monitor.get_schedule, endpoint)


@schedules.delete(
    "/{endpoint}",
    status_code=204,
    dependencies=[requires("deploy", action="monitoring_schedule.delete")],
)
async def delete_schedule(endpoint: str, monitor: MonitorDep) -> Response:
    await asyncio.to_thread(monitor.get_schedule, endpoint)  # 404 when there is none
    request = MonitoringScheduleRequested(endpoint_name=endpoint, action="delete")
    await asyncio.to_thread(monitor.apply_schedule, request)
    return Response(status_code=204)


@schedules.post(
    "/{endpoint}/run", dependencies=[requires("deploy", action="monitoring_schedule.run")]
)
async def run_now(endpoint: str, monitor: MonitorDep) -> RunSummary | None:
    await asyncio.to_thread(monitor.get_schedule, endpoint)  # 404 when there is none
    return await monitor.run_endpoint(endpoint)


@schedules.get("/{endpoint}/runs", dependencies=READ)
async def list_runs(endpoint: str, monitor: MonitorDep) -> list[RunSummary]:
    return await asyncio.to_thread(monitor.list_runs, endpoint)


@schedules.get("/{endpoint}/runs/{run_id}", dependencies=READ)
async def get_run_report(
    endpoint: Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")],
    run_id: Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")],
    monitor: MonitorDep,
) -> RunReport:
    """One run's whole report: per-feature tests and reference vs current distributions."""
    return await asyncio.to_thread(monitor.report, endpoint, run_id)


@baselines.get("/{group}/{version}", dependencies=READ)
async def get_baseline(group: str, version: int, monitor: MonitorDep) -> Statistics:
    return await asyncio.to_thread(monitor.statistics, group, version)


@policies.get("", dependencies=READ)
async def list_policies(retrainer: RetrainerDep) -> list[RetrainPolicy]:
    return await asyncio.to_thread(retrainer.list_policies)


@policies.put("/{group}", dependencies=[requires("deploy", action="retrain_policy.put")])
async def put_policy(group: str, body: RetrainPolicyBody, retrainer: RetrainerDep) -> RetrainPolicy:
    return await retrainer.put_policy(group, body)


@policies.get("/{group}", dependencies=READ)
async def get_policy(group: str, retrainer: RetrainerDep) -> RetrainPolicy:
    return await asyncio.to_thread(retrainer.get_policy, group)


@policies.delete(
    "/{group}",
    status_code=204,
    dependencies=[requires("deploy", action="retrain_policy.delete")],
)
async def delete_policy(group: str, retrainer: RetrainerDep) -> Response:
    await asyncio.to_thread(retrainer.delete_policy, group)
    return Response(status_code=204)
