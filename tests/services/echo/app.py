"""Wiring of the echo service: one handler that writes an object, then publishes the answer."""

from __future__ import annotations

import asyncio
import json

from cairn.contracts.envelope import Envelope
from cairn.service import Service

from .contracts import EchoCompleted, EchoRequested


def create_service() -> Service:
    """The echo service with its single handler."""
    service = Service("echo")

    @service.on(EchoRequested)
    async def echo(envelope: Envelope[EchoRequested]) -> None:
        request = envelope.data
        await asyncio.sleep(request.delay_s)  # lets tests stop the service mid-handler
        key = f"echo/{request.request_id}.json"
        body = {"request_id": request.request_id, "message": request.message}
        # Deterministic key: a redelivered request overwrites the same object (idempotent).
        service.store.put_bytes(key, json.dumps(body).encode(), content_type="application/json")
        await service.publish(
            EchoCompleted(request_id=request.request_id, message=request.message, object_key=key),
            cause=envelope,
        )

    return service


service = create_service()
