"""The batch worker pool, declared by the batch service for the autoscaler to size.

Its members form the `cairn.batch.workers` group on `TransformShardRequested`; each runs
`python -m services.batch` with `CAIRN_BATCH_ROLE=worker` (transform shards, nothing else).
"""

from __future__ import annotations

from cairn.contracts.state import WorkerPoolDeclaration

WORKER_GROUP = "cairn.batch.workers"

BATCH_POOL = WorkerPoolDeclaration(
    name="batch-workers",
    service="batch",
    module="services.batch",
    group_id=WORKER_GROUP,
    event_types=["TransformShardRequested"],
    lag_threshold=2,
    activation_lag_threshold=0,
    min_replicas=0,
    max_replicas=8,
    polling_interval_s=2.0,
    scale_down_cooldown_s=60.0,
    env={"CAIRN_BATCH_ROLE": "worker"},
)
