"""Routes every service serves for its operators: keys and the audit trail (admin scope).

The key ring and the trail live in the shared store, so any service answers for the platform;
the CLI asks the gateway by default.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from cairn.audit import list_audit_records
from cairn.auth.http import CurrentPrincipal, requires
from cairn.auth.keys import issue_key, list_keys, revoke_key
from cairn.auth.scopes import Scope

router = APIRouter(prefix="/admin", tags=["admin"])


class KeyRequest(BaseModel):
    name: str = Field(default="user", description="The principal the key authenticates as.")
    scopes: list[Scope] = Field(min_length=1)
    endpoints: list[str] | None = Field(
        default=None, description="Endpoints an `invoke` key may call; default all."
    )
    description: str = Field(default="", max_length=200)
    expires_at: datetime | None = None


@router.post("/keys", status_code=201, dependencies=[requires("admin", action="key.create")])
async def create_key(
    body: KeyRequest, request: Request, principal: CurrentPrincipal
) -> dict[str, Any]:
    """Issue a key; its secret is in this answer only."""
    state = request.app.state
    issued = await asyncio.to_thread(
        issue_key,
        state.store,
        state.secret_box,
        name=body.name,
        scopes=body.scopes,
        created_by=principal.name,
        endpoints=body.endpoints,
        description=body.description,
        expires_at=body.expires_at,
    )
    return issued.shown()


@router.get("/keys", dependencies=[requires("admin")])
async def get_keys(request: Request) -> dict[str, list[dict[str, Any]]]:
    """Every key without its secret: id, name, scopes, endpoints, expiry, status."""
    keys = await asyncio.to_thread(list_keys, request.app.state.store)
    return {"keys": [key.public() for key in sorted(keys, key=lambda key: key.created_at)]}


@router.delete("/keys/{key_id}", dependencies=[requires("admin", action="key.revoke")])
async def delete_key(key_id: str, request: Request) -> dict[str, Any]:
    """Revoke a key: it stops working on every service within the key ring's cache time."""
    key = await asyncio.to_thread(revoke_key, request.app.state.store, key_id)
    request.app.state.authenticator.ring.forget(key_id)
    return key.public()


@router.get("/audit", dependencies=[requires("admin")])
async def get_audit(
    request: Request,
    since: datetime | None = None,
    principal: str | None = None,
    resource: str | None = None,
    action: str | None = None,
    limit: int = Query(default=100, ge=1, le=10_000),
) -> dict[str, list[dict[str, Any]]]:
    """Audit records, newest first."""
    records = await asyncio.to_thread(
        list_audit_records,
        request.app.state.store,
        since=since,
        principal=principal,
        resource=resource,
        action=action,
        limit=limit,
    )
    return {"records": [record.model_dump(mode="json") for record in records]}
