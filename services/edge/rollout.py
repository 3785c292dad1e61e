"""The rollout rules (pure): stages start, complete on threshold + bake + gates, or fail.

`advance` takes a plan one step on from the devices' reported state; the service calls it on every
sweep inside a conditional write of the plan, then pushes the plan's targets to the devices and
publishes its outbox. A failed stage with `ROLLBACK_ON_FAILURE` sends exactly its own devices back
to the package each ran before; with `PAUSE` the plan waits for a person.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from cairn.contracts.edge_events import (
    EdgeDeploymentCompleted,
    EdgeDeploymentRolledBack,
    EdgeDeploymentStageCompleted,
    EdgeDeploymentStageFailed,
    EdgeDeploymentStageStarted,
)
from pydantic import BaseModel

from services.edge.domain import (
    DRIFT_MIN_SAMPLES,
    Desired,
    Device,
    DriftCheck,
    Plan,
    Stage,
)


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


def drift_due(plan: Plan, now: datetime, every_s: float) -> Stage | None:
    """The running stage whose drift gate wants a fresh measurement now: its bake is over, and
    its last measurement (too few rows then) is at least `every_s` old."""
    if plan.status != "InProgress" or plan.gate("drift") is None:
        return None
    stage = next((s for s in plan.stages if s.status == "InProgress"), None)
    if stage is None or stage.met_at is None or not stage.assigned:
        return None
    if (now - stage.met_at).total_seconds() < plan.bake_of(stage):
        return None
    if stage.drift is not None and (now - stage.drift.checked_at).total_seconds() < every_s:
        return None
    return stage


def advance(
    plan: Plan,
    devices: dict[str, Device],
    now: datetime,
    checks: Mapping[str, DriftCheck] | None = None,
) -> Plan:
    """The plan one step on: stages started, completed or failed; targets and outbox updated.

    `checks` holds fresh drift measurements by stage name (see `drift_due`).
    """
    plan = plan.model_copy(deep=True)
    for running in plan.stages:
        fresh = (checks or {}).get(running.name)
        if fresh is not None and running.status == "InProgress":
            running.drift = fresh
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
        if (now - stage.met_at).total_seconds() < plan.bake_of(stage):
            return False
        if not _drift_held(plan, stage, now):
            return False
        stage.status, stage.ended_at = "Completed", now
        _emit(plan, EdgeDeploymentStageCompleted, stage=stage, succeeded=len(ok))
        return True
    if _past_deadline(plan, stage, now):
        _fail(plan, stage, now, f"deadline: {len(ok)} of {total} devices run the package")
    return False


def _past_deadline(plan: Plan, stage: Stage, now: datetime) -> bool:
    return (now - (stage.started_at or now)).total_seconds() > plan.stage_deadline_s


def _drift_held(plan: Plan, stage: Stage, now: datetime) -> bool:
    """The drift gate at the end of the bake: enough rows and no feature drifted. Too few rows
    keep the stage baking until its deadline; drift fails it at once."""
    gate = plan.gate("drift")
    if gate is None or not stage.assigned:
        return True
    check, needed = stage.drift, gate.min_samples or DRIFT_MIN_SAMPLES
    if check is None or check.samples < needed:
        if _past_deadline(plan, stage, now):
            rows = check.samples if check else 0
            problem = f" ({check.problem})" if check and check.problem else ""
            reason = f"{rows} captured rows of the new package by the deadline ({needed} needed)"
            _fail(plan, stage, now, f"drift gate: {reason}{problem}")
        return False
    if check.drifted:
        _fail(plan, stage, now, drift_reason(check))
        return False
    return True


def drift_reason(check: DriftCheck) -> str:
    worst = sorted(check.drifted, key=lambda f: f.p_value)
    shown = ", ".join(
        f"{f.feature} ({f.test} {f.statistic:.3g}, p={f.p_value:.2g})" for f in worst[:5]
    )
    return (
        f"drift gate: {len(worst)} of {len(check.features)} features drifted in "
        f"{check.samples} rows from {', '.join(check.devices)}: {shown} "
        f"(p < {check.threshold:.2g} after Bonferroni)"
    )


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
