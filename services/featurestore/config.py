"""Settings only the feature store reads (prefix `CAIRN_FEATURESTORE_`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class FeatureStoreSettings(BaseSettings):
    """Where the online store lives, where offline history goes, and how big bulk batches are."""

    model_config = SettingsConfigDict(env_prefix="CAIRN_FEATURESTORE_", extra="ignore")

    online_url: str = Field(
        default="",
        description="sqlite:///path.db or redis://host:port/db. Empty: SQLite under CAIRN_HOME.",
    )
    offline_prefix: str = Field(
        default="featurestore/offline", description="Store prefix of the Parquet history."
    )
    cache_dir: Path | None = Field(
        default=None, description="Local copies of offline files. Empty: <home>/featurestore/cache."
    )
    consumer_group: str = Field(default="cairn.featurestore", min_length=1)
    bulk_batch_rows: int = Field(
        default=20_000, ge=1, description="Rows per offline file and online transaction in bulk."
    )
    max_batch_get: int = Field(default=1000, ge=1, description="Identifiers per BatchGetRecord.")
    max_as_of_rows: int = Field(default=10_000, ge=1, description="Rows per time-travel answer.")

    def resolved_online_url(self, home: Path) -> str:
        """The online store URL, defaulting to a SQLite file under `home`."""
        if self.online_url:
            return self.online_url
        return f"sqlite:///{(home / 'featurestore' / 'online.db').resolve()}"

    def resolved_cache_dir(self, home: Path) -> Path:
        return self.cache_dir or (home / "featurestore" / "cache").resolve()
