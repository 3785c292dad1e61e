"""The echo service's own event types, loaded through CAIRN_CONTRACT_MODULES."""

from __future__ import annotations

from cairn.contracts.catalogue import event
from pydantic import BaseModel, ConfigDict, Field


@event(owner="echo", key="request_id", partitions=2)
class EchoRequested(BaseModel):
    """Someone asks echo to store a message and answer."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(pattern=r"^[A-Za-z0-9-]{1,64}$")
    message: str = Field(min_length=1)
    delay_s: float = Field(default=0.0, ge=0, le=30, description="Work time before answering.")


@event(owner="echo", key="request_id", partitions=2)
class EchoCompleted(BaseModel):
    """The message is stored under `object_key`."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    message: str
    object_key: str
