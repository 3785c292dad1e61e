"""Settings only the ingest service reads (prefix CAIRN_INGEST_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MAX_UPLOAD_BYTES = 2 * 1024**3


class IngestSettings(BaseSettings):
    """Upload limits and where uploads are spooled while they are converted."""

    model_config = SettingsConfigDict(env_prefix="CAIRN_INGEST_", extra="ignore")

    max_upload_bytes: int = Field(
        default=DEFAULT_MAX_UPLOAD_BYTES,
        gt=0,
        description="Larger request bodies are refused with 413 (CAIRN_INGEST_MAX_UPLOAD_BYTES); "
        "bigger files go straight to the store through POST /datasets/{name}/upload-url.",
    )
    upload_url_expires_s: int = Field(
        default=3600, ge=60, le=7 * 24 * 3600, description="Lifetime of a presigned upload URL."
    )
    work_dir: Path | None = Field(
        default=None,
        description="Spool folder for uploads and Parquet parts; default: temp.",
    )
