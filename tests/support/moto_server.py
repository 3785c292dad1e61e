"""A real S3-protocol server (moto) in a subprocess on a free loopback port, plus fixtures.

Fixtures: `s3_endpoint` (session; `http://127.0.0.1:PORT`), `s3_bucket` (a fresh bucket name per
test class), `s3_settings` (CairnSettings pointing at that bucket) and `s3_store` (its store).

moto checks `If-None-Match` / `If-Match` and then writes as two steps with no lock between them,
so two racing conditional PUTs can both win. Real S3 and MinIO make them atomic; the server below
serializes mutating requests so it behaves the same. Run it by hand with
`python -m tests.support.moto_server`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cairn.settings import CairnSettings
from cairn.store import ObjectStore, open_store

REPO_ROOT = Path(__file__).resolve().parents[2]
S3_ACCESS_KEY = "cairn-test"
S3_SECRET_KEY = "cairn-test-secret"

_WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _serialize_writes(app: _WSGIApp) -> _WSGIApp:
    """Run one mutating request at a time, so conditional writes are atomic as on real S3."""
    lock = threading.Lock()

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") in ("PUT", "POST", "DELETE"):
            with lock:
                return list(app(environ, start_response))
        return app(environ, start_response)

    return wrapped


def serve(host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve moto's S3 until killed; print `PORT <n>` once listening."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(
        host, port, _serialize_writes(app), threaded=True, request_handler=MotoRequestHandler
    )
    print(f"PORT {server.server_port}", flush=True)
    server.serve_forever()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of a moto S3 server that lives for the whole test session."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MOTO_ALLOW_NONEXISTENT_REGION": "true"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.moto_server"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"moto server did not start (said {line!r}, rc={proc.poll()})")
        endpoint = f"http://127.0.0.1:{int(line.split()[1])}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(endpoint, timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="class")
def s3_bucket() -> str:
    """A bucket name no other test class uses (created on first write)."""
    return f"cairn-test-{uuid.uuid4().hex[:16]}"


@pytest.fixture(scope="class")
def s3_settings(s3_endpoint: str, s3_bucket: str) -> CairnSettings:
    """Settings whose store is the class's bucket on the moto server."""
    return CairnSettings(
        store_url=f"s3://{s3_bucket}",
        s3_endpoint=s3_endpoint,
        s3_access_key=S3_ACCESS_KEY,
        s3_secret_key=S3_SECRET_KEY,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="class")
def s3_store(s3_settings: CairnSettings) -> ObjectStore:
    """The class's bucket as an ObjectStore."""
    return open_store(settings=s3_settings)


if __name__ == "__main__":
    serve()
