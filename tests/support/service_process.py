"""One Cairn service as its own OS process, for the kill -9 tests: start, wait ready, SIGKILL.

The process gets the test's broker, store and platform key through the same environment a
deployment would give it, on a free port of its own that it keeps across restarts.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from cairn.settings import CairnSettings

from tests.support.auth import PLATFORM_KEY


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServiceProcess:
    """`python -m services.<name>`; `start` waits for `/readyz`, `kill` is a SIGKILL."""

    def __init__(
        self,
        name: str,
        settings: CairnSettings,
        log: Path,
        *,
        env: dict[str, str] | None = None,
        hang_guard_s: float = 90.0,
    ) -> None:
        self.name = name
        self.env = {
            **os.environ,
            "CAIRN_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "CAIRN_STORE_URL": str(settings.store_url),
            "CAIRN_PLATFORM_KEY": PLATFORM_KEY,
            "CAIRN_HOME": str(settings.home),
            "CAIRN_OTEL_EXPORTER": "none",
            "CAIRN_BUS_SESSION_TIMEOUT_MS": "1000",
            "CAIRN_BUS_HEARTBEAT_INTERVAL_MS": "100",
            **(env or {}),
        }
        self.log = log
        self.hang_guard_s = hang_guard_s
        self.process: subprocess.Popen[bytes] | None = None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"services.{self.name}"],
                env={**self.env, "CAIRN_HTTP_PORT": str(self.port), "CAIRN_HTTP_HOST": "127.0.0.1"},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + self.hang_guard_s
        while True:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"the {self.name} service did not start"
            time.sleep(0.1)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGKILL it if it still runs (fixture teardown)."""
        if self.process is not None and self.process.poll() is None:
            self.kill()
