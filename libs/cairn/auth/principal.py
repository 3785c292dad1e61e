"""Who is calling, and what they may do."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cairn.auth.scopes import ADMIN, ALL_ENDPOINTS, SCOPES


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a user's key, a service's own credential, or auth switched off."""

    name: str
    key_id: str
    scopes: frozenset[str]
    endpoints: frozenset[str] = field(default_factory=lambda: frozenset({ALL_ENDPOINTS}))
    kind: Literal["user", "service", "anonymous"] = "user"

    def allows(self, scope: str, endpoint: str | None = None) -> bool:
        """True when the key holds `scope` (admin holds all); `invoke` may be endpoint-bound."""
        if ADMIN in self.scopes:
            return True
        if scope not in self.scopes:
            return False
        if scope == "invoke" and endpoint is not None:
            return ALL_ENDPOINTS in self.endpoints or endpoint in self.endpoints
        return True


AUTH_DISABLED = Principal(name="anonymous", key_id="", scopes=frozenset(SCOPES), kind="anonymous")
