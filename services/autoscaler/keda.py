"""KEDA `ScaledObject`s with the numbers the autoscaler uses, for Kubernetes (Terraform, CLI)."""

from __future__ import annotations

import math
from typing import Any

from cairn.contracts.state import WorkerPoolDeclaration

from services.autoscaler.pools import WorkerPool

KEDA_API_VERSION = "keda.sh/v1alpha1"


def keda_scaled_object(
    declared: WorkerPoolDeclaration,
    *,
    bootstrap_servers: str,
    namespace: str = "cairn",
    deployment: str | None = None,
) -> dict[str, Any]:
    """A KEDA `ScaledObject` (as a dict) with the pool's numbers, on Kafka consumer-group lag.

    KEDA's Kafka scaler sizes on `lagThreshold` per replica, activates above
    `activationLagThreshold`, and never exceeds the partition count (`allowIdleConsumers: false`).
    The cooldown is both `cooldownPeriod` (to zero) and the HPA scale-down stabilization window.
    A declaration (`services.trainer.pools.TRAINER_POOLS`) renders as the autoscaler sizes it.
    """
    pool = WorkerPool.model_validate(declared.model_dump()).clamped()
    cooldown = max(0, math.ceil(pool.scale_down_cooldown_s))
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
            "triggers": [_kafka_trigger(pool, topic, bootstrap_servers) for topic in pool.topics()],
        },
    }


def _kafka_trigger(pool: WorkerPool, topic: str, bootstrap_servers: str) -> dict[str, Any]:
    return {
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
