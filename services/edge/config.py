"""Edge settings (`CAIRN_EDGE_*`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class EdgeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAIRN_EDGE_", extra="ignore")

    sweep_interval_s: float = Field(
        default=1.0, gt=0, description="How often running plans and packaging jobs are advanced."
    )
    max_long_poll_s: float = Field(
        default=30.0, gt=0, description="Longest a device's desired-state request is held open."
    )
    presign_downloads: bool = Field(
        default=True,
        description="Hand devices presigned http(s) URLs of the store when it has them; else "
        "(and always for a local store) devices download through the edge service.",
    )
    default_tolerance: float = Field(
        default=1e-4, ge=0, description="Largest difference to the original model's answers."
    )
    workdir: Path | None = Field(
        default=None, description="Where packages are built; default a temporary folder."
    )
    drift_check_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="How often a baked stage short of the drift gate's rows is measured again.",
    )
    drift_max_rows: int = Field(
        default=10_000, ge=100, description="Captured rows a drift check tests (a uniform sample)."
    )
    drift_reference_max_values: int = Field(
        default=100_000,
        ge=1000,
        description="Training values kept per numeric input as the KS reference: all of them "
        "up to this many, else this many quantiles.",
    )
