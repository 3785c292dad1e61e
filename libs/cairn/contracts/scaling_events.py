"""Endpoint scaling events: a variant's instance count changed, a scaled-to-zero one woke up.

The deployer owns the desired instance count of every variant (`VariantState.instance_count`):
its target-tracking scaling policies (Application Auto Scaling's, per variant) set it and say
why with `EndpointVariantScaled`. The gateway reports each cold start of a variant at zero
instances (the first request loads its model) with `EndpointColdStarted`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from cairn.contracts.catalogue import event


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


@event(owner="deployer", key="endpoint_name")
class EndpointVariantScaled(_Data):
    """A scaling policy moved a variant's desired instance count (a scaling activity)."""

    endpoint_name: str
    variant_name: str
    from_instances: int = Field(ge=0)
    to_instances: int = Field(ge=0)
    invocations_per_instance: float = Field(
        ge=0, description="The measured InvocationsPerInstance (per minute) that decided it."
    )
    reason: str
    revision: int = Field(ge=1, description="The endpoint revision that carries the new count.")


@event(owner="gateway", key="endpoint_name")
class EndpointColdStarted(_Data):
    """A gateway process loaded an endpoint's variants at zero instances for a request."""

    endpoint_name: str
    variants: list[str] = Field(description="The variants at zero instances it loaded.")
    revision: int = Field(ge=1)
    cold_start_s: float = Field(ge=0, description="From the request to its models loaded.")
    process: int = Field(ge=0, description="The gateway process (0: the primary) that loaded.")
