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

from cairn.bus import consumer_group_lag
from cairn.contracts.events import WorkerPoolScaled
from cairn.contracts.state import WorkerPoolDeclaration, list_states
from cairn.errors import CairnError
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore

from services.autoscaler.backends.base import WorkerBackend
from services.autoscaler.config import AutoscalerSettings
from services.autoscaler.domain import Decision, PoolMemory, decide
from services.autoscaler.pools import WorkerPool, select_pools

log = logging.getLogger("cairn.autoscaler")

LagReader = Callable[[WorkerPool], Awaitable[int]]
Publish = Callable[[WorkerPoolScaled], Awaitable[Any]]
Discover = Callable[[], Awaitable[list[WorkerPool]]]

DISCOVERY_INTERVAL_S = 5.0


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
            "service": self.pool.service,
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
        pools: pools to manage from the start (already clamped to their partition counts).
        backend: where replicas run.
        lag_reader: the total lag of a pool's group over its topics.
        publish: emits `WorkerPoolScaled`.
        clock: monotonic seconds (tests pass a fake one).
        discover: the declared pools (selected and clamped), asked every
            `discovery_interval_s`; None manages `pools` only.
        discovery_interval_s: how often declarations are listed.
    """

    def __init__(
        self,
        pools: list[WorkerPool],
        backend: WorkerBackend,
        lag_reader: LagReader,
        publish: Publish,
        clock: Callable[[], float] = time.monotonic,
        *,
        discover: Discover | None = None,
        discovery_interval_s: float = DISCOVERY_INTERVAL_S,
    ) -> None:
        self.backend = backend
        self.lag_reader = lag_reader
        self.publish = publish
        self.clock = clock
        self.discover = discover
        self.discovery_interval_s = discovery_interval_s
        self.status = {pool.name: PoolStatus(pool, PoolMemory()) for pool in pools}

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
        status.lag, status.current, status.last_decision = lag, current, decision
        status.error = None
        if decision.changes:
            await self._scale(status, decision)
        return decision

    async def _scale(self, status: PoolStatus, decision: Decision) -> None:
        """Apply a change to the backend and announce it."""
        pool = status.pool
        status.current = await self.backend.scale(pool, decision.target)
        status.last_change, status.last_change_at = decision, datetime.now(UTC)
        log.info(
            "pool %s: %d -> %d (lag %d): %s",
            pool.name,
            decision.current,
            decision.target,
            decision.lag,
            decision.reason,
        )
        await self.publish(
            WorkerPoolScaled(
                pool=pool.name,
                from_replicas=decision.current,
                to_replicas=decision.target,
                lag=decision.lag,
                reason=decision.reason,
            )
        )

    async def open_backend(self) -> WorkerBackend:
        """The backend as a resource of the service (built at wiring: nothing left to open)."""
        return self.backend

    async def close_backend(self, backend: WorkerBackend) -> None:
        """Drain and release the workers, once the polling loop has stopped."""
        await backend.close()

    async def run(self) -> None:
        """Size every pool on its own interval until cancelled; look for new pools meanwhile."""
        tasks: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                await self.refresh()
                for name in self.status.keys() - tasks.keys():
                    tasks[name] = asyncio.create_task(self._loop(name), name=f"autoscale-{name}")
                await asyncio.sleep(self.discovery_interval_s)
        finally:
            for task in tasks.values():
                task.cancel()
            for task in tasks.values():
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def refresh(self) -> None:
        """Add newly declared pools and take changed declarations (each pool keeps its memory).

        Declarations are durable: a pool stays managed while its owner is down (its workers are
        the owner's code). One whose declaration is deleted keeps its last size until restart.
        """
        if self.discover is None:
            return
        try:
            pools = await self.discover()
        except (CairnError, OSError) as error:
            log.warning("cannot list the declared worker pools, keeping the known ones: %s", error)
            return
        for pool in pools:
            known = self.status.get(pool.name)
            if known is None:
                log.info("managing worker pool %s (group %s)", pool.name, pool.group_id)
                self.status[pool.name] = PoolStatus(pool, PoolMemory())
            elif known.pool != pool:
                log.info("worker pool %s: declaration changed", pool.name)
                known.pool = pool

    async def _loop(self, name: str) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.poll(name)
            except Exception:
                # A bug in one round must not stop the pool from being sized on the next.
                log.exception("pool %s: polling round failed", name)
            interval = self.status[name].pool.polling_interval_s
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    def views(self) -> list[dict[str, Any]]:
        return [status.view() for status in self.status.values()]


class ConsumerGroupLag:
    """Reads a pool's total lag over its topics from the broker."""

    def __init__(self, settings: CairnSettings) -> None:
        self.settings = settings
        # Every reading opens a short-lived client; its INFO chatter would flood the log.
        logging.getLogger("aiokafka").setLevel(logging.WARNING)

    async def __call__(self, pool: WorkerPool) -> int:
        lag = await consumer_group_lag(self.settings, pool.group_id, pool.topics())
        total: int = lag.total
        return total


class DeclaredPools:
    """The pools services declared in the store, as this autoscaler's settings select them."""

    def __init__(self, store: ObjectStore, config: AutoscalerSettings) -> None:
        self.store = store
        self.config = config
        self._seen: list[WorkerPoolDeclaration] | None = None
        self._selected: list[WorkerPool] = []

    async def __call__(self) -> list[WorkerPool]:
        declared = await asyncio.to_thread(list_states, self.store, WorkerPoolDeclaration)
        declared.sort(key=lambda declaration: declaration.name)
        if declared != self._seen:  # select (and warn about clamping) once per change
            self._seen = declared
            self._selected = select_pools(
                declared, names=self.config.pools, overrides=self.config.pool_overrides
            )
        return self._selected
