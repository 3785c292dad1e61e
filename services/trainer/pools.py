"""The trainer's worker pools, declared by the trainer for the autoscaler to size.

Both pools are members of the one `cairn.trainer` group on `TrainingJobRequested`, so every job
runs exactly once; the GPU pool adds GPU-capable members (`CAIRN_TRAINER_DEVICE=gpu`, a GPU device
request) only when the backlog is large. Kafka assigns partitions without looking at the jobs, so a
GPU job can land on a CPU worker, which trains on CPU and records the device it used.
"""

from __future__ import annotations

from cairn.contracts.state import WorkerPoolDeclaration

SERVICE = "trainer"
MODULE = "services.trainer"
TRAINER_GROUP = "cairn.trainer"
REQUESTS = ["TrainingJobRequested"]

TRAINER_POOLS: tuple[WorkerPoolDeclaration, ...] = (
    WorkerPoolDeclaration(
        name="trainer-cpu",
        service=SERVICE,
        module=MODULE,
        group_id=TRAINER_GROUP,
        event_types=REQUESTS,
        lag_threshold=2,
        activation_lag_threshold=1,
        min_replicas=0,
        max_replicas=6,
        polling_interval_s=2.0,
        scale_down_cooldown_s=60.0,
        env={"CAIRN_TRAINER_DEVICE": "cpu"},
    ),
    # Two GPU members at most: with the six CPU ones they fill the topic's eight partitions.
    WorkerPoolDeclaration(
        name="trainer-gpu",
        service=SERVICE,
        module=MODULE,
        group_id=TRAINER_GROUP,
        event_types=REQUESTS,
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
