"""Batch transform settings (`CAIRN_BATCH_*`)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class BatchSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAIRN_BATCH_", extra="ignore")

    role: Literal["all", "worker"] = Field(
        default="all",
        description="all: plan, assemble and transform (the service); worker: transform shards "
        "only (a member of the autoscaled worker pool).",
    )
    worker_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    shard_size_mb: float = Field(default=32.0, gt=0, description="Target bytes of one shard.")
    predict_threads: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1, description="Threads per predict."
    )
    cache_dir: Path | None = Field(default=None, description="Local copies of input files.")
    cache_bytes: int = Field(default=8 << 30, ge=0, description="Budget of the local copies.")
    max_poll_interval_ms: int = Field(
        default=3600 * 1000, ge=60_000, description="Longest a worker may hold one shard."
    )
    gateway_url: str | None = Field(
        default=None,
        description="The gateway jobs with `endpoint_name` invoke; empty: the gateway of the "
        "embedded runtime (`cairn up`) on CAIRN_HOME.",
    )
    gateway_timeout_s: float = Field(default=60.0, gt=0, description="One invocation's limit.")
    gateway_attempts: int = Field(
        default=4, ge=1, description="Tries of an invocation the platform fails (5xx, refused)."
    )
    gateway_backoff_s: float = Field(
        default=0.5, ge=0, description="Wait after the first failed try; doubles, up to 10 s."
    )
