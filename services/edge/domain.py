"""Fleets, devices, packages and deployment plans: the documents and the rollout rules (pure).

A plan's stages run in order. A stage picks its devices (named, or a cumulative percentage of the
fleet), sets their target to the plan's package, and completes once `success_threshold_pct` of
them run it and every gate holds for `bake_s`. Too many refusals, a missed deadline or a broken
gate fail it: with `ROLLBACK_ON_FAILURE` exactly that stage's devices go back to the package each
ran before and the plan stops; with `PAUSE` the plan waits for a person.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any, Literal

from cairn.contracts.edge_events import (
    NAME_PATTERN,
    EdgeDeploymentCompleted,
    EdgeDeploymentRolledBack,
    EdgeDeploymentStageCompleted,
    EdgeDeploymentStageFailed,
    EdgeDeploymentStageStarted,
)
from cairn.contracts.envelope import utc_now
from cairn.errors import InvalidInput
from pydantic import BaseModel, ConfigDict, Field

FLEETS = "edge/fleets"
PACKAGES = "edge/packages"
PACKAGE_FILES = "edge/package-files"
PLANS = "edge/plans"
GateKind = Literal["error-rate", "latency", "drift"]
GATE_DEFAULTS: dict[str, float] = {"error-rate": 0.05, "latency": 100.0}
StageStatus = Literal["Pending", "InProgress", "Completed", "Failed", "RolledBack"]
PlanStatus = Literal["InProgress", "Paused", "Completed", "Failed", "RolledBack"]
TERMINAL_PLAN = frozenset({"Completed", "Failed", "RolledBack"})


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Fleet(_Doc):
    fleet_name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    public_key: str
    sealed_signing_key: str = Field(description="The ed25519 seed, sealed with the platform key.")
    created_at: datetime = Field(default_factory=utc_now)
    created_by: str = ""


class Desired(_Doc):
    revision: int = 0
    package_name: str | None = None
    rollback: bool = False
    plan_name: str | None = None


class Device(_Doc):
    fleet_name: str
    device_name: str = Field(pattern=NAME_PATTERN)
    key_id: str
    registered_at: datetime = Field(default_factory=utc_now)
    desired: Desired = Field(default_factory=Desired)
    sent: list[str] = Field(default_factory=list, description="Every package it was ever told.")
    package_name: str | None = None
    revision: int = -1
    health: str = "Unknown"
    refusal: dict[str, Any] | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    request_count: int = 0
    error_count: int = 0
    agent_version: str | None = None
    last_heartbeat: datetime | None = None


class PackageDoc(_Doc):
    package_name: str
    model_package_group: str
    model_version: int
    build: int = 1
    target: str
    format: str
    status: Literal["InProgress", "Completed", "Failed"] = "InProgress"
    reason: str | None = None
    tolerance: float
    size_bytes: int = 0
    max_abs_error: float | None = None
    latency_us: float | None = None
    original_latency_us: float | None = None
    manifest: str | None = Field(default=None, description="edge-manifest.json, as signed.")
    created_at: datetime = Field(default_factory=utc_now)
    outcome_published: bool = False


class Gate(_Doc):
    kind: GateKind
    threshold: float = Field(ge=0)


class Stage(_Doc):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
    devices: list[str] | None = None
    percent: float | None = Field(default=None, gt=0, le=100)
    status: StageStatus = "Pending"
    assigned: list[str] = Field(default_factory=list)
    started_at: datetime | None = None
    met_at: datetime | None = None
    ended_at: datetime | None = None
    reason: str | None = None


class Plan(_Doc):
    plan_name: str = Field(pattern=NAME_PATTERN)
    fleet_name: str
    package_name: str
    stages: list[Stage] = Field(min_length=1)
    success_threshold_pct: float = Field(default=100.0, gt=0, le=100)
    max_failures: int | None = Field(default=0, ge=0)
    max_failures_pct: float | None = Field(default=None, ge=0, le=100)
    bake_s: float = Field(default=60.0, ge=0)
    stage_deadline_s: float = Field(default=900.0, gt=0)
    gates: list[Gate] = Field(default_factory=list)
    on_failure: Literal["ROLLBACK_ON_FAILURE", "PAUSE"] = "ROLLBACK_ON_FAILURE"
    status: PlanStatus = "InProgress"
    reason: str | None = None
    previous: dict[str, str | None] = Field(
        default_factory=dict, description="Device -> the package it ran before its stage."
    )
    targets: dict[str, Desired] = Field(default_factory=dict)
    outbox: list[dict[str, Any]] = Field(default_factory=list)
    created_by: str = ""
    created_at: datetime = Field(default_factory=utc_now)
    ended_at: datetime | None = None


_STAGE = re.compile(r"^(?P<name>[^=]+)=(?P<kind>devices|percent):(?P<value>.+)$")


def parse_stage(text: str) -> Stage:
    """`canary=devices:d1,d2` or `wave1=percent:25`."""
    match = _STAGE.match(text.strip())
    if match is None:
        raise InvalidInput(f"stage {text!r} is not NAME=devices:D1,D2 or NAME=percent:P")
    name, kind, value = match["name"], match["kind"], match["value"]
    if kind == "devices":
        devices = [d.strip() for d in value.split(",") if d.strip()]
        return Stage(name=name, devices=devices)
    try:
        percent = float(value.rstrip("%"))
    except ValueError:
        raise InvalidInput(f"stage {name}: {value!r} is not a percentage") from None
    return Stage(name=name, percent=percent)


def validate_plan(plan: Plan, fleet_devices: list[str]) -> None:
    """Named devices exist and appear once; percentages never decrease; gates are known."""
    seen: set[str] = set()
    last_percent = 0.0
    names = [stage.name for stage in plan.stages]
    if len(set(names)) != len(names):
        raise InvalidInput("stage names must be unique", field="stages")
    for index, stage in enumerate(plan.stages):
        field = f"stages[{index}]"
        if (stage.devices is None) == (stage.percent is None):
            raise InvalidInput(f"{field}: give devices or a percent", field=field)
        if stage.percent is not None:
            if stage.percent < last_percent:
                raise InvalidInput(
                    f"{field} ({stage.name}): {stage.percent:g}% is less than the "
                    f"{last_percent:g}% before it; stage percentages are cumulative and must "
                    "not decrease",
                    field=field,
                )
            last_percent = stage.percent
        for device in stage.devices or []:
            if device not in fleet_devices:
                raise InvalidInput(f"{field}: no device {device!r} in the fleet", field=field)
            if device in seen:
                raise InvalidInput(f"{field}: device {device!r} is in two stages", field=field)
            seen.add(device)
    for gate in plan.gates:
        if gate.kind == "drift":
            raise InvalidInput("the drift gate is not available yet; use error-rate or latency")


def plan_key(name: str) -> str:
    return f"{name}.json"


def device_key(fleet: str, device: str) -> str:
    return f"{fleet}/devices/{device}.json"


def package_file_key(package: str, file: str) -> str:
    return f"{PACKAGE_FILES}/{package}/{file}"


def fleet_key(fleet: str) -> str:
    return f"{fleet}/fleet.json"


# The rollout ----------------------------------------------------------------------------------


def device_outcome(plan: Plan, device: Device | None) -> Literal["ok", "failed", "pending"]:
    """Where one device of a stage stands with the plan's package."""
    if device is None:
        return "failed"
    if device.package_name == plan.package_name and device.health == "Healthy":
        return "ok"
    refusal = device.refusal or {}
    if (
        refusal.get("package_name") == plan.package_name
        and int(refusal.get("revision", -1)) >= device.desired.revision
    ):
        return "failed"
    return "pending"


