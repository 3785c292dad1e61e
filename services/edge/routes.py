"""The edge HTTP API: fleets and devices, packaging jobs, deployment plans, the device routes."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any, Literal

from cairn.auth import CurrentPrincipal, requires, set_audit_resource
from cairn.contracts.edge_events import NAME_PATTERN, EdgeFormat, EdgeTarget
from cairn.errors import InvalidInput
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from services.edge.agents import DeviceApi, Heartbeat
from services.edge.domain import (
    Device,
    PackageDoc,
    Plan,
    Stage,
    package_file_key,
    parse_gate,
    parse_stage,
)
from services.edge.handlers import EdgeHandlers

fleets = APIRouter(prefix="/fleets", tags=["fleets"])
packages = APIRouter(prefix="/packages", tags=["packages"])
deployments = APIRouter(prefix="/deployments", tags=["deployments"])
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


def get_handlers(request: Request) -> EdgeHandlers:
    handlers: EdgeHandlers = request.app.state.edge
    return handlers


Handlers = Annotated[EdgeHandlers, Depends(get_handlers)]


def get_devices(request: Request) -> DeviceApi:
    api: DeviceApi = request.app.state.edge_devices
    return api


Devices = Annotated[DeviceApi, Depends(get_devices)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class FleetBody(_Body):
    fleet_name: str = Field(pattern=NAME_PATTERN)
    description: str = Field(default="", max_length=500)


class DeviceBody(_Body):
    device_name: str = Field(pattern=NAME_PATTERN)


class PackageBody(_Body):
    model_package_group: str = Field(min_length=1, max_length=63)
    model_version: int = Field(ge=1)
    target: EdgeTarget = "linux-x86_64"
    format: EdgeFormat | None = None
    tolerance: float | None = Field(default=None, ge=0, le=1)


class PlanBody(_Body):
    plan_name: str = Field(pattern=NAME_PATTERN)
    fleet_name: str
    package_name: str
    stages: list[str] = Field(
        min_length=1,
        description="canary=devices:d1,d2 / wave=percent:25, either with :bake=SECONDS after it",
    )
    success_threshold_pct: float = Field(default=100.0, gt=0, le=100)
    max_failures: str = Field(default="0", description="A count (1) or a share (5%).")
    bake_s: float = Field(default=60.0, ge=0)
    stage_deadline_s: float = Field(default=900.0, gt=0)
    gates: list[str] = Field(
        default_factory=list,
        description="error-rate[:0.05], latency[:100] (p99 ms), drift[:0.05[:100]] (the p-value "
        "level, Bonferroni across inputs, and the captured rows a stage needs)",
    )
    on_failure: Literal["ROLLBACK_ON_FAILURE", "PAUSE"] = "ROLLBACK_ON_FAILURE"


class ReasonBody(_Body):
    reason: str = Field(default="", max_length=500)


# Fleets and devices --------------------------------------------------------------------------


@fleets.post("", status_code=201, dependencies=[requires("deploy", action="edge_fleet.create")])
async def create_fleet(
    body: FleetBody, handlers: Handlers, principal: CurrentPrincipal, request: Request
) -> dict[str, Any]:
    set_audit_resource(request, f"/fleets/{body.fleet_name}")
    fleet = await handlers.create_fleet(body.fleet_name, body.description, principal)
    return fleet.model_dump(mode="json", exclude={"sealed_signing_key"})


@fleets.get("", dependencies=[requires("read")])
async def list_fleets(handlers: Handlers) -> dict[str, Any]:
    found = await handlers.list_fleets()
    return {"fleets": [f.model_dump(mode="json", exclude={"sealed_signing_key"}) for f in found]}


@fleets.get("/{fleet_name}", dependencies=[requires("read")])
async def describe_fleet(fleet_name: str, handlers: Handlers) -> dict[str, Any]:
    fleet = await handlers.fleet(fleet_name)
    devices = await handlers.list_devices(fleet_name)
    return {
        **fleet.model_dump(mode="json", exclude={"sealed_signing_key"}),
        "devices": [device_summary(d) for d in devices],
    }


@fleets.post(
    "/{fleet_name}/devices",
    status_code=201,
    dependencies=[requires("deploy", action="edge_device.register")],
)
async def register_device(
    fleet_name: str, body: DeviceBody, handlers: Handlers, request: Request
) -> dict[str, Any]:
    set_audit_resource(request, f"/fleets/{fleet_name}/devices/{body.device_name}")
    registered = await handlers.register_device(fleet_name, body.device_name)
    return {
        "fleet_name": fleet_name,
        "device_name": body.device_name,
        "key_id": registered.device.key_id,
        "token": registered.token,
        "public_key": registered.public_key,
    }


@fleets.get("/{fleet_name}/devices", dependencies=[requires("read")])
async def list_devices(fleet_name: str, handlers: Handlers) -> dict[str, Any]:
    return {"devices": [device_summary(d) for d in await handlers.list_devices(fleet_name)]}


@fleets.get("/{fleet_name}/devices/{device_name}", dependencies=[requires("read")])
async def describe_device(fleet_name: str, device_name: str, handlers: Handlers) -> dict[str, Any]:
    return (await handlers.device(fleet_name, device_name)).model_dump(mode="json")


@fleets.delete(
    "/{fleet_name}/devices/{device_name}",
    dependencies=[requires("deploy", action="edge_device.deregister")],
)
async def deregister_device(
    fleet_name: str, device_name: str, handlers: Handlers
) -> dict[str, Any]:
    device = await handlers.deregister_device(fleet_name, device_name)
    return {**device_summary(device), "status": "Deregistered"}


# What devices call ---------------------------------------------------------------------------


@fleets.get("/{fleet_name}/devices/{device_name}/desired", dependencies=[requires("device")])
async def desired_state(
    fleet_name: str,
    device_name: str,
    devices: Devices,
    principal: CurrentPrincipal,
    known: int = Query(default=-1, ge=-1),
    wait_s: float = Query(default=0.0, ge=0, le=120),
) -> Response:
    await devices.authorise(principal, fleet_name, device_name, "edge_device.desired")
    found = await devices.desired(fleet_name, device_name, known, wait_s)
    if found is None:
        return Response(status_code=204)
    return _json_response(found)


@fleets.post(
    "/{fleet_name}/devices/{device_name}/heartbeat",
    dependencies=[requires("device", audit=False)],
)
async def heartbeat(
    fleet_name: str,
    device_name: str,
    body: Heartbeat,
    devices: Devices,
    principal: CurrentPrincipal,
) -> dict[str, Any]:
    await devices.authorise(principal, fleet_name, device_name, "edge_device.heartbeat")
    device = await devices.heartbeat(principal, fleet_name, device_name, body)
    return {"revision": device.desired.revision}


@fleets.post(
    "/{fleet_name}/devices/{device_name}/captures",
    status_code=201,
    dependencies=[requires("device", audit=False)],
)
async def upload_captures(
    fleet_name: str,
    device_name: str,
    request: Request,
    devices: Devices,
    principal: CurrentPrincipal,
    batch: str = Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"),
) -> dict[str, Any]:
    await devices.authorise(principal, fleet_name, device_name, "edge_device.captures")
    key = await devices.store_captures(fleet_name, device_name, batch, await request.body())
    return {"key": key}


@packages.get("/{package_name}/files/{file_name}", dependencies=[requires("device")])
async def download(
    package_name: str,
    file_name: str,
    request: Request,
    devices: Devices,
    principal: CurrentPrincipal,
) -> Response:
    """A package file; `Range: bytes=N-` resumes an interrupted download."""
    await devices.check_download(principal, package_name)
    store = devices.edge.store
    key = package_file_key(package_name, file_name)
    size = (await asyncio.to_thread(store.stat, key)).size
    start, end = 0, size
    header = request.headers.get("range")
    if header:
        match = _RANGE.match(header.strip())
        if match is None or int(match[1]) > size:
            return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
        start = int(match[1])
        end = min(int(match[2]) + 1, size) if match[2] else size
    data = await asyncio.to_thread(store.get_range, key, start, end) if end > start else b""
    headers = {"Accept-Ranges": "bytes"}
    if header:
        headers["Content-Range"] = f"bytes {start}-{max(end - 1, start)}/{size}"
    return Response(
        data,
        status_code=206 if header else 200,
        headers=headers,
        media_type="application/octet-stream",
    )


# Packages ------------------------------------------------------------------------------------


@packages.post("", status_code=202, dependencies=[requires("deploy", action="edge_package.create")])
async def create_package(body: PackageBody, handlers: Handlers, request: Request) -> dict[str, Any]:
    doc = await handlers.jobs.create_package(
        body.model_package_group, body.model_version, body.target, body.format, body.tolerance
    )
    set_audit_resource(request, f"/packages/{doc.package_name}")
    return package_summary(doc)


@packages.get("", dependencies=[requires("read")])
async def list_packages(handlers: Handlers) -> dict[str, Any]:
    return {"packages": [package_summary(p) for p in await handlers.jobs.list_packages()]}


@packages.get("/{package_name}", dependencies=[requires("read")])
async def describe_package(package_name: str, handlers: Handlers) -> dict[str, Any]:
    doc = await handlers.jobs.package(package_name)
    return {**package_summary(doc), "manifest": doc.manifest}


# Deployment plans ----------------------------------------------------------------------------


@deployments.post("", status_code=201, dependencies=[requires("deploy", action="edge_plan.create")])
async def create_plan(
    body: PlanBody, handlers: Handlers, principal: CurrentPrincipal, request: Request
) -> dict[str, Any]:
    set_audit_resource(request, f"/deployments/{body.plan_name}")
    plan = await handlers.create_plan(plan_of(body, principal.name))
    return plan_view(plan)


@deployments.get("", dependencies=[requires("read")])
async def list_plans(handlers: Handlers) -> dict[str, Any]:
    plans = sorted(await handlers.list_plans(), key=lambda p: p.created_at, reverse=True)
    return {"deployments": [plan_view(p, stages=False) for p in plans]}


@deployments.get("/{plan_name}", dependencies=[requires("read")])
async def describe_plan(plan_name: str, handlers: Handlers) -> dict[str, Any]:
    return plan_view(await handlers.plan(plan_name))


@deployments.post("/{plan_name}/pause", dependencies=[requires("deploy", action="edge_plan.pause")])
async def pause_plan(plan_name: str, handlers: Handlers) -> dict[str, Any]:
    return plan_view(await handlers.pause(plan_name))


@deployments.post(
    "/{plan_name}/resume", dependencies=[requires("deploy", action="edge_plan.resume")]
)
async def resume_plan(plan_name: str, handlers: Handlers) -> dict[str, Any]:
    return plan_view(await handlers.resume(plan_name))


@deployments.post(
    "/{plan_name}/rollback", dependencies=[requires("deploy", action="edge_plan.rollback")]
)
async def rollback_plan(
    plan_name: str, handlers: Handlers, principal: CurrentPrincipal, body: ReasonBody | None = None
) -> dict[str, Any]:
    reason = (body.reason if body else "") or f"rolled back by {principal.name}"
    return plan_view(await handlers.rollback(plan_name, reason))


# Views ---------------------------------------------------------------------------------------


def plan_of(body: PlanBody, created_by: str) -> Plan:
    stages: list[Stage] = [parse_stage(text) for text in body.stages]
    failures = body.max_failures.strip()
    count, pct = None, None
    try:
        if failures.endswith("%"):
            pct = float(failures[:-1])
        else:
            count = int(failures)
    except ValueError:
        raise InvalidInput(f"max_failures {failures!r} is a count (1) or a share (5%)") from None
    gates = [parse_gate(text) for text in body.gates]
    try:
        return Plan(
            plan_name=body.plan_name,
            fleet_name=body.fleet_name,
            package_name=body.package_name,
            stages=stages,
            success_threshold_pct=body.success_threshold_pct,
            max_failures=count,
            max_failures_pct=pct,
            bake_s=body.bake_s,
            stage_deadline_s=body.stage_deadline_s,
            gates=gates,
            on_failure=body.on_failure,
            created_by=created_by,
        )
    except ValueError as error:
        raise InvalidInput(str(error)) from None


def device_summary(device: Device) -> dict[str, Any]:
    return device.model_dump(mode="json", exclude={"sent", "refusal"}) | {"refusal": device.refusal}


def package_summary(doc: PackageDoc) -> dict[str, Any]:
    return doc.model_dump(mode="json", exclude={"manifest", "outcome_published"})


def plan_view(plan: Plan, *, stages: bool = True) -> dict[str, Any]:
    exclude = {"outbox", "targets", "previous"} | (set() if stages else {"stages"})
    return plan.model_dump(mode="json", exclude=exclude)


def _json_response(document: dict[str, Any]) -> Response:
    import json

    return Response(json.dumps(document), media_type="application/json")
