"""Restart policy: exponential backoff, capped, forgiven after a healthy stretch."""

from __future__ import annotations

from cairn.runtime.backoff import RestartPolicy, RestartTracker


def test_delay_doubles_and_is_capped() -> None:
    policy = RestartPolicy(initial_delay_s=0.5, factor=2.0, max_delay_s=5.0)

    assert [policy.delay_s(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert policy.delay_s(0) == 0.0


def test_crash_loop_backs_off_further_each_time() -> None:
    tracker = RestartTracker(RestartPolicy(initial_delay_s=1.0, max_delay_s=60.0))

    restart_times = [tracker.record_exit(now=100.0) for _ in range(4)]

    assert restart_times == [101.0, 102.0, 104.0, 108.0]


def test_staying_healthy_long_enough_resets_the_backoff() -> None:
    tracker = RestartTracker(RestartPolicy(initial_delay_s=1.0, reset_after_s=30.0))
    for _ in range(3):
        tracker.record_exit(now=0.0)

    tracker.mark_healthy(now=10.0)
    tracker.mark_healthy(now=45.0)

    assert tracker.consecutive_failures == 0
    assert tracker.record_exit(now=50.0) == 51.0


def test_short_healthy_stretch_does_not_reset_the_backoff() -> None:
    tracker = RestartTracker(RestartPolicy(initial_delay_s=1.0, reset_after_s=30.0))
    tracker.record_exit(now=0.0)
    tracker.record_exit(now=0.0)

    tracker.mark_healthy(now=10.0)
    tracker.mark_unhealthy()
    tracker.mark_healthy(now=35.0)

    assert tracker.record_exit(now=36.0) == 36.0 + 4.0
