"""Edge fleet events (owner: the edge service).

Fleets and devices are registered over the edge service's API; packaging jobs compile a registered
model for a target and sign it; deployment plans roll a package out to a fleet in stages. Heartbeats
are state and metrics, never one event per beat. The devices' sampled inputs and outputs are
declared below (`EdgeCaptureRecord`), so the monitor can check edge drift from them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cairn.contracts.catalogue import event
from cairn.contracts.state import CaptureRecord, state_contract

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,30}$"
EdgeFormat = Literal["treelite", "onnx", "native"]
EdgeTarget = Literal["linux-x86_64", "linux-aarch64"]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


@event(owner="edge", key="fleet_name")
class EdgeFleetCreated(_Data):
    """A fleet exists, with its own ed25519 signing key (the public half is `public_key`)."""

    fleet_name: str = Field(pattern=NAME_PATTERN)
    public_key: str = Field(description="The fleet's ed25519 public key, base64 (raw 32 bytes).")
    created_by: str = ""


@event(owner="edge", key="fleet_name")
class EdgeDeviceRegistered(_Data):
    """A device joined a fleet with its own credential (scope `device`, bound to the fleet)."""

    fleet_name: str
    device_name: str
    key_id: str


@event(owner="edge", key="package_name")
class EdgePackagingJobCompleted(_Data):
    """A model was compiled (or exported) for a target, checked against the original, signed."""

    package_name: str
    model_package_group: str
    model_version: int = Field(ge=1)
    target: EdgeTarget
    format: EdgeFormat
    size_bytes: int = Field(ge=0)
    max_abs_error: float = Field(ge=0, description="Worst difference on the held-out rows.")
    latency_us: float = Field(ge=0, description="Single-row latency of the package.")
    original_latency_us: float = Field(ge=0, description="Single-row latency of the original.")


@event(owner="edge", key="package_name")
class EdgePackagingJobFailed(_Data):
    """A packaging job ended without a usable package; `reason` says why."""

    package_name: str
    model_package_group: str
    model_version: int = Field(ge=1)
    reason: str


class _Stage(_Data):
    plan_name: str
    fleet_name: str
    package_name: str
    stage_name: str
    devices: list[str] = Field(default_factory=list)


@event(owner="edge", key="plan_name")
class EdgeDeploymentStageStarted(_Stage):
    """A stage's devices were told to install the plan's package."""


@event(owner="edge", key="plan_name")
class EdgeDeploymentStageCompleted(_Stage):
    """A stage met its success threshold and its gates held for the bake time."""

    succeeded: int = Field(ge=0)


@event(owner="edge", key="plan_name")
class EdgeDeploymentStageFailed(_Stage):
    """A stage missed its threshold or deadline, or a gate failed; `reason` says which."""

    reason: str


@event(owner="edge", key="plan_name")
class EdgeDeploymentRolledBack(_Stage):
    """The listed devices were told to go back to the package each ran before."""

    reason: str


@event(owner="edge", key="plan_name")
class EdgeDeploymentCompleted(_Data):
    """A plan ended: every stage completed, or it was rolled back or stopped."""

    plan_name: str
    fleet_name: str
    package_name: str
    status: Literal["Completed", "RolledBack", "Failed"]
    reason: str = ""


@state_contract(owner="edge", prefix="edge/captures/", key="{0}/{1}/{2:%Y/%m/%d/%H}/{3}.jsonl")
class EdgeCaptureRecord(CaptureRecord):
    """One sampled edge inference, in the gateway's capture layout (one JSON line of a file).

    Files: `edge/captures/<fleet>/<device>/yyyy/mm/dd/hh/<batch>.jsonl`; `eventMetadata` names the
    device and the package that answered.
    """
