"""The trainer's worker pools, declared by the trainer for the autoscaler to size.

CPU workers form the `cairn.trainer` group on `TrainingJobRequested`, so every job runs exactly
once. A job that asks for a GPU (and does not allow CPU fallback) is handed on by the worker that
read it, unless that worker has a GPU, as a `GpuTrainingJobRequested` on its own topic, which only
the GPU pool's group `cairn.trainer.gpu` reads (`CAIRN_TRAINER_DEVICE=gpu` workers). Each pool is
sized on its own group's lag, so GPU work wakes GPU workers and never lands on a CPU one.
"""

from __future__ import annotations

from cairn.contracts.state import WorkerPoolDeclaration

SERVICE = "trainer"
MODULE = "services.trainer"
TRAINER_GROUP = "cairn.trainer"
TRAINER_GPU_GROUP = "cairn.trainer.gpu"

TRAINER_POOLS: tuple[WorkerPoolDeclaration, ...] = (
    WorkerPoolDeclaration(
        name="trainer-cpu",
        service=SERVICE,
        module=MODULE,
        group_id=TRAINER_GROUP,
        event_types=["TrainingJobRequested"],
        lag_threshold=2,
        activation_lag_threshold=1,
        min_replicas=0,
        max_replicas=6,
        polling_interval_s=2.0,
        scale_down_cooldown_s=60.0,
        env={"CAIRN_TRAINER_DEVICE": "cpu"},
    ),
    WorkerPoolDeclaration(
        name="trainer-gpu",
        service=SERVICE,
        module=MODULE,
        group_id=TRAINER_GPU_GROUP,
        event_types=["GpuTrainingJobRequested"],
        lag_threshold=1,
        activation_lag_threshold=0,
        min_replicas=0,
        max_replicas=2,
        polling_interval_s=2.0,
        scale_down_cooldown_s=120.0,
        env={"CAIRN_TRAINER_DEVICE": "gpu"},
        gpu=True,
    ),
)
