"""What a service's handlers ask of the kernel's `Service`, as protocols (tests pass fakes).

Handlers take these instead of the whole `Service`, so a unit test hands in a small recorder.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol

from pydantic import BaseModel

from cairn.audit import AuditRecord, Outcome
from cairn.auth.principal import Principal
from cairn.contracts.envelope import Envelope


class Publish(Protocol):
    """`Service.publish`: send an event (signed by the service), chained to its cause."""

    def __call__(
        self,
        data: BaseModel,
        cause: Envelope[Any] | None = None,
        correlation_id: str | None = None,
    ) -> Awaitable[Envelope[Any]]: ...


class DeadLetter(Protocol):
    """`Service.dead_letter`: send an envelope to its event type's dead-letter topic."""

    def __call__(
        self, envelope: Envelope[Any], reason: str, *, error: str = "", group: str = ""
    ) -> Awaitable[None]: ...


class Authority(Protocol):
    """Who signed a privileged request, and the audit trail (`Service`'s own methods)."""

    async def principal_of(self, envelope: Envelope[Any]) -> Principal: ...

    async def audit(
        self,
        *,
        action: str,
        resource: str,
        principal: Principal | str,
        outcome: Outcome = "success",
        correlation_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditRecord: ...


class Platform(Authority, Protocol):
    """All of the above as methods of one object (the `Service` itself)."""

    async def publish(
        self,
        data: BaseModel,
        cause: Envelope[Any] | None = None,
        correlation_id: str | None = None,
    ) -> Envelope[Any]: ...

    async def dead_letter(
        self, envelope: Envelope[Any], reason: str, *, error: str = "", group: str = ""
    ) -> None: ...
