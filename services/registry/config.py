"""Settings only the registry reads (prefix CAIRN_REGISTRY_)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class RegistrySettings(BaseSettings):
    """Registry settings; the kernel's `CairnSettings` holds the shared ones."""

    model_config = SettingsConfigDict(env_prefix="CAIRN_REGISTRY_", extra="ignore")

    consumer_group: str = "cairn.registry"
