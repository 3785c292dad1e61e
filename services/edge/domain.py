"""Fleets, devices, packages and deployment plans: the documents, and how a plan is written.

A plan's stages run in order (the rules are in `rollout`). A stage picks its devices (named, or a
cumulative percentage of the fleet) and completes once `success_threshold_pct` of them run the
package and every gate holds for its bake time (the stage's own, else the plan's `bake_s`). The
drift gate is judged at the end of the bake on the rows the stage's devices captured, measured by
the service and kept on the stage as a `DriftCheck`.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any, Literal

from cairn.contracts.edge_events import NAME_PATTERN
from cairn.contracts.envelope import utc_now
from cairn.errors import InvalidInput
from pydantic import BaseModel, ConfigDict, Field, ValidationError

FLEETS = "edge/fleets"
PACKAGES = "edge/packages"
PACKAGE_FILES = "edge/package-files"
PLANS = "edge/plans"
GateKind = Literal["error-rate", "latency", "drift"]
GATE_DEFAULTS: dict[str, float] = {"error-rate": 0.05, "latency": 100.0, "drift": 0.05}
DRIFT_MIN_SAMPLES = 100
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
    threshold: float = Field(
        ge=0, description="error-rate: a share; latency: p99 ms; drift: the p-value level."
    )
    min_samples: int | None = Field(
        default=None, ge=1, description="drift: captured rows the stage needs before it passes."
    )


class FeatureDrift(_Doc):
    feature: str
    test: Literal["ks", "chi2"]
    statistic: float
    p_value: float
    drifted: bool


class DriftCheck(_Doc):
    """The stage's captured rows of the new package against the model's training data."""

    checked_at: datetime
    samples: int = Field(
        ge=0, description="Rows captured on the new package since the stage began."
    )
    devices: list[str] = Field(default_factory=list, description="The devices the rows came from.")
    threshold: float = Field(description="The p-value level after Bonferroni across features.")
    features: list[FeatureDrift] = Field(default_factory=list)
    problem: str | None = Field(default=None, description="Why nothing could be measured.")

    @property
    def drifted(self) -> list[FeatureDrift]:
        return [feature for feature in self.features if feature.drifted]


class Stage(_Doc):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
    devices: list[str] | None = None
    percent: float | None = Field(default=None, gt=0, le=100)
    bake_s: float | None = Field(default=None, ge=0, description="Default: the plan's bake_s.")
    status: StageStatus = "Pending"
    assigned: list[str] = Field(default_factory=list)
    started_at: datetime | None = None
    met_at: datetime | None = None
    ended_at: datetime | None = None
    reason: str | None = None
    drift: DriftCheck | None = None


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

    def gate(self, kind: GateKind) -> Gate | None:
        return next((gate for gate in self.gates if gate.kind == kind), None)

    def bake_of(self, stage: Stage) -> float:
        return self.bake_s if stage.bake_s is None else stage.bake_s


_STAGE = re.compile(
    r"^(?P<name>[^=]+)=(?P<kind>devices|percent):(?P<value>[^:]+)(?::bake=(?P<bake>[^:]*))?$"
)


def parse_stage(text: str) -> Stage:
    """`canary=devices:d1,d2` or `wave1=percent:25`, either with `:bake=SECONDS` after it."""
    match = _STAGE.match(text.strip())
    if match is None:
        raise InvalidInput(
            f"stage {text!r} is not NAME=devices:D1,D2 or NAME=percent:P (then :bake=SECONDS)"
        )
    name, kind, value = match["name"], match["kind"], match["value"]
    bake = _number(match["bake"], f"stage {name}: bake") if match["bake"] is not None else None
    if bake is not None and bake < 0:
        raise InvalidInput(f"stage {name}: bake={bake:g} is negative")
    try:
        if kind == "devices":
            devices = [d.strip() for d in value.split(",") if d.strip()]
            return Stage(name=name, devices=devices, bake_s=bake)
        percent = _number(value.rstrip("%"), f"stage {name}: percentage")
        return Stage(name=name, percent=percent, bake_s=bake)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise InvalidInput(f"stage {text!r}: {where}: {problem['msg']}") from None


def parse_gate(text: str) -> Gate:
    """`error-rate[:0.05]`, `latency[:100]` (ms) or `drift[:P_VALUE[:MIN_SAMPLES]]`."""
    kind, _, rest = text.strip().partition(":")
    if kind not in GATE_DEFAULTS:
        raise InvalidInput(f"unknown gate {kind!r}: error-rate, latency or drift")
    value, _, samples = rest.partition(":")
    if samples and kind != "drift":
        raise InvalidInput(f"gate {text!r}: only the drift gate takes a sample count")
    threshold = _number(value.rstrip("%"), f"gate {text!r}") if value else GATE_DEFAULTS[kind]
    if kind == "drift" and not 0 < threshold < 1:
        raise InvalidInput(f"gate {text!r}: the drift p-value must be between 0 and 1")
    if threshold < 0:
        raise InvalidInput(f"gate {text!r}: the threshold is negative")
    if kind != "drift":
        return Gate(kind=kind, threshold=threshold)
    count = DRIFT_MIN_SAMPLES
    if samples:
        try:
            count = int(samples)
        except ValueError:
            raise InvalidInput(f"gate {text!r}: {samples!r} is not a sample count") from None
        if count < 1:
            raise InvalidInput(f"gate {text!r}: the drift gate needs at least one sample")
    return Gate(kind="drift", threshold=threshold, min_samples=count)


def _number(text: str, what: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise InvalidInput(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(number):
        raise InvalidInput(f"{what}: {text!r} is not a finite number")
    return number


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
    kinds = [gate.kind for gate in plan.gates]
    if len(set(kinds)) != len(kinds):
        raise InvalidInput("each gate may be given once", field="gates")
    drift = plan.gate("drift")
    if drift is not None and not 0 < drift.threshold < 1:
        raise InvalidInput("the drift gate's p-value must be between 0 and 1", field="gates")


def plan_key(name: str) -> str:
    return f"{name}.json"


def device_key(fleet: str, device: str) -> str:
    return f"{fleet}/devices/{device}.json"


def package_file_key(package: str, file: str) -> str:
    return f"{PACKAGE_FILES}/{package}/{file}"


def fleet_key(fleet: str) -> str:
    return f"{fleet}/fleet.json"
