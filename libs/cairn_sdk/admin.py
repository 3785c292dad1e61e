"""Keys and the audit trail: the admin routes every service's kernel serves."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cairn_sdk.base import ServiceCaller
from cairn_sdk.urls import SERVICES, ServiceName


class AdminCalls(ServiceCaller):
    """`/admin/keys` and `/admin/audit`, asked of the gateway or else any configured service."""

    def admin_service(self) -> ServiceName:
        """The service to ask: the gateway when configured, else the first one with a URL."""
        for name in ("gateway", *SERVICES):
            if name in self.urls:
                return name  # type: ignore[return-value]
        return "gateway"  # not configured: `url()` says how to give it

    def create_key(
        self,
        name: str = "user",
        *,
        scopes: Sequence[str] = ("read",),
        endpoints: Sequence[str] | None = None,
        expires_at: datetime | None = None,
        description: str = "",
    ) -> dict[str, Any]:
        """A new key; its `token` (`KEY_ID:SECRET`) is in this answer only."""
        body = {
            "name": name,
            "scopes": list(scopes),
            "endpoints": list(endpoints) if endpoints else None,
            "expires_at": expires_at.isoformat() if expires_at else None,
            "description": description,
        }
        return dict(self._json("POST", self.admin_service(), "/admin/keys", json=body))

    def list_keys(self) -> list[dict[str, Any]]:
        """Every key, without secrets: id, name, scopes, endpoints, expiry, status."""
        return list(self._json("GET", self.admin_service(), "/admin/keys")["keys"])

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        """Revoke a key on every service; the answer is the key as it is now."""
        return dict(self._json("DELETE", self.admin_service(), f"/admin/keys/{key_id}"))

    def audit_records(
        self,
        *,
        since: datetime | None = None,
        principal: str | None = None,
        resource: str | None = None,
        action: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Audit records, newest first, filtered as given."""
        params: dict[str, str | int] = {"limit": limit}
        if since is not None:
            params["since"] = since.isoformat()
        for field, value in (("principal", principal), ("resource", resource), ("action", action)):
            if value:
                params[field] = value
        answer = self._json("GET", self.admin_service(), "/admin/audit", params=params)
        return list(answer["records"])
