"""`<home>/runtime.json`: what the running platform looks like, for `cairn status/down/events`.

The supervisor rewrites the file atomically (write a sibling, then rename) so a reader never sees
half a document. A lock file held by the supervisor is what proves the platform still runs; the
state file alone may be stale after a crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from datetime import datetime
from pathlib import Path
from typing import IO, Literal

from pydantic import BaseModel, Field, ValidationError

from cairn.errors import Conflict

STATE_FILE = "runtime.json"
LOCK_FILE = "runtime.lock"

ServiceStatus = Literal["starting", "healthy", "unhealthy", "backoff", "stopping", "stopped"]


class ServiceState(BaseModel):
    """One supervised service process."""

    name: str
    module: str
    pid: int | None = None
    port: int
    url: str
    status: ServiceStatus = "starting"
    restarts: int = Field(default=0, ge=0)
    started_at: datetime | None = None
    log_path: str


class RuntimeState(BaseModel):
    """The whole embedded platform, as `cairn up` last saw it."""

    supervisor_pid: int
    started_at: datetime
    home: str
    kafka_bootstrap_servers: str
    broker_embedded: bool
    broker_pid: int | None = None
    store_url: str
    services: list[ServiceState] = Field(default_factory=list)


def state_path(home: Path) -> Path:
    return home / STATE_FILE


def write_state(home: Path, state: RuntimeState) -> None:
    """Replace the state file atomically."""
    home.mkdir(parents=True, exist_ok=True)
    target = state_path(home)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.write_text(state.model_dump_json(indent=2))
    os.replace(temporary, target)


def read_state(home: Path) -> RuntimeState | None:
    """The last written state, or None when there is none (or it is unreadable)."""
    try:
        return RuntimeState.model_validate_json(state_path(home).read_text())
    except (FileNotFoundError, ValidationError, ValueError):
        return None


def remove_state(home: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        state_path(home).unlink()


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this pid exists (zombies count as gone)."""
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def answered_by(health: object, pid: int | None) -> bool:
    """Whether a `/healthz` answer came from process `pid` (the kernel's probe names its pid).

    An answer on a service's URL proves nothing alone: another process may hold the port.
    """
    return pid is not None and isinstance(health, dict) and health.get("pid") == str(pid)


class HomeLock:
    """An exclusive lock on `<home>/runtime.lock`: one `cairn up` per home at a time."""

    def __init__(self, home: Path) -> None:
        self.path = home / LOCK_FILE
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock or raise Conflict naming the pid that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise Conflict(
                f"Cairn is already running on {self.path.parent} (pid {holder}); "
                "use `cairn status` or `cairn down`",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def holder_pid(self) -> int | None:
        """The pid written by the process that took the lock last, if any."""
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None

    def is_held_elsewhere(self) -> bool:
        """Whether some process holds the lock now (probes without keeping it)."""
        if not self.path.exists():
            return False
        with self.path.open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False
