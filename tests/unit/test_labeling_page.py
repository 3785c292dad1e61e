"""The page's files are served without a credential, from this service only; nothing else is."""

from __future__ import annotations

import re

import httpx
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from services.labeling.page import PageFront


async def api(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse("api", status_code=401)(scope, receive, send)


async def get(path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=PageFront(api))
    async with httpx.AsyncClient(transport=transport, base_url="http://labeling") as client:
        return await client.get(path)


async def test_the_page_and_its_assets_come_from_the_service_itself() -> None:
    page = await get("/ui/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        assert "//" not in asset, f"{asset} is not served by the service"
    for name in ("app.js", "app.css", "admin.html", "admin.js"):
        assert (await get(f"/ui/{name}")).status_code == 200, name


async def test_everything_else_goes_to_the_guarded_api() -> None:
    assert (await get("/labeling-jobs")).text == "api"
    assert (await get("/ui/../routes.py")).status_code in (401, 404)
    assert (await get("/ui/nope.js")).status_code == 404
    assert (await get("/")).status_code == 307
