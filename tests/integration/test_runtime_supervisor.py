"""The supervisor believes only its own child: another process answering `/healthz` on the
service's port is not the service being healthy, and a service whose port was taken comes back on
a free port, recorded in ports.json and runtime.json (instead of crash-looping on the old one).

The supervisor runs in-process (`Supervisor.run`, as `cairn up` runs it) against the session's
broker; the service is a small stand-in that hangs before listening on its first start (so its
port can be taken without a race) and serves the kernel's `/healthz` contract afterwards.
"""

from __future__ import annotations

import asyncio
import http.server
import io
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cairn.runtime.backoff import RestartPolicy
from cairn.runtime.broker import free_port
from cairn.runtime.discovery import ServiceSpec
from cairn.runtime.ports import read_ports, remember_ports
from cairn.runtime.state import ServiceState, read_state
from cairn.runtime.supervisor import Supervisor, SupervisorOptions
from cairn.settings import CairnSettings
from rich.console import Console

pytestmark = pytest.mark.integration

HANG_GUARD_S = 60.0
STAND_IN = """
import http.server, json, os, pathlib, time

marker = pathlib.Path(os.environ["STAND_IN_MARKER"])
if not marker.exists():  # the first start hangs before it listens, until it is killed
    marker.write_text(str(os.getpid()))
    time.sleep(3600)


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"status": "ok", "service": "standin", "pid": str(os.getpid())})
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


port = int(os.environ["CAIRN_HTTP_PORT"])
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


class Imposter(http.server.BaseHTTPRequestHandler):
    """Another process's server on the port: healthy, but not the supervised child."""

    probes = 0

    def do_GET(self) -> None:
        type(self).probes += 1
        body = json.dumps({"status": "ok", "service": "standin", "pid": str(os.getpid())})
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def bound_then_served(port: int) -> Iterator[Callable[[], None]]:
    """The port bound but not listening (so the supervisor may still pick it); calling the
    yielded function starts the imposter listening on it."""
    server = http.server.HTTPServer(("127.0.0.1", port), Imposter, bind_and_activate=False)
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.server_bind()
    thread = threading.Thread(target=server.serve_forever, daemon=True)

    def listen() -> None:
        server.server_activate()
        thread.start()

    try:
        yield listen
    finally:
        if thread.is_alive():
            server.shutdown()
        server.server_close()


async def until(what: str, condition: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline:
        if result := condition():
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {what} after {HANG_GUARD_S:.0f}s")


def stand_in(home: Path) -> ServiceState | None:
    state = read_state(home)
    return next((s for s in state.services if s.name == "standin"), None) if state else None


async def test_a_taken_port_is_not_health_and_the_service_moves_to_a_free_port(
    kafka_settings: CairnSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "services" / "standin"
    package.mkdir(parents=True)
    (package / "__main__.py").write_text(STAND_IN)
    marker = tmp_path / "first-start.pid"
    monkeypatch.setenv("STAND_IN_MARKER", str(marker))
    home = kafka_settings.home
    port = free_port("127.0.0.1")
    remember_ports(home, {"standin": port})
    options = SupervisorOptions(
        settings=kafka_settings,
        services=[ServiceSpec("standin", "standin", package, pythonpath=package.parent)],
        grace_period_s=5,
        restart_policy=RestartPolicy(initial_delay_s=0.1),
        unhealthy_kill_after_s=3600,  # the test kills the hung start itself
    )
    supervisor = Supervisor(options, Console(file=io.StringIO()))

    with bound_then_served(port) as imposter_listens:
        running = asyncio.create_task(supervisor.run())
        try:
            first = await until("first start", lambda: marker.exists() and stand_in(home))
            assert first.port == port  # its remembered port looked free
            imposter_listens()
            # A probe answered, and the tick that made it wrote its verdict before the next.
            await until("two probes of the imposter", lambda: Imposter.probes >= 2)
            assert stand_in(home).status != "healthy"  # type: ignore[union-attr]

            os.kill(int(marker.read_text()), signal.SIGKILL)  # the hung start dies
            moved = await until(
                "the restart to be healthy",
                lambda: (s := stand_in(home)) and s.status == "healthy" and s,
            )
        finally:
            supervisor.request_stop()
            await asyncio.wait_for(running, HANG_GUARD_S)

    assert moved.port != port and moved.url == f"http://127.0.0.1:{moved.port}"
    assert moved.restarts == 1
    assert read_ports(home)["standin"] == moved.port  # kept for the next `cairn up`
