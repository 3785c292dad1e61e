"""The audit trail: one immutable record per control-plane change, naming who made it.

Records are create-only JSON objects under the kernel's `platform/audit/<yyyy>/<mm>/<dd>/` (so a
time window lists a few day folders, not the whole trail) and each is announced as an
`AuditRecorded` event. HTTP routes are audited by the kernel (`cairn.auth.http`); a change made
from an event calls `Service.audit`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cairn.contracts.envelope import utc_now
from cairn.errors import ObjectNotFound
from cairn.store.base import ObjectStore

log = logging.getLogger("cairn.audit")

AUDIT_PREFIX = "platform/audit/"
Outcome = Literal["success", "denied", "failed"]


class AuditRecord(BaseModel):
    """Who did what to which resource, when, with what outcome; written once, never changed."""

    model_config = ConfigDict(extra="ignore")

    schema_version: int = 1
    record_id: str = Field(default_factory=lambda: uuid4().hex)
    at: datetime = Field(default_factory=utc_now)
    principal: str
    key_id: str = ""
    action: str
    resource: str
    outcome: Outcome
    status_code: int | None = None
    service: str = ""
    correlation_id: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


def outcome_of(status_code: int) -> Outcome:
    if status_code < 400:
        return "success"
    return "denied" if status_code in (401, 403) else "failed"


def audit_key(record: AuditRecord) -> str:
    at = record.at
    return f"{AUDIT_PREFIX}{at:%Y/%m/%d}/{at:%H%M%S%f}-{record.record_id}.json"


def write_audit_record(store: ObjectStore, record: AuditRecord) -> str:
    """Store a record create-only and return its key."""
    key = audit_key(record)
    store.put_bytes(
        key, record.model_dump_json().encode(), content_type="application/json", if_none_match=True
    )
    return key


def _day_prefixes(since: datetime | None, now: datetime) -> list[str]:
    if since is None:
        return [AUDIT_PREFIX]
    days = (now.date() - since.date()).days
    if days < 0:
        return []
    if days > 366:
        return [AUDIT_PREFIX]
    return [f"{AUDIT_PREFIX}{since + timedelta(days=n):%Y/%m/%d}/" for n in range(days + 1)]


def list_audit_records(
    store: ObjectStore,
    *,
    since: datetime | None = None,
    principal: str | None = None,
    resource: str | None = None,
    action: str | None = None,
    limit: int = 100,
) -> list[AuditRecord]:
    """Records newest first, filtered; `resource` matches as a substring of the resource path."""
    keys = [info.key for prefix in _day_prefixes(since, utc_now()) for info in store.list(prefix)]
    found: list[AuditRecord] = []
    for key in sorted(keys, reverse=True):
        record = _read(store, key)
        if record is None or (since is not None and record.at < since):
            continue
        if principal is not None and record.principal != principal:
            continue
        if resource is not None and resource not in record.resource:
            continue
        if action is not None and record.action != action:
            continue
        found.append(record)
        if len(found) >= limit:
            break
    return found


def _read(store: ObjectStore, key: str) -> AuditRecord | None:
    try:
        return AuditRecord.model_validate_json(store.get_bytes(key))
    except ObjectNotFound:
        return None
    except ValidationError:
        log.error("skipping unreadable audit record %s", key)
        return None
