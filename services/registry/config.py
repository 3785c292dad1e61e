"""Settings only the registry reads (prefix CAIRN_REGISTRY_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RegistrySettings(BaseSettings):
    """Registry settings; the kernel's `CairnSettings` holds the shared ones."""

    model_config = SettingsConfigDict(env_prefix="CAIRN_REGISTRY_", extra="ignore")

    consumer_group: str = "cairn.registry"
    announce_after_s: float = Field(
        default=10.0, gt=0, description="Re-announce an approval change left unpublished this long."
    )
    announce_interval_s: float = Field(
        default=60.0, gt=0, description="How often the registry looks for such changes."
    )
