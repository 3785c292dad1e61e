"""The envelope every message on the bus carries, whoever produced it."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

DataT = TypeVar("DataT", bound=BaseModel)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel, Generic[DataT]):
    """A past-tense fact or a request, with the ids that make handling idempotent and traceable.

    `event_id` is the idempotency key; `correlation_id` ties every event of one workflow together;
    `causation_id` is the `event_id` of the event that caused this one.
    """

    model_config = ConfigDict(extra="forbid")

    event_id: UUID = Field(default_factory=uuid4, description="Unique id; the idempotency key.")
    type: str = Field(description="Event type name, e.g. TrainingJobCompleted.")
    occurred_at: AwareDatetime = Field(default_factory=utc_now)
    source: str = Field(description="Service or client that produced the event.")
    correlation_id: str = Field(description="Shared by every event of one workflow.")
    causation_id: str | None = Field(default=None, description="event_id of the cause, if any.")
    schema_version: int = Field(default=1, ge=1)
    key_id: str | None = Field(
        default=None,
        description="The key that signed the envelope (`service:<name>` for services).",
    )
    signature: str | None = Field(
        default=None,
        description="Hex HMAC-SHA256 of the canonical envelope without `signature` (cairn.auth).",
    )
    data: DataT


@functools.cache
def envelope_class(model: type[BaseModel]) -> type[Envelope[Any]]:
    """`Envelope[model]`, held for good.

    pydantic keeps parametrised generics in a weak cache, so once the garbage collector takes
    the class every publish or decode built it again: 2-3 ms of schema building on the event
    loop, which was a third of a gateway's capture flush (bench/gateway/README.md).
    """
    return Envelope[model]  # type: ignore[valid-type]


class RawEnvelope(Envelope[Any]):
    """An envelope whose `data` is not yet validated against its event model."""

    data: dict[str, Any]
