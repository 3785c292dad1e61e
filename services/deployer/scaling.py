"""Target tracking per variant, as Application Auto Scaling does it for SageMaker variants.

A variant's `ScalingPolicy` (stored in its endpoint document) names a target
InvocationsPerInstance (invocations a minute per instance, SageMaker's predefined metric),
bounds and cooldowns. The measured rate comes from the gateway's `EndpointMetricsReported`
windows (every gateway process reports its own; they add up). These functions are pure: the
deployer's loop (`autoscaling.py`) feeds them readings and stores what they decide.

- desired = ceil(invocations a minute / target), clamped to [min_capacity, max_capacity];
- at 0 instances any invocation (answered by a cold start) asks for max(1, min_capacity);
- scale-out waits `scale_out_cooldown_s` after the last scale-out; scale-in waits
  `scale_in_cooldown_s` after the last activity of either kind, and only once the readings have
  covered a whole evaluation window (a restarted deployer has no history: it must not read
  "no traffic" from it).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

MAX_ACTIVITIES = 50


class ScalingPolicy(BaseModel):
    """`PUT /endpoints/{name}/variants/{variant}/scaling-policy`: a target-tracking policy.

    min_capacity 0 makes the variant serverless: idle, it scales to zero instances (its model is
    unloaded) and the next request cold-starts it.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    target_invocations_per_instance: float = Field(
        gt=0, description="Invocations a minute per instance to hold (SageMaker's metric)."
    )
    min_capacity: int = Field(default=1, ge=0, description="0: scale to zero when idle.")
    max_capacity: int = Field(default=1, ge=1)
    scale_in_cooldown_s: float = Field(default=300.0, ge=0)
    scale_out_cooldown_s: float = Field(default=60.0, ge=0)

    @field_validator("max_capacity")
    @classmethod
    def _bounds(cls, value: int, info: ValidationInfo) -> int:
        """On max_capacity, so a refusal names the field (min_capacity is validated first)."""
        low = info.data.get("min_capacity")
        if low is not None and low > value:
            raise ValueError(f"max_capacity {value} is below min_capacity {low}")
        return value


class ScalingActivity(BaseModel):
    """One change of a variant's desired instance count and why (DescribeScalingActivities)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    variant_name: str
    from_instances: int = Field(ge=0)
    to_instances: int = Field(ge=0)
    invocations_per_instance: float = Field(ge=0)
    reason: str
    at: datetime
    revision: int = Field(ge=1)


@dataclass(frozen=True)
class Decision:
    """What one evaluation asks for; `target == current` means no change."""

    current: int
    target: int
    invocations_per_instance: float
    reason: str

    @property
    def changes(self) -> bool:
        return self.target != self.current


@dataclass(frozen=True)
class Reading:
    """A variant's traffic over the readings window: invocations a minute, and how much of the
    window the readings cover (seconds)."""

    per_minute: float
    covered_s: float


def decide(
    policy: ScalingPolicy,
    *,
    current: int,
    reading: Reading,
    window_s: float,
    since_scale_out_s: float | None,
    since_activity_s: float | None,
) -> Decision:
    """The desired instance count of a variant now; `since_*` are None when none happened."""
    per_instance = reading.per_minute / max(current, 1)
    measured = f"{per_instance:.1f} invocations/min per instance (target {_n(policy)})"
    if current == 0 and reading.per_minute > 0:
        wanted = max(1, policy.min_capacity)
        reason = f"invocations while at 0 instances (a cold start): {measured}"
    else:
        wanted = math.ceil(reading.per_minute / policy.target_invocations_per_instance - 1e-9)
        reason = measured
    bounded = min(max(wanted, policy.min_capacity), policy.max_capacity)
    if bounded != wanted:
        reason += f", bounded to [{policy.min_capacity}, {policy.max_capacity}]"
    if bounded > current:
        if since_scale_out_s is not None and since_scale_out_s < policy.scale_out_cooldown_s:
            return _hold(current, per_instance, f"{reason}: in scale-out cooldown")
        return Decision(current, bounded, per_instance, f"{reason}: scale out to {bounded}")
    if bounded < current:
        if reading.covered_s < window_s:
            return _hold(current, per_instance, f"{reason}: too few readings to scale in")
        if since_activity_s is not None and since_activity_s < policy.scale_in_cooldown_s:
            return _hold(current, per_instance, f"{reason}: in scale-in cooldown")
        return Decision(current, bounded, per_instance, f"{reason}: scale in to {bounded}")
    return _hold(current, per_instance, f"{reason}: steady")


def _n(policy: ScalingPolicy) -> str:
    return f"{policy.target_invocations_per_instance:g}"


def _hold(current: int, per_instance: float, reason: str) -> Decision:
    return Decision(current, current, per_instance, reason)


class TrafficWindow:
    """Invocations a variant was reported to answer, by arrival (monotonic seconds)."""

    def __init__(self, window_s: float, started_at: float) -> None:
        self.window_s = window_s
        self.started_at = started_at
        self._reports: deque[tuple[float, int]] = deque()

    def add(self, at: float, requests: int) -> None:
        self._reports.append((at, requests))

    def reading(self, now: float) -> Reading:
        """Invocations a minute over the last `window_s`, and how much of it this deployer saw."""
        while self._reports and now - self._reports[0][0] > self.window_s:
            self._reports.popleft()
        covered = min(self.window_s, now - self.started_at)
        total = sum(requests for _, requests in self._reports)
        return Reading(total * 60.0 / self.window_s, covered)


def recorded(activities: list[ScalingActivity], new: ScalingActivity) -> list[ScalingActivity]:
    """The endpoint's history with `new` appended, the oldest dropped past MAX_ACTIVITIES."""
    return [*activities, new][-MAX_ACTIVITIES:]
