"""Experiments settings (`CAIRN_EXPERIMENTS_*`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ExperimentsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAIRN_EXPERIMENTS_", extra="ignore")

    max_runs_listed: int = Field(
        default=1000, ge=1, le=100_000, description="Most runs one query answers with."
    )
