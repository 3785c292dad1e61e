"""When to restart a dead service: exponential backoff, forgiven once it stays healthy a while."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RestartPolicy:
    """Delay before the n-th consecutive restart: initial * factor**(n-1), capped at max."""

    initial_delay_s: float = 0.5
    factor: float = 2.0
    max_delay_s: float = 30.0
    reset_after_s: float = 30.0

    def delay_s(self, consecutive_failures: int) -> float:
        """Seconds to wait before restarting after this many failures in a row (>= 1)."""
        if consecutive_failures <= 0:
            return 0.0
        delay = self.initial_delay_s * self.factor ** (consecutive_failures - 1)
        return float(min(delay, self.max_delay_s))


@dataclass
class RestartTracker:
    """Per-service failure count; a long enough healthy stretch resets it."""

    policy: RestartPolicy
    consecutive_failures: int = 0
    healthy_since: float | None = None

    def mark_healthy(self, now: float) -> None:
        if self.healthy_since is None:
            self.healthy_since = now
        elif now - self.healthy_since >= self.policy.reset_after_s:
            self.consecutive_failures = 0

    def mark_unhealthy(self) -> None:
        self.healthy_since = None

    def record_exit(self, now: float) -> float:
        """Count a crash and return the monotonic time at which to restart."""
        if self.healthy_since is not None and now - self.healthy_since >= self.policy.reset_after_s:
            self.consecutive_failures = 0
        self.healthy_since = None
        self.consecutive_failures += 1
        return now + self.policy.delay_s(self.consecutive_failures)
