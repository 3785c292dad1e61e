"""Settings only the deployer reads (prefix CAIRN_DEPLOYER_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DeployerSettings(BaseSettings):
    """Deployer settings; the kernel's `CairnSettings` holds the shared ones."""

    model_config = SettingsConfigDict(env_prefix="CAIRN_DEPLOYER_", extra="ignore")

    consumer_group: str = "cairn.deployer"
    rollout_tick_s: float = Field(
        default=1.0, gt=0, description="How often the rollout driver checks bake times."
    )
    alarm_min_requests: int = Field(
        default=20, ge=1, description="Requests on the new variants before the error alarm counts."
    )
    republish_after_s: float = Field(
        default=10.0, gt=0, description="Re-announce a revision left unpublished this long."
    )
    scaling_tick_s: float = Field(
        default=5.0, gt=0, description="How often the variants' scaling policies are evaluated."
    )
    scaling_window_s: float = Field(
        default=60.0,
        gt=0,
        description="Invocations a minute are averaged over this window (SageMaker: 1 minute).",
    )
