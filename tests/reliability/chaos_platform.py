"""The platform the chaos suite shoots at: one `cairn up`, its services' state, its event log.

Driven only from outside, as a user or an operator would: `cairn up` as a subprocess, the
supervisor's `runtime.json` (what `cairn status` reads) for PIDs, `/healthz` for health, the
services' HTTP APIs for the truth, and `cairn events tail --json` for every event.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from cairn.runtime.broker import free_port
from cairn.runtime.ports import remember_ports

from tests.support.auth import home_headers

CAIRN = str(Path(sys.executable).with_name("cairn"))
SERVICES = ("trainer", "registry", "deployer", "gateway", "monitor", "batch", "tuner")
HANG_GUARD_S = 150.0
# Short leases and session timeouts, so a killed worker's job and partitions move on in seconds.
CHAOS_ENV = {
    "CAIRN_OTEL_EXPORTER": "none",
    "CAIRN_BUS_SESSION_TIMEOUT_MS": "1500",
    "CAIRN_BUS_HEARTBEAT_INTERVAL_MS": "300",
    "CAIRN_TRAINER_LEASE_S": "3",
    "CAIRN_TRAINER_HEARTBEAT_S": "0.5",
}


def wait_for(
    what: str, check: Callable[[], Any], timeout_s: float, log: Path, interval_s: float = 0.2
) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after the hang guard."""
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}\n{tail}")
        time.sleep(interval_s)
    return result


def gone(pid: int) -> bool:
    """Whether the process has ended (a zombie waiting for the supervisor to reap it counts)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


class EventLog:
    """`cairn events tail --json --from-beginning` in the background, parsed as it grows."""

    def __init__(self, env: dict[str, str], path: Path) -> None:
        self.path = path
        self._events: list[dict[str, Any]] = []
        self._read_bytes = 0
        with path.open("wb") as sink:
            self.process = subprocess.Popen(
                [CAIRN, "events", "tail", "--json", "--from-beginning"],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )

    def all(self) -> list[dict[str, Any]]:
        """Every event so far (only whole lines: the tail may be mid-write)."""
        with self.path.open("rb") as source:
            source.seek(self._read_bytes)
            chunk = source.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._read_bytes += len(complete)
        for line in complete.decode().splitlines():
            if line.startswith("{"):
                self._events.append(json.loads(line))
        return self._events

    def of(self, event_type: str, **data: Any) -> list[dict[str, Any]]:
        """The events of a type whose data holds every given field with the given value."""
        return [
            event
            for event in self.all()
            if event["type"] == event_type
            and all(event["data"].get(name) == value for name, value in data.items())
        ]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def distinct(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events' data, duplicates removed: a redelivered request may repeat an identical
    outcome (same data, new event id), which is not a second effect."""
    unique: dict[str, dict[str, Any]] = {}
    for event in events:
        unique.setdefault(json.dumps(event["data"], sort_keys=True), event["data"])
    return list(unique.values())


