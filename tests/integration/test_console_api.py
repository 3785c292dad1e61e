"""The console's API over real HTTP: the proxy forwards the caller's own key to the platform's
services only (a read-only key gets the owning service's 403, and the change is audited there under
the caller), refuses unknown services and path tricks, and the bus tail shows events and dead
letters as they happen, on the real broker."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from cairn.audit import list_audit_records
from cairn.auth.http import CurrentPrincipal, requires
from cairn.bus import ensure_topics
from cairn.bus.broker import kafka_client_options
from cairn.service import Service
from cairn.settings import CairnSettings
from cairn.store import ObjectStore, open_store
from fastapi import APIRouter
from pydantic import SecretStr

from services.console.app import create_service
from services.console.config import ConsoleSettings
from tests.support.auth import PLATFORM_KEY, admin_headers, scoped_headers
from tests.support.http_server import served

pytestmark = pytest.mark.integration
WAIT_S = 30.0

# A stand-in for an owning service: a real kernel Service (guard, scopes, audit) with two routes.
things = APIRouter()


@things.get("/things/{name}", dependencies=[requires("read")])
async def read_thing(name: str, principal: CurrentPrincipal) -> dict[str, Any]:
    return {"name": name, "asked_by": principal.name}


@things.post("/things/{name}/approve", dependencies=[requires("approve", action="thing.approve")])
async def approve_thing(name: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "approved": True, "reason": body.get("reason")}


@dataclass
class Stack:
    console: str
    store: ObjectStore
    settings: CairnSettings
    admin: dict[str, str]
    viewer: dict[str, str]


@pytest.fixture
async def stack(
    kafka_settings: CairnSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Stack]:
    settings = kafka_settings.model_copy(
        update={
            "platform_key": SecretStr(PLATFORM_KEY),
            "store_url": f"file://{tmp_path / 'store'}",
        }
    )
    store = open_store(settings=settings)
    registry = Service("registry", settings=settings, store=store)
    registry.include_router(things)
    console = create_service(settings, store, ConsoleSettings(urls_refresh_s=0))
    async with served(registry.asgi, "registry") as registry_url:
        monkeypatch.setenv("CAIRN_REGISTRY_URL", registry_url)
        monkeypatch.setenv("CAIRN_TRAINER_URL", "http://127.0.0.1:9")  # nothing listens there
        async with served(console.asgi, "console") as console_url:
            yield Stack(
                console_url,
                store,
                settings,
                admin_headers(store, settings),
                scoped_headers(store, settings, ["read"], name="viewer"),
            )


async def test_the_proxy_acts_as_the_caller_and_only_towards_the_platform(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.console, timeout=WAIT_S) as client:
        assert (await client.get("/api/me")).status_code == 401
        assert (await client.get("/api/proxy/registry/things/a")).status_code == 401
        me = (await client.get("/api/me", headers=stack.viewer)).json()
        assert me == {"principal": "viewer", "scopes": ["read"], "admin": False}

        read = await client.get("/api/proxy/registry/things/a%20b", headers=stack.viewer)
        assert read.status_code == 200 and read.json() == {"name": "a b", "asked_by": "viewer"}

        refused = await client.post(
            "/api/proxy/registry/things/a/approve", json={"reason": "ok"}, headers=stack.viewer
        )
        assert refused.status_code == 403 and "approve" in refused.json()["error"]
        approved = await client.post(
            "/api/proxy/registry/things/a/approve", json={"reason": "ok"}, headers=stack.admin
        )
        assert approved.json() == {"name": "a", "approved": True, "reason": "ok"}
        records = await asyncio.to_thread(
            list_audit_records, stack.store, action="thing.approve", limit=10
        )
        assert sorted((r.principal, r.outcome, r.service) for r in records) == [
            ("admin", "success", "registry"),
            ("viewer", "denied", "registry"),
        ]

        unknown = await client.get("/api/proxy/example.com/x", headers=stack.admin)
        assert unknown.status_code == 404 and "example.com" in unknown.json()["error"]
        not_running = await client.get("/api/proxy/tuner/jobs", headers=stack.admin)
        assert not_running.status_code == 404 and "not running" in not_running.json()["error"]
        down = await client.get("/api/proxy/trainer/training-jobs", headers=stack.admin)
        assert down.status_code == 503 and down.json()["code"] == "unavailable"
        for sneaky in ("things/../../admin/keys", "things/%2e%2e/%2e%2e/admin/keys", "things//x"):
            raw = httpx.URL(f"{stack.console}/api/proxy/registry/{sneaky}")
            answer = await client.send(client.build_request("GET", raw, headers=stack.admin))
            assert answer.status_code in (400, 404), (sneaky, answer.status_code)
            assert "error" in answer.json(), sneaky

        areas = (await client.get("/api/areas", headers=stack.viewer)).json()
        assert [a["name"] for a in areas][:1] == ["overview"]
        assert all(a["script"] == f"/ui/areas/{a['name']}.js" for a in areas)


async def test_events_and_dead_letters_reach_the_page(stack: Stack) -> None:
    topic = "cairn.kernel.audit-recorded"
    await ensure_topics(stack.settings)
    producer = AIOKafkaProducer(**kafka_client_options(stack.settings, client_id="console-test"))
    await producer.start()
    marker = uuid.uuid4().hex
    try:
        async with httpx.AsyncClient(base_url=stack.console, timeout=WAIT_S) as client:
            # The tail starts at the latest offsets: send until one is seen, so it is positioned.
            deadline = time.monotonic() + WAIT_S
            while not (
                await client.get(f"/api/events/recent?correlation_id={marker}", headers=stack.admin)
            ).json():
                assert time.monotonic() < deadline, "the console never saw the bus"
                await producer.send_and_wait(topic, _envelope("AuditRecorded", marker))
                await asyncio.sleep(0.2)

            async with client.stream(
                "GET", f"/api/events/stream?correlation_id={marker}", headers=stack.admin
            ) as live:
                await producer.send_and_wait(
                    topic + ".dlq",
                    _envelope("AuditRecorded", marker, {"token": "CKIA:s3cret"}),
                    headers=[("cairn-dlq-reason", b"handler refused it")],
                )
                lines = live.aiter_lines()
                async with asyncio.timeout(WAIT_S):
                    line = await anext(lines)
                    # Copies sent while the tail was positioning may still arrive first.
                    while not line.startswith("data: ") or '"dead_letter"' not in line:
                        line = await anext(lines)
            assert '"dead_letter": true' in line and "handler refused it" in line
            assert "s3cret" not in line

            dead = (
                await client.get(
                    f"/api/events/recent?dead_letter=true&correlation_id={marker}",
                    headers=stack.admin,
                )
            ).json()
            assert [d["reason"] for d in dead] == ["handler refused it"]
            assert dead[0]["data"]["token"] == "[redacted]"
            bad = await client.get("/api/events/recent?limit=0", headers=stack.admin)
            assert bad.status_code == 422 and "error" in bad.json()
    finally:
        await producer.stop()


def _envelope(kind: str, correlation_id: str, data: dict[str, Any] | None = None) -> bytes:
    return json.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "type": kind,
            "occurred_at": "2026-11-30T12:00:00+00:00",
            "source": "tests",
            "correlation_id": correlation_id,
            "data": data or {"record_id": "r", "principal": "tests"},
        }
    ).encode()
