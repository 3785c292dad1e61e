"""`backend=none`: measures and decides but runs nothing (replicas stay as decided)."""

from __future__ import annotations

from services.autoscaler.backends.base import WorkerBackend
from services.autoscaler.pools import WorkerPool


class ReportOnlyBackend(WorkerBackend):
    """Remembers the decided replica counts instead of running workers."""

    def __init__(self) -> None:
        self._replicas: dict[str, int] = {}

    async def current(self, pool: WorkerPool) -> int:
        return self._replicas.get(pool.name, 0)

    async def scale(self, pool: WorkerPool, replicas: int) -> int:
        self._replicas[pool.name] = replicas
        return replicas