@dataclass
class ChaosPlatform:
    """The platform under `cairn up`, how to read its truth and how to kill its services."""

    home: Path
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    events: EventLog | None = None
    kills: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SERVICES, 0))
    # One client for every call: a new one per call costs a TLS context, which adds up on 2 cores.
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10, trust_env=False))

    @property
    def store(self) -> Path:
        return self.home / "store"

    @property
    def headers(self) -> dict[str, str]:
        return home_headers(self.home)

    def start(self) -> None:
        only = [arg for name in SERVICES for arg in ("--only", name)]
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                [CAIRN, "up", *only], env=self.env, stdout=sink, stderr=subprocess.STDOUT
            )
        wait_for("every service healthy", self.all_healthy, HANG_GUARD_S, self.log)
        self.events = EventLog(self.env, self.home.parent / "events.jsonl")

    def stop(self) -> None:
        self.http.close()
        if self.events is not None:
            self.events.stop()
        down = self.cli("down", "--timeout", "20")
        if self.process is not None:
            self.process.wait(timeout=30)
        assert down.returncode == 0, down.stderr

    def cli(self, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CAIRN, *args], env=self.env, capture_output=True, text=True, timeout=timeout_s
        )

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        """A CLI command running in the background (the `--wait` under test)."""
        return subprocess.Popen(
            [CAIRN, *args], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def runtime(self) -> dict[str, dict[str, Any]]:
        """The supervisor's view of each service, from the `runtime.json` it keeps (what
        `cairn status --json` reads): PID, URL, restarts."""
        assert self.process is not None and self.process.poll() is None, self.log.read_text()
        try:
            state = json.loads((self.home / "runtime.json").read_text())
        except (FileNotFoundError, ValueError):  # not written yet, or mid-write
            return {}
        return {service["name"]: service for service in state["services"]}

    def services(self) -> dict[str, dict[str, Any]]:
        """`runtime` with `healthy` checked now: the PID is alive and `/healthz` answers 200."""
        found = self.runtime()
        for service in found.values():
            service["healthy"] = service["pid"] is not None and self._answers(service["url"])
        return found

    def _answers(self, url: str) -> bool:
        try:
            return self.http.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def all_healthy(self) -> dict[str, dict[str, Any]] | None:
        services = self.services()
        return services if all(services.get(n, {}).get("healthy") for n in SERVICES) else None

    def url(self, service: str) -> str:
        return str(self.runtime()[service]["url"])

    def kill(self, service: str) -> int:
        """kill -9 the service's current process; its PID, once the process is gone."""
        pid = int(self.runtime()[service]["pid"])
        os.kill(pid, signal.SIGKILL)
        self.kills[service] += 1
        wait_for(f"{service} ({pid}) to die", lambda: gone(pid), 30, self.log, interval_s=0.01)
        return pid

    def document(self, key: str) -> dict[str, Any]:
        """A service's stored document as it is now, read from the `file://` store: the truth
        while the service that owns it lies dead."""
        found: dict[str, Any] = json.loads((self.store / key).read_text())
        return found

    def back_after(self, service: str, killed_pid: int) -> dict[str, Any]:
        """Wait until the supervisor replaced the killed process with a healthy new one."""

        def replaced() -> dict[str, Any] | None:
            now = self.services().get(service, {})
            return now if now.get("healthy") and now.get("pid") != killed_pid else None

        found: dict[str, Any] = wait_for(
            f"{service} back after kill -9 of {killed_pid}", replaced, HANG_GUARD_S, self.log
        )
        return found

    def get(self, service: str, path: str) -> Any:
        """GET a service's JSON answer with the admin credential, waiting out its restarts."""

        def answer() -> list[Any] | None:
            found = self.get_now(service, path)
            return None if found is None else [found]

        return wait_for(f"GET {service}{path}", answer, HANG_GUARD_S, self.log)[0]

    def get_now(self, service: str, path: str) -> Any:
        """GET a service's JSON answer once; None when it cannot answer now (down, starting)."""
        try:
            response = self.http.get(self.url(service) + path, headers=self.headers)
        except httpx.TransportError:
            return None
        if response.status_code in (502, 503, 504):
            return None
        assert response.status_code == 200, f"GET {service}{path}: {response.text}"
        return response.json()

    def send(self, method: str, service: str, path: str, body: dict[str, Any]) -> Any:
        """One control-plane call during setup (nothing is killed then)."""
        response = self.http.request(
            method, self.url(service) + path, json=body, headers=self.headers, timeout=30
        )
        assert response.status_code < 300, f"{method} {service}{path}: {response.text}"
        return response.json()

    def put_csv(self, key: str, frame: pd.DataFrame, header: bool = True) -> None:
        """A file in the `file://` store is an object by its key (a channel, an input)."""
        path = self.store / key
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False, header=header)


@contextmanager
def chaos_platform(home: Path) -> Iterator[ChaosPlatform]:
    """Every killable service under one `cairn up`, stopped (and checked stopped) at the end."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CAIRN_")}
    env.update(CAIRN_HOME=str(home), **CHAOS_ENV)
    platform = ChaosPlatform(home=home, env=env, log=home.parent / "up.log")
    # A gateway port of its own, remembered as if from a last run: the declared 8080 may be held
    # by another platform on this machine (a demo), whose /healthz would answer for this one.
    remember_ports(home, {"gateway": free_port("127.0.0.1")})
    try:
        platform.start()
        yield platform
    finally:
        platform.stop()
