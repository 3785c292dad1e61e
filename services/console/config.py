"""Console settings (`CAIRN_CONSOLE_*`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAIRN_CONSOLE_", extra="ignore")

    service_urls: dict[str, str] = Field(
        default_factory=dict,
        description='Base URL of each service, as JSON ({"gateway": "http://gateway:8080"}); '
        "over CAIRN_<SERVICE>_URL and the platform `cairn up` runs on CAIRN_HOME.",
    )
    events_kept: int = Field(
        default=2000,
        ge=10,
        le=100_000,
        description="Recent bus events kept in memory.",
    )
    events_replayed: int = Field(
        default=20,
        ge=0,
        le=10_000,
        description="Records read again from before each partition's end when the console starts.",
    )
    proxy_timeout_s: float = Field(
        default=30.0, gt=0, description="Longest the console waits for a service's answer."
    )
    health_timeout_s: float = Field(
        default=2.0, gt=0, description="Longest one service's /healthz may take on the overview."
    )
    urls_refresh_s: float = Field(
        default=2.0, ge=0, description="How long the services' URLs (runtime.json) are reused."
    )
    stream_heartbeat_s: float = Field(
        default=15.0, gt=0, description="A comment line this often keeps an idle event stream open."
    )