def gate_violations(plan: Plan, devices: list[Device]) -> list[str]:
    found: list[str] = []
    for gate in plan.gates:
        for device in devices:
            if gate.kind == "error-rate" and device.request_count:
                rate = device.error_count / device.request_count
                if rate > gate.threshold:
                    found.append(
                        f"error-rate gate: {device.device_name} failed {rate:.0%} of "
                        f"{device.request_count} requests (> {gate.threshold:.0%})"
                    )
            if gate.kind == "latency" and (device.p99_ms or 0.0) > gate.threshold:
                found.append(
                    f"latency gate: {device.device_name} p99 {device.p99_ms:.2f} ms "
                    f"(> {gate.threshold:g} ms)"
                )
    return found


def advance(plan: Plan, devices: dict[str, Device], now: datetime) -> Plan:
    """The plan one step on: stages started, completed or failed; targets and outbox updated."""
    plan = plan.model_copy(deep=True)
    while plan.status == "InProgress":
        stage = next((s for s in plan.stages if s.status in ("Pending", "InProgress")), None)
        if stage is None:
            plan.status, plan.ended_at = "Completed", now
            _emit(plan, EdgeDeploymentCompleted, status="Completed")
            break
        if stage.status == "Pending":
            _start(plan, stage, sorted(devices), devices, now)
            continue
        if not _check(plan, stage, devices, now):
            break
    return plan


