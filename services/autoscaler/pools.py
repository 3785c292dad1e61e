"""Worker pools as the autoscaler sizes them: a service's declaration, clamped to partitions.

A service that owns a pool declares it (`service.declare_worker_pool`, stored under the kernel's
`platform/pools/`); the autoscaler lists the declarations, applies its own settings (which pools,
per-pool overrides) and never sizes a pool above the partition count of its topics.
"""

from __future__ import annotations

import logging
from typing import Any

from cairn.contracts.catalogue import spec_for
from cairn.contracts.state import WorkerPoolDeclaration
from cairn.errors import CairnError, ConfigError
from pydantic import ConfigDict, Field, ValidationError, model_validator

log = logging.getLogger("cairn.autoscaler")


class WorkerPool(WorkerPoolDeclaration):
    """A declared pool as the autoscaler sizes it: bounds checked, topics from the catalogue."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    service: str = Field(default="", description="The service that declared (and owns) the pool.")

    @model_validator(mode="after")
    def _bounds(self) -> WorkerPool:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"pool {self.name}: min_replicas {self.min_replicas} > max {self.max_replicas}"
            )
        return self

    def topics(self) -> list[str]:
        """The topics of the pool's event types, from the catalogue (unknown type: ConfigError)."""
        try:
            return list(dict.fromkeys(spec_for(name).topic for name in self.event_types))
        except Exception as error:
            raise ConfigError(f"pool {self.name}: {error}") from error

    def partition_count(self) -> int:
        """The most members that can hold a partition: more would sit idle."""
        return max(spec_for(name).partitions for name in self.event_types)

    def clamped(self) -> WorkerPool:
        """This pool with `max_replicas` (and `min_replicas`) no higher than the partition count."""
        partitions = self.partition_count()
        if self.max_replicas <= partitions:
            return self
        log.warning(
            "pool %s: max_replicas %d clamped to %d, the partition count of %s",
            self.name,
            self.max_replicas,
            partitions,
            ", ".join(self.topics()),
        )
        return self.model_copy(
            update={
                "max_replicas": partitions,
                "min_replicas": min(self.min_replicas, partitions),
            }
        )


def select_pools(
    declared: list[WorkerPoolDeclaration],
    *,
    names: list[str] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> list[WorkerPool]:
    """The declared pools to manage (all when `names` is empty), overridden and clamped.

    A declaration that is invalid here (bounds, an override, an event type this process does not
    know) is logged and left out: one bad declaration never stops the other pools from scaling.
    """
    pools = []
    for declaration in declared:
        if names and declaration.name not in names:
            continue
        changes = (overrides or {}).get(declaration.name, {})
        try:
            pool = WorkerPool.model_validate(declaration.model_dump() | changes)
            pool.topics()
            pools.append(pool.clamped())
        except (ValidationError, CairnError) as error:
            log.error("worker pool %s left out: %s", declaration.name, error)
    warn_shared_partitions(pools)
    return pools


def warn_shared_partitions(pools: list[WorkerPool]) -> None:
    """Pools in one group share its partitions; together they cannot use more than exist."""
    by_group: dict[str, list[WorkerPool]] = {}
    for pool in pools:
        by_group.setdefault(pool.group_id, []).append(pool)
    for group, members in by_group.items():
        total = sum(pool.max_replicas for pool in members)
        partitions = max(pool.partition_count() for pool in members)
        if len(members) > 1 and total > partitions:
            log.warning(
                "pools %s share group %s: %d replicas at most, %d partitions",
                ", ".join(pool.name for pool in members),
                group,
                total,
                partitions,
            )
