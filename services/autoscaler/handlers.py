"""The polling loop: measure each pool's lag, decide, scale the backend, say what changed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from cairn.contracts.events import WorkerPoolScaled
from cairn.errors import CairnError
from cairn.pools import WorkerPool

from services.autoscaler.backends.base import WorkerBackend
from services.autoscaler.domain import Decision, PoolMemory, decide

log = logging.getLogger("cairn.autoscaler")

LagReader = Callable[[WorkerPool], Awaitable[int]]
Publish = Callable[[WorkerPoolScaled], Awaitable[Any]]


@dataclass
class PoolStatus:
    """What `GET /pools` shows for one pool."""

    pool: WorkerPool
    memory: PoolMemory
    current: int | None = None
    lag: int | None = None
    last_decision: Decision | None = None
    last_change: Decision | None = None
    last_change_at: datetime | None = None
    error: str | None = None

    def view(self) -> dict[str, Any]:
        decision = self.last_decision
        return {
            "pool": self.pool.name,
            "module": self.pool.module,
            "group_id": self.pool.group_id,
            "topics": self.pool.topics(),
            "current": self.current,
            "desired": decision.desired if decision else None,
            "target": decision.target if decision else None,
            "lag": self.lag,
            "min_replicas": self.pool.min_replicas,
            "max_replicas": self.pool.max_replicas,
            "lag_threshold": self.pool.lag_threshold,
            "activation_lag_threshold": self.pool.activation_lag_threshold,
            "polling_interval_s": self.pool.polling_interval_s,
            "scale_down_cooldown_s": self.pool.scale_down_cooldown_s,
            "last_decision": _decision_view(decision),
            "last_change": _decision_view(self.last_change),
            "last_change_at": self.last_change_at.isoformat() if self.last_change_at else None,
            "error": self.error,
        }


def _decision_view(decision: Decision | None) -> dict[str, Any] | None:
    if decision is None:
        return None
    view = asdict(decision)
    view.pop("decided_at")
    return view


class Autoscaler:
    """Sizes every pool on its lag, one polling task per pool.

    Args:
        pools: the pools to manage (already clamped to their partition counts).
        backend: where replicas run.
        lag_reader: the total lag of a pool's group over its topics.
        publish: emits `WorkerPoolScaled`.
        clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(
        self,
        pools: list[WorkerPool],
        backend: WorkerBackend,
        lag_reader: LagReader,
        publish: Publish,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.lag_reader = lag_reader
        self.publish = publish
        self.clock = clock
        self.status = {pool.name: PoolStatus(pool, PoolMemory()) for pool in pools}
        self._tasks: list[asyncio.Task[None]] = []

    async def poll(self, name: str) -> Decision | None:
        """One round for one pool; None when the lag or the backend could not be read."""
        status = self.status[name]
        pool = status.pool
        try:
            lag = await self.lag_reader(pool)
            current = await self.backend.current(pool)
        except (CairnError, OSError) as error:
            status.error = f"{type(error).__name__}: {error}"
            log.warning("pool %s: cannot measure, keeping its size: %s", name, status.error)
            return None
        decision, status.memory = decide(
            pool, lag=lag, current=current, now=self.clock(), memory=status.memory
        )
        status.lag, status.current, status.last_decision, status.error = (
            lag,
            current,
            decision,
            None,
        )
        if decision.changes:
            status.current = await self.backend.scale(pool, decision.target)
            status.last_change, status.last_change_at = decision, datetime.now(UTC)
            log.info(
                "pool %s: %d -> %d (lag %d): %s",
                name,
                decision.current,
                decision.target,
                lag,
                decision.reason,
            )
            await self.publish(
                WorkerPoolScaled(
                    pool=name,
                    from_replicas=decision.current,
                    to_replicas=decision.target,
                    lag=lag,
                    reason=decision.reason,
                )
            )
        return decision

    def start(self) -> None:
        """One polling task per pool, each on its own interval."""
        for name in self.status:
            self._tasks.append(asyncio.create_task(self._loop(name), name=f"autoscale-{name}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.backend.close()

    async def _loop(self, name: str) -> None:
        interval = self.status[name].pool.polling_interval_s
        while True:
            started = time.monotonic()
            try:
                await self.poll(name)
            except Exception:
                # A bug in one round must not stop the pool from being sized on the next.
                log.exception("pool %s: polling round failed", name)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    def views(self) -> list[dict[str, Any]]:
        return [status.view() for status in self.status.values()]
