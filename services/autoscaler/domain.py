"""Pure scaling rules, KEDA-style: replicas from lag, activation, bounds, scale-down cooldown.

desired = ceil(lag / lag_threshold), 0 when a pool with min 0 is not active (lag at or below
`activation_lag_threshold`), clamped to [min, max]. Up is immediate. Down follows the highest
desire seen within the cooldown window (Kubernetes' scale-down stabilization), so the pool only
shrinks once the cooldown has passed since the desired count was last higher.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from services.autoscaler.pools import WorkerPool


@dataclass(frozen=True)
class Desire:
    """What the lag alone asks for, and why."""

    replicas: int
    reason: str


@dataclass(frozen=True)
class PoolMemory:
    """Recent desires `(monotonic time, replicas)` within the cooldown window."""

    recent: tuple[tuple[float, int], ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Decision:
    """One polling round's outcome for one pool."""

    pool: str
    lag: int
    current: int
    desired: int
    target: int
    reason: str
    decided_at: float

    @property
    def changes(self) -> bool:
        return self.target != self.current


def desired_replicas(pool: WorkerPool, lag: int) -> Desire:
    """Replicas the lag asks for within the pool's bounds (no cooldown applied)."""
    if pool.min_replicas == 0 and lag <= pool.activation_lag_threshold:
        return Desire(0, f"lag {lag} <= activation {pool.activation_lag_threshold}: idle")
    wanted = math.ceil(lag / pool.lag_threshold)
    reason = f"lag {lag} / threshold {pool.lag_threshold} -> {wanted}"
    if wanted > pool.max_replicas:
        return Desire(pool.max_replicas, f"{reason}, capped at max {pool.max_replicas}")
    if wanted < pool.min_replicas:
        return Desire(pool.min_replicas, f"{reason}, raised to min {pool.min_replicas}")
    return Desire(wanted, reason)


def decide(
    pool: WorkerPool, *, lag: int, current: int, now: float, memory: PoolMemory
) -> tuple[Decision, PoolMemory]:
    """The target replica count for this round and the memory for the next one."""
    desire = desired_replicas(pool, lag)
    # No memory (a restarted autoscaler): the replicas found running were wanted until now.
    seen = memory.recent or ((now, current),)
    window = [(at, replicas) for at, replicas in seen if now - at < pool.scale_down_cooldown_s]
    window.append((now, desire.replicas))
    remembered = PoolMemory(tuple(window))
    if desire.replicas >= current:
        target = desire.replicas
        reason = desire.reason if target > current else f"{desire.reason}: steady"
    else:
        held = max(replicas for _, replicas in window)
        target = min(current, held)
        if target == desire.replicas:
            reason = f"{desire.reason}: cooldown {pool.scale_down_cooldown_s:g}s passed"
        else:
            reason = (
                f"{desire.reason}: holding {target} for the {pool.scale_down_cooldown_s:g}s "
                "cooldown"
            )
    decision = Decision(
        pool=pool.name,
        lag=lag,
        current=current,
        desired=desire.replicas,
        target=target,
        reason=reason,
        decided_at=now,
    )
    return decision, remembered
