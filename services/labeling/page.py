"""The annotator's page and the admin page: static files served by the service itself (no CDN).

The files hold no data and no secret: the page signs in with a credential the person types, keeps
it in the tab's session storage and sends it as `Authorization: Bearer` on every API call, where
the kernel's guard checks it. So the files are served in front of the API without a credential
(`Service.front`), and everything else goes to the API untouched.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

UI_PREFIX = "/ui/"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
# The page loads nothing from elsewhere: scripts, styles, images and calls stay on this origin.
_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def _assets() -> dict[str, bytes]:
    folder = resources.files("services.labeling") / "static"
    return {
        entry.name: entry.read_bytes()
        for entry in folder.iterdir()
        if entry.is_file() and entry.name.rsplit(".", 1)[-1] in ("html", "js", "css")
    }


class PageFront:
    """Serves `/ui/<file>` from `static/`; every other path goes to the API."""

    def __init__(self, api: ASGIApp) -> None:
        self.api = api
        self.assets = _assets()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "") if scope["type"] == "http" else ""
        if path in ("/ui", "/"):
            await RedirectResponse(UI_PREFIX)(scope, receive, send)
            return
        if not path.startswith(UI_PREFIX):
            await self.api(scope, receive, send)
            return
        await self._asset(path[len(UI_PREFIX) :] or "index.html")(scope, receive, send)

    def _asset(self, name: str) -> Any:
        body = self.assets.get(name)
        suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
        if body is None or suffix not in _TYPES:
            return PlainTextResponse("not found", status_code=404)
        return Response(
            body,
            media_type=_TYPES[suffix],
            headers={
                "Content-Security-Policy": _CSP,
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-cache",
            },
        )