def _start(
    plan: Plan, stage: Stage, fleet: list[str], devices: dict[str, Device], now: datetime
) -> None:
    taken = {d for s in plan.stages for d in s.assigned}
    if stage.devices is not None:
        chosen = [d for d in stage.devices if d not in taken]
    else:
        want = math.ceil((stage.percent or 0) / 100 * len(fleet))
        free = [d for d in fleet if d not in taken]
        chosen = free[: max(0, want - len(taken))]
    stage.assigned, stage.status, stage.started_at = chosen, "InProgress", now
    for name in chosen:
        device = devices.get(name)
        plan.previous[name] = device.package_name if device else None
        plan.targets[name] = Desired(package_name=plan.package_name, plan_name=plan.plan_name)
    _emit(plan, EdgeDeploymentStageStarted, stage=stage)


def _check(plan: Plan, stage: Stage, devices: dict[str, Device], now: datetime) -> bool:
    """Complete or fail a running stage; True when the plan may move on at once."""
    outcomes = {name: device_outcome(plan, devices.get(name)) for name in stage.assigned}
    ok = [name for name, outcome in outcomes.items() if outcome == "ok"]
    failed = [name for name, outcome in outcomes.items() if outcome == "failed"]
    total = len(stage.assigned)
    allowed = plan.max_failures or 0
    if plan.max_failures_pct is not None:
        allowed = math.floor(plan.max_failures_pct / 100 * total)
    if len(failed) > allowed:
        reasons = "; ".join(f"{n}: {_refusal_reason(devices.get(n))}" for n in failed)
        _fail(plan, stage, now, f"{len(failed)} of {total} devices failed ({reasons})")
        return False
    if total == 0 or len(ok) * 100 >= plan.success_threshold_pct * total:
        violations = gate_violations(plan, [devices[n] for n in ok if n in devices])
        if violations:
            _fail(plan, stage, now, "; ".join(violations))
            return False
        stage.met_at = stage.met_at or now
        if (now - stage.met_at).total_seconds() >= plan.bake_s:
            stage.status, stage.ended_at = "Completed", now
            _emit(plan, EdgeDeploymentStageCompleted, stage=stage, succeeded=len(ok))
            return True
        return False
    started = stage.started_at or now
    if (now - started).total_seconds() > plan.stage_deadline_s:
        _fail(plan, stage, now, f"deadline: {len(ok)} of {total} devices run the package")
    return False


def _refusal_reason(device: Device | None) -> str:
    if device is None:
        return "deregistered"
    return str((device.refusal or {}).get("reason", "failed"))


def _fail(plan: Plan, stage: Stage, now: datetime, reason: str) -> None:
    stage.status, stage.ended_at, stage.reason = "Failed", now, reason
    _emit(plan, EdgeDeploymentStageFailed, stage=stage, reason=reason)
    if plan.on_failure == "PAUSE":
        plan.status, plan.reason = "Paused", f"stage {stage.name} failed: {reason}"
        return
    roll_back(plan, [stage], now, f"stage {stage.name} failed: {reason}")


def roll_back(plan: Plan, stages: list[Stage], now: datetime, reason: str) -> None:
    """Send exactly these stages' devices back to what each ran before; the plan ends."""
    for stage in stages:
        for name in stage.assigned:
            plan.targets[name] = Desired(
                package_name=plan.previous.get(name), rollback=True, plan_name=plan.plan_name
            )
        stage.status = "RolledBack"
        _emit(plan, EdgeDeploymentRolledBack, stage=stage, reason=reason)
    plan.status, plan.reason, plan.ended_at = "RolledBack", reason, now
    _emit(plan, EdgeDeploymentCompleted, status="RolledBack", reason=reason)


def _emit(plan: Plan, model: type[BaseModel], stage: Stage | None = None, **fields: Any) -> None:
    data: dict[str, Any] = {
        "plan_name": plan.plan_name,
        "fleet_name": plan.fleet_name,
        "package_name": plan.package_name,
        **fields,
    }
    if stage is not None:
        data |= {"stage_name": stage.name, "devices": list(stage.assigned)}
    plan.outbox.append({"type": model.__name__, "data": model(**data).model_dump(mode="json")})


def allowed_failures_text(plan: Plan) -> str:
    if plan.max_failures_pct is not None:
        return f"{plan.max_failures_pct:g}%"
    return str(plan.max_failures or 0)
