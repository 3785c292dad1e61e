"""Pipelines settings (`CAIRN_PIPELINES_*`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class PipelinesSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAIRN_PIPELINES_", extra="ignore")

    sweep_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="How often due retries, step timeouts, schedules and unsent events run.",
    )
    completion_fetch_wait_ms: int = Field(
        default=100,
        ge=1,
        le=500,
        description="Longest a completion consumer's fetch waits for new events: each step's "
        "answer can wait this long (Tansu answers a fetch only when it expires).",
    )
    trigger_refresh_s: float = Field(
        default=2.0, gt=0, description="How often the trigger reader looks for changed triggers."
    )
    trigger_group: str = Field(
        default="cairn.pipelines.triggers",
        description="Consumer group of the trigger reader (it reads every triggering event type).",
    )
