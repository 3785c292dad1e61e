"""Settings only the ingest service reads (prefix CAIRN_INGEST_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class IngestSettings(BaseSettings):
    """Upload limits and where uploads are spooled while they are converted."""

    model_config = SettingsConfigDict(env_prefix="CAIRN_INGEST_", extra="ignore")

    max_upload_bytes: int = Field(
        default=50 * 1024**3, gt=0, description="Larger uploads are refused with 413."
    )
    work_dir: Path | None = Field(
        default=None,
        description="Spool folder for uploads and Parquet parts; default: temp.",
    )
