"""Settings only the monitor reads (prefix CAIRN_MONITOR_)."""

from __future__ import annotations

import os
import socket

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class MonitorSettings(BaseSettings):
    """Monitor settings; the kernel's `CairnSettings` holds the shared ones."""

    model_config = SettingsConfigDict(env_prefix="CAIRN_MONITOR_", extra="ignore")

    consumer_group: str = "cairn.monitor"
    tick_s: float = Field(default=1.0, gt=0, description="How often due schedules are looked for.")
    sketch_size: int = Field(
        default=1001, ge=11, le=100_001, description="Quantiles in statistics.json per feature."
    )
    reference_max_values: int = Field(
        default=100_000,
        ge=1000,
        le=10_000_000,
        description="Training values kept per numeric feature as the KS reference: all of them "
        "up to this many (the test is then the exact KS), else this many quantiles.",
    )
    max_current_rows: int = Field(
        default=10_000,
        ge=100,
        description="Rows of a run's batch the drift tests see (a uniform sample beyond this).",
    )
    early_check_rows: int = Field(
        default=10_000, ge=1, description="Captured rows since the last run that trigger a run now."
    )
    run_lease_s: float = Field(
        default=300.0, ge=0, description="A claimed run not finished in this time is taken over."
    )
    holdout_fraction: float = Field(default=0.2, gt=0, lt=1)
    instance_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
