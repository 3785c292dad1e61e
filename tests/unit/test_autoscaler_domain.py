"""Scaling decisions: activation, threshold, partition clamp, cooldown and scale to zero."""

from __future__ import annotations

import pytest

from services.autoscaler.domain import PoolMemory, decide, desired_replicas
from services.autoscaler.pools import WorkerPool


def pool(**overrides: object) -> WorkerPool:
    fields: dict[str, object] = {
        "name": "trainer-cpu",
        "module": "services.trainer",
        "group_id": "cairn.trainer",
        "event_types": ["TrainingJobRequested"],
        "lag_threshold": 10,
        "activation_lag_threshold": 5,
        "min_replicas": 0,
        "max_replicas": 4,
        "scale_down_cooldown_s": 3.0,
    }
    return WorkerPool.model_validate(fields | overrides)


class Clocked:
    """Feeds lag readings to `decide` at fake times, carrying the memory and current count."""

    def __init__(self, worker_pool: WorkerPool, current: int = 0) -> None:
        self.pool = worker_pool
        self.current = current
        self.memory = PoolMemory()

    def at(self, now: float, lag: int) -> int:
        decision, self.memory = decide(
            self.pool, lag=lag, current=self.current, now=now, memory=self.memory
        )
        self.current = decision.target
        return decision.target


@pytest.mark.parametrize(
    ("lag", "replicas"),
    [(0, 0), (5, 0), (6, 1), (10, 1), (11, 2), (40, 4), (200, 4)],
)
def test_desired_is_lag_over_threshold_above_activation(lag: int, replicas: int) -> None:
    assert desired_replicas(pool(), lag).replicas == replicas


def test_activation_only_applies_to_pools_that_may_reach_zero() -> None:
    assert desired_replicas(pool(min_replicas=1), 3).replicas == 1
    assert desired_replicas(pool(min_replicas=2), 0).replicas == 2


def test_max_is_clamped_to_the_partition_count() -> None:
    clamped = pool(max_replicas=50, min_replicas=12).clamped()
    assert clamped.max_replicas == 8  # TrainingJobRequested has 8 partitions
    assert clamped.min_replicas == 8
    assert desired_replicas(clamped, 10_000).replicas == 8


def test_min_above_max_is_refused() -> None:
    with pytest.raises(ValueError, match="min_replicas"):
        pool(min_replicas=5, max_replicas=2)


def test_scale_up_is_immediate() -> None:
    run = Clocked(pool())
    assert run.at(0.0, 200) == 4


def test_scale_down_waits_for_the_cooldown_since_desire_was_last_higher() -> None:
    run = Clocked(pool())
    assert run.at(0.0, 200) == 4
    assert run.at(1.0, 15) == 4  # desire 2, but 4 was wanted 1 s ago
    assert run.at(2.9, 15) == 4
    assert run.at(3.0, 15) == 2  # 3 s after the last desire for 4
    assert run.at(4.0, 0) == 2  # desire 0; 2 was wanted 1 s ago
    assert run.at(5.9, 0) == 2
    assert run.at(6.0, 0) == 0


def test_a_burst_during_the_cooldown_restarts_it() -> None:
    run = Clocked(pool())
    assert run.at(0.0, 40) == 4
    assert run.at(2.0, 0) == 4
    assert run.at(2.5, 40) == 4
    assert run.at(5.0, 0) == 4  # only 2.5 s since 4 was last wanted
    assert run.at(5.5, 0) == 0


def test_scale_to_zero_when_idle_and_back_up_on_activation() -> None:
    run = Clocked(pool(scale_down_cooldown_s=0.0), current=3)
    assert run.at(0.0, 5) == 0
    assert run.at(1.0, 6) == 1


def test_decision_reports_why() -> None:
    decision, _ = decide(pool(), lag=200, current=0, now=0.0, memory=PoolMemory())
    assert decision.changes
    assert "capped at max 4" in decision.reason
    decision, memory = decide(pool(), lag=0, current=4, now=0.0, memory=PoolMemory())
    assert decision.target == 4 and "holding 4" in decision.reason
    decision, _ = decide(pool(), lag=0, current=4, now=3.0, memory=memory)
    assert decision.target == 0 and "cooldown 3s passed" in decision.reason


def test_a_restarted_autoscaler_does_not_drop_running_workers_at_once() -> None:
    run = Clocked(pool(), current=3)
    assert run.at(100.0, 0) == 3
    assert run.at(103.0, 0) == 0
