"""Autoscaler settings (`CAIRN_AUTOSCALER_*`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AutoscalerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAIRN_AUTOSCALER_", extra="ignore")

    backend: Literal["local", "docker", "auto", "none"] = Field(
        default="local",
        description="local: worker processes; docker: containers (an engine must answer); "
        "auto: docker when an engine answers, else local; none: measure and report only.",
    )
    pools: list[str] = Field(
        default_factory=list, description="Pool names to manage; empty: every declared pool."
    )
    pool_overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description='Per-pool field overrides as JSON, e.g. {"trainer-cpu": {"max_replicas": 2}}.',
    )
    discovery_interval_s: float = Field(
        default=5.0, gt=0, description="How often the declared worker pools are listed."
    )
    drain_timeout_s: float = Field(
        default=60.0, gt=0, description="A draining worker is killed after this long."
    )
    docker_image: str = Field(default="cairn:latest", description="Worker image (Docker backend).")
    docker_network: str | None = Field(default=None, description="Compose network for workers.")
    compose_project: str = Field(default="cairn", description="Compose project label.")
