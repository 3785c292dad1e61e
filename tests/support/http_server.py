"""A real uvicorn server on a free loopback port, for tests that call a service over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn


def _server(app: Any) -> uvicorn.Server:
    return uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=0, lifespan="on", log_config=None, access_log=False
        )
    )


def _url(server: uvicorn.Server) -> str:
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def served(app: Any, name: str, timeout_s: float = 20) -> AsyncIterator[str]:
    """Serve `app` (lifespan included) in this event loop; yields its base URL."""
    server = _server(app)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if task.done() or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start")
        await asyncio.sleep(0.02)
    try:
        yield _url(server)
    finally:
        server.should_exit = True
        await task


@contextlib.contextmanager
def served_in_thread(app: Any, name: str, timeout_s: float = 20) -> Iterator[str]:
    """Serve `app` from its own thread and event loop; yields its base URL."""
    server = _server(app)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start")
        time.sleep(0.01)
    try:
        yield _url(server)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
