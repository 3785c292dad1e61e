"""Tuner settings (`CAIRN_TUNER_*`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TunerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAIRN_TUNER_", extra="ignore")

    sweep_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="How often every running tuning job is checked (max runtime, lost events).",
    )
