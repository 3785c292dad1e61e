"""Trainer settings (`CAIRN_TRAINER_*`)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TrainerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAIRN_TRAINER_", extra="ignore")

    device: Literal["auto", "cpu", "gpu"] = Field(
        default="auto",
        description=(
            "auto: use a GPU for jobs that ask for one when one is visible; cpu: never (a "
            "CPU-pool worker on a GPU host); gpu: a GPU-pool worker (warns when none is visible)."
        ),
    )
    worker_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    heartbeat_s: float = Field(default=2.0, gt=0, description="Job doc heartbeat + log flush.")
    stop_poll_s: float = Field(
        default=0.5, gt=0, description="How often a training job looks for a stop request."
    )
    lease_s: float = Field(
        default=30.0, gt=0, description="A job whose heartbeat is older is taken over."
    )
    max_poll_interval_ms: int = Field(
        default=24 * 3600 * 1000, ge=60_000, description="Longest a worker may hold one job."
    )
    requeue_after_s: float = Field(
        default=120.0,
        gt=0,
        description="A job no worker claimed this long after its request has it published again.",
    )
    requeue_interval_s: float = Field(
        default=30.0, gt=0, description="How often the trainer looks for such jobs."
    )
    models_prefix: str = Field(default="models", description="Store prefix of model packages.")
    scratch_dir: Path | None = Field(default=None, description="Temp root for script jobs.")
    max_instance_count: int = Field(
        default=8, ge=1, le=64, description="The most Dask workers (or script hosts) a job may ask."
    )
    dask_scheduler: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CAIRN_DASK_SCHEDULER", "CAIRN_TRAINER_DASK_SCHEDULER"),
        description="tcp://host:8786 of an existing Dask scheduler; unset: a LocalCluster per job.",
    )
    dask_workers_wait_s: float = Field(
        default=30.0, gt=0, description="How long a job waits for the scheduler's workers."
    )
    pipe_chunk_bytes: int = Field(
        default=8 * 1024 * 1024, ge=64 * 1024, description="Pipe mode: bytes per store read."
    )
    pipe_batch_rows: int = Field(
        default=65_536, ge=1, description="Pipe mode: rows per batch given to XGBoost."
    )
    checkpoint_sync_s: float = Field(
        default=5.0, gt=0, description="Script mode: how often the checkpoint dir is uploaded."
    )
