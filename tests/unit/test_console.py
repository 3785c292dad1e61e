"""The console's pure parts and its page files: what may be proxied, how events are shown, which
areas exist, and the static front (public files, cached, compressed, nothing else)."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from cairn.errors import InvalidInput
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from services.console.app import PLOTLY_BUNDLE, page_front
from services.console.areas import discover_areas
from services.console.domain import EventFilter, EventRing, event_record, proxied_path


def test_only_plain_relative_paths_are_proxied() -> None:
    assert proxied_path("model-packages/credit risk/3") == "model-packages/credit%20risk/3"
    assert proxied_path("admin/audit") == "admin/audit"
    for sneaky in ("../admin/keys", "a/../../b", "a//b", "./a", "", "a\\..\\b", "/etc/passwd"):
        with pytest.raises(InvalidInput):
            proxied_path(sneaky)


def _message(kind: str, correlation: str, data: dict[str, object], at: str) -> bytes:
    return json.dumps(
        {
            "event_id": f"{kind}-{at}",
            "type": kind,
            "occurred_at": at,
            "source": "tests",
            "correlation_id": correlation,
            "signature": "sig",
            "data": data,
        }
    ).encode()


def test_events_are_shown_without_secrets_and_dead_letters_are_marked() -> None:
    shown = event_record(
        "cairn.x.y",
        _message("KeyIssued", "c1", {"name": "n", "nested": {"secret": "s3"}}, "2026-01-01T00:00Z"),
    )
    assert shown["data"] == {"name": "n", "nested": {"secret": "[redacted]"}}
    assert "signature" not in json.dumps(shown) and "dead_letter" not in shown
    dead = event_record(
        "cairn.x.y.dlq", b"{not json", [("cairn-dlq-reason", b"bad"), ("other", None)]
    )
    assert dead["dead_letter"] and dead["reason"] == "bad" and dead["type"] == "(unreadable)"


def test_the_ring_keeps_the_newest_once_and_filters_all_of_it() -> None:
    ring = EventRing(3)
    for at, kind in enumerate(("AFailed", "BDone", "CFailed", "DDone")):
        record = event_record("t", _message(kind, f"c{at % 2}", {}, f"2026-01-01T00:0{at}Z"))
        assert ring.add(record)
        assert not ring.add(dict(record))  # a replayed copy is not kept twice
    assert len(ring) == 3
    assert [r["type"] for r in ring.recent(EventFilter(), 10)] == ["DDone", "CFailed", "BDone"]
    assert [r["type"] for r in ring.recent(EventFilter(type="*Failed"), 10)] == ["CFailed"]
    assert [r["type"] for r in ring.recent(EventFilter(correlation_id="c1"), 1)] == ["DDone"]
    dead = event_record("t.dlq", _message("BDone", "c1", {}, "2026-01-01T00:01Z"))
    assert ring.add(dead)  # the dead letter of a kept event is its own record
    assert ring.recent(EventFilter(dead_letter=True), 10) == [dead]


def test_areas_are_discovered_in_order_with_their_routers() -> None:
    found = discover_areas()
    names = [entry.area.name for entry in found]
    assert names[0] == "overview" and "audit" in names
    assert [entry.area.order for entry in found] == sorted(entry.area.order for entry in found)
    overview = next(entry for entry in found if entry.area.name == "overview")
    assert overview.router is not None


async def _api(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse("api", status_code=401)(scope, receive, send)


async def test_the_page_files_are_public_compressed_and_cached() -> None:
    transport = httpx.ASGITransport(app=page_front(_api))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
        page = await client.get("/ui/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for asset in re.findall(r'(?:src|href)="([^"]+)"', page.text):
            assert "//" not in asset, f"{asset} is not served by the console"
        assert (await client.get("/ui/areas/overview.js")).status_code == 200
        bundle = await client.get(f"/ui/{PLOTLY_BUNDLE}", headers={"Accept-Encoding": "gzip"})
        assert bundle.headers["content-encoding"] == "gzip"
        assert "max-age" in bundle.headers["cache-control"]
        assert len(bundle.content) > 1_000_000  # httpx decoded it: the whole plotly.js
        again = await client.get(
            f"/ui/{PLOTLY_BUNDLE}", headers={"If-None-Match": bundle.headers["etag"]}
        )
        assert again.status_code == 304 and again.content == b""
        missing = await client.get("/ui/../app.py")
        assert missing.status_code in (401, 404)
        assert (await client.get("/ui/nope.js")).json()["code"] == "not_found"
        assert (await client.get("/api/me")).text == "api"
