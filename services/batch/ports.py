"""What the batch service asks of the kernel's `Service` (tests pass a fake)."""

from __future__ import annotations

from typing import Any, Protocol

from cairn.audit import AuditRecord, Outcome
from cairn.auth import Principal
from cairn.contracts.envelope import Envelope
from pydantic import BaseModel


class Platform(Protocol):
    async def publish(
        self,
        data: BaseModel,
        cause: Envelope[Any] | None = None,
        correlation_id: str | None = None,
    ) -> Envelope[Any]: ...

    async def dead_letter(
        self, envelope: Envelope[Any], reason: str, *, error: str = "", group: str = ""
    ) -> None: ...

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
