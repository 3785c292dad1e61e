"""A service's web page: static files served by the service itself under `/ui/` (no CDN).

The files hold no data and no secret: a page signs in with a credential the person types, keeps it
in the tab's session storage and sends it as `Authorization: Bearer` on every API call, where the
kernel's guard checks it. So the files are served in front of the API without a credential
(`Service.front`), and every other path goes to the API untouched.

    service.front(lambda api: StaticFront(api, "services.labeling"))

Files are read once at start-up from the package's `static/` folder (and its sub-folders), plus
`extra` files taken from installed packages (a vendored chart library). Each answer carries an
ETag (a conditional GET costs a 304) and, for clients that accept it, a gzip body compressed once.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

UI_PREFIX = "/ui/"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
# The page loads nothing from elsewhere: scripts, styles, images and calls stay on this origin.
STRICT_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
# Page files may change with a deploy: revalidate (cheap, by ETag). Vendored files change only
# with their package's version, so a day's caching is safe.
PAGE_CACHE = "no-cache"
VENDOR_CACHE = "public, max-age=86400"
_GZIP_MIN_BYTES = 1024


@dataclass
class _Asset:
    body: bytes
    media_type: str
    cache_control: str
    etag: str
    gzipped: bytes | None = None

    def gzip_body(self) -> bytes:
        if self.gzipped is None:
            self.gzipped = gzip.compress(self.body, compresslevel=6, mtime=0)
        return self.gzipped


def _suffix(name: str) -> str:
    return "." + name.rsplit(".", 1)[-1] if "." in name.rsplit("/", 1)[-1] else ""


def _walk(folder: Traversable, prefix: str = "") -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for entry in folder.iterdir():
        if entry.name.startswith((".", "_")):
            continue
        if entry.is_dir():
            found.update(_walk(entry, f"{prefix}{entry.name}/"))
        elif _suffix(entry.name) in MEDIA_TYPES:
            found[prefix + entry.name] = entry.read_bytes()
    return found


def _asset(body: bytes, name: str, cache_control: str) -> _Asset:
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return _Asset(body, MEDIA_TYPES[_suffix(name)], cache_control, etag)


class StaticFront:
    """Serves `/ui/<path>` from `<package>/<folder>/` (and `extra`); other paths go to the API.

    Args:
        api: the app behind the front (the service's guarded API).
        package: the package holding the files (`"services.labeling"`).
        folder: the folder inside it.
        extra: more files by their path under `/ui/` (`{"vendor/plotly.min.js": <file>}`), cached
            by browsers for a day.
        csp: the Content-Security-Policy of every answer.
    """

    def __init__(
        self,
        api: ASGIApp,
        package: str,
        folder: str = "static",
        *,
        extra: Mapping[str, Traversable] | None = None,
        csp: str = STRICT_CSP,
    ) -> None:
        self.api = api
        self.csp = csp
        files = _walk(resources.files(package) / folder)
        self.assets = {name: _asset(body, name, PAGE_CACHE) for name, body in files.items()}
        for name, source in (extra or {}).items():
            self.assets[name] = _asset(source.read_bytes(), name, VENDOR_CACHE)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "") if scope["type"] == "http" else ""
        if path in ("/ui", "/"):
            await RedirectResponse(UI_PREFIX)(scope, receive, send)
            return
        if not path.startswith(UI_PREFIX):
            await self.api(scope, receive, send)
            return
        response = await self._answer(path[len(UI_PREFIX) :] or "index.html", Headers(scope=scope))
        await response(scope, receive, send)

    async def _answer(self, name: str, request_headers: Headers) -> Response:
        asset = self.assets.get(name)
        if asset is None:
            return JSONResponse(
                {"error": f"no page file {name!r}", "code": "not_found"}, status_code=404
            )
        headers = {
            "Content-Security-Policy": self.csp,
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": asset.cache_control,
            "ETag": asset.etag,
            "Vary": "Accept-Encoding",
        }
        if asset.etag in request_headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        body = asset.body
        if len(body) >= _GZIP_MIN_BYTES and "gzip" in request_headers.get("accept-encoding", ""):
            # Compressed once, off the event loop (a vendored bundle is megabytes).
            body = (
                await asyncio.to_thread(asset.gzip_body) if asset.gzipped is None else asset.gzipped
            )
            headers["Content-Encoding"] = "gzip"
        return Response(body, media_type=asset.media_type, headers=headers)
