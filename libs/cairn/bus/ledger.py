"""Which events a consumer group has already handled, kept in the object store so restarts keep it.

Delivery is at least once, so the same `event_id` can arrive again (a crash between the handler
and the offset commit, a producer retry, a user re-publishing). One create-only object per event id
makes the check survive restarts and work across every member of a worker pool.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from uuid import UUID

from cairn.errors import InvalidInput, PreconditionFailed
from cairn.store.base import ObjectStore

LEDGER_PREFIX = "_bus/processed"
_GROUP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class ProcessedLedger:
    """Create-only markers under `_bus/processed/<group>/<event_id>` in an object store."""

    def __init__(self, store: ObjectStore, group_id: str) -> None:
        if not _GROUP_ID.match(group_id):
            raise InvalidInput(f"consumer group id {group_id!r} cannot name a ledger folder")
        self.store = store
        self.group_id = group_id

    def key_for(self, event_id: UUID | str) -> str:
        return f"{LEDGER_PREFIX}/{self.group_id}/{UUID(str(event_id))}"

    async def seen(self, event_id: UUID | str) -> bool:
        """Whether this group already handled the event."""
        return await asyncio.to_thread(self.store.exists, self.key_for(event_id))

    async def mark(self, event_id: UUID | str, *, event_type: str = "") -> bool:
        """Record the event as handled; False when it already was (a concurrent duplicate)."""
        body = json.dumps(
            {
                "event_id": str(event_id),
                "type": event_type,
                "group_id": self.group_id,
                "processed_at": datetime.now(UTC).isoformat(),
            }
        ).encode()
        try:
            await asyncio.to_thread(
                self.store.put_bytes,
                self.key_for(event_id),
                body,
                content_type="application/json",
                if_none_match=True,
            )
        except PreconditionFailed:
            return False
        return True
