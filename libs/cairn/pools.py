"""Worker pools: which worker module to run, sized on which group's lag, within what bounds.

The declaration is shared: the autoscaler sizes local processes or Docker containers from it, and
`cairn pools render-keda` turns the same numbers into KEDA `ScaledObject`s for Kubernetes.

Built-in pools are the trainer's CPU and GPU workers. Any service declares more with a `POOLS`
list in `services/<name>/pools.py` (found like services are; it must import nothing heavy). Both
trainer pools are members of the one `cairn.trainer` group on `TrainingJobRequested`, so every job
runs exactly once; the GPU pool adds GPU-capable members (`CAIRN_TRAINER_DEVICE=gpu`, a GPU device
request) only when the backlog is large. Kafka assigns partitions without looking at the jobs, so a
GPU job can land on a CPU worker, which trains on CPU and records the device it used.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import math
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cairn.contracts.catalogue import spec_for
from cairn.errors import ConfigError
from cairn.settings import CairnSettings

log = logging.getLogger("cairn.pools")

POOLS_MODULE = "pools"
KEDA_API_VERSION = "keda.sh/v1alpha1"


class WorkerPool(BaseModel):
    """One scalable pool of identical workers consuming some event types in one consumer group."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    module: str = Field(description="`python -m <module>` starts one worker.")
    args: list[str] = Field(default_factory=list, description="Extra command-line arguments.")
    group_id: str = Field(description="The consumer group whose lag sizes the pool.")
    event_types: list[str] = Field(min_length=1, description="Event types the workers consume.")
    lag_threshold: int = Field(default=5, ge=1, description="Target lag per replica.")
    activation_lag_threshold: int = Field(
        default=0, ge=0, description="At or below this lag a pool with min 0 scales to zero."
    )
    min_replicas: int = Field(default=0, ge=0)
    max_replicas: int = Field(default=4, ge=1)
    polling_interval_s: float = Field(default=2.0, gt=0)
    scale_down_cooldown_s: float = Field(
        default=60.0, ge=0, description="Scale down only once desire stayed lower this long."
    )
    env: dict[str, str] = Field(default_factory=dict, description="Extra worker environment.")
    gpu: bool = Field(
        default=False, description="Workers ask for GPU devices (Docker, Kubernetes)."
    )
    image: str | None = Field(default=None, description="Container image; default the platform's.")

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


def _trainer_pool(name: str, **overrides: Any) -> WorkerPool:
    base: dict[str, Any] = {
        "name": name,
        "module": "services.trainer",
        "group_id": "cairn.trainer",
        "event_types": ["TrainingJobRequested"],
    }
    return WorkerPool(**(base | overrides))


BUILTIN_POOLS: tuple[WorkerPool, ...] = (
    _trainer_pool(
        "trainer-cpu",
        lag_threshold=2,
        activation_lag_threshold=1,
        min_replicas=0,
        max_replicas=6,
        polling_interval_s=2.0,
        scale_down_cooldown_s=60.0,
        env={"CAIRN_TRAINER_DEVICE": "cpu"},
    ),
    # Two GPU members at most: with the six CPU ones they fill the topic's eight partitions.
    _trainer_pool(
        "trainer-gpu",
        lag_threshold=8,
        activation_lag_threshold=8,
        min_replicas=0,
        max_replicas=2,
        polling_interval_s=2.0,
        scale_down_cooldown_s=120.0,
        env={"CAIRN_TRAINER_DEVICE": "gpu"},
        gpu=True,
    ),
)


def declared_pools(modules: Iterable[str]) -> list[WorkerPool]:
    """The `POOLS` of every `<service module>.pools` that exists, in order."""
    found: list[WorkerPool] = []
    for module in modules:
        name = f"{module}.{POOLS_MODULE}"
        if importlib.util.find_spec(module) is None:
            continue
        try:
            loaded = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name == name:
                continue
            raise
        pools = getattr(loaded, "POOLS", None)
        if not isinstance(pools, list | tuple) or not all(isinstance(p, WorkerPool) for p in pools):
            raise ConfigError(f"{name}.POOLS must be a list of cairn.pools.WorkerPool")
        found.extend(pools)
    return found


def load_pools(
    settings: CairnSettings, extra: Iterable[WorkerPool] = (), *, clamp: bool = True
) -> list[WorkerPool]:
    """Built-in pools, then every discovered service's `POOLS` (same name: the service wins).

    Raises:
        ConfigError: a `pools` module is malformed or a pool names an unknown event type.
    """
    from cairn.runtime.discovery import discover_services

    pools = {pool.name: pool for pool in BUILTIN_POOLS}
    modules = [spec.module for spec in discover_services(settings)]
    for pool in [*declared_pools(modules), *extra]:
        pools[pool.name] = pool
    for pool in pools.values():
        pool.topics()
    resolved = [pool.clamped() if clamp else pool for pool in pools.values()]
    _warn_shared_partitions(resolved)
    return resolved


def _warn_shared_partitions(pools: list[WorkerPool]) -> None:
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


def keda_scaled_object(
    pool: WorkerPool,
    *,
    bootstrap_servers: str,
    namespace: str = "cairn",
    deployment: str | None = None,
) -> dict[str, Any]:
    """A KEDA `ScaledObject` (as a dict) with the pool's numbers, on Kafka consumer-group lag.

    KEDA's Kafka scaler sizes on `lagThreshold` per replica, activates above
    `activationLagThreshold`, and never exceeds the partition count (`allowIdleConsumers: false`).
    The cooldown is both `cooldownPeriod` (to zero) and the HPA scale-down stabilization window.
    """
    pool = pool.clamped()
    cooldown = max(0, math.ceil(pool.scale_down_cooldown_s))
    triggers = [
        {
            "type": "kafka",
            "metadata": {
                "bootstrapServers": bootstrap_servers,
                "consumerGroup": pool.group_id,
                "topic": topic,
                "lagThreshold": str(pool.lag_threshold),
                "activationLagThreshold": str(pool.activation_lag_threshold),
                "offsetResetPolicy": "earliest",
                "allowIdleConsumers": "false",
                "scaleToZeroOnInvalidOffset": "false",
            },
        }
        for topic in pool.topics()
    ]
    return {
        "apiVersion": KEDA_API_VERSION,
        "kind": "ScaledObject",
        "metadata": {
            "name": pool.name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "cairn", "cairn.pool": pool.name},
        },
        "spec": {
            "scaleTargetRef": {"name": deployment or pool.name},
            "pollingInterval": max(1, math.ceil(pool.polling_interval_s)),
            "cooldownPeriod": cooldown,
            "minReplicaCount": pool.min_replicas,
            "maxReplicaCount": pool.max_replicas,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleDown": {"stabilizationWindowSeconds": cooldown},
                        "scaleUp": {"stabilizationWindowSeconds": 0},
                    }
                }
            },
            "triggers": triggers,
        },
    }
