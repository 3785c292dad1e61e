"""Labeling settings (`CAIRN_LABELING_*`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class LabelingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAIRN_LABELING_", extra="ignore")

    max_items: int = Field(
        default=100_000, ge=1, description="Largest dataset one job labels (its queue is one doc)."
    )
    max_image_bytes: int = Field(
        default=20 << 20, ge=1, description="Largest image the page is sent through the service."
    )
    sweep_interval_s: float = Field(
        default=2.0, gt=0, description="How often finished jobs are looked for and consolidated."
    )
    dawid_skene_iterations: int = Field(
        default=100, ge=1, description="EM iterations of Dawid-Skene (crowd-kit's n_iter)."
    )
    register_again_after_s: float = Field(
        default=120.0,
        gt=0,
        description="An export the ingest service has not answered is requested again after this "
        "(its dataset registration is idempotent: the same rows give the same version).",
    )
