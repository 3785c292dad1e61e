"""The agent's folder: what it runs, what it refused, partial downloads and captured samples.

    <dir>/state.json                 AgentState, replaced atomically (write, fsync, rename)
    <dir>/packages/<package>/        installed packages, verified before and after every start
    <dir>/downloads/<package>/       files being fetched; `<file>.part` grows, resumed with Range
    <dir>/outbox/current.jsonl       samples appended (flushed per line: a kill loses none)
    <dir>/outbox/batch-*.jsonl       closed batches waiting to be uploaded; deleted once accepted

Everything is a plain file so an agent killed at any moment restarts from what is on disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

CURRENT_BATCH = "current.jsonl"


class Refusal(BaseModel):
    package_name: str | None
    revision: int
    code: str
    reason: str


class AgentState(BaseModel):
    """What survives a restart: the revision handled, the running and previous packages."""

    revision: int = -1
    running: str | None = None
    running_version: tuple[int, int] | None = None
    previous: list[str] = Field(default_factory=list)
    refusal: Refusal | None = None
    installed_revision: int = -1


class AgentFolder:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.packages = root / "packages"
        self.downloads = root / "downloads"
        self.outbox = root / "outbox"
        for folder in (self.packages, self.downloads, self.outbox):
            folder.mkdir(parents=True, exist_ok=True)
        self._capture_lock = threading.Lock()

    # State -----------------------------------------------------------------------------------

    def load_state(self) -> AgentState:
        path = self.root / "state.json"
        if not path.exists():
            return AgentState()
        return AgentState.model_validate_json(path.read_bytes())

    def save_state(self, state: AgentState) -> None:
        write_atomically(self.root / "state.json", state.model_dump_json().encode())

    def package_dir(self, name: str) -> Path:
        return self.packages / name

    def download_dir(self, name: str) -> Path:
        folder = self.downloads / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def install(self, name: str, staged: Path) -> Path:
        """Move a verified download into `packages/` (a rename: all or nothing)."""
        target = self.package_dir(name)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staged, target)
        return target

    def prune(self, keep: list[str]) -> None:
        for folder in self.packages.iterdir():
            if folder.name not in keep:
                shutil.rmtree(folder, ignore_errors=True)

    # Captured samples ------------------------------------------------------------------------

    def capture(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._capture_lock, (self.outbox / CURRENT_BATCH).open("a") as handle:
            handle.write(line)
            handle.flush()

    def close_batch(self) -> None:
        """Turn the current file into a named batch (its name is the upload's idempotency key)."""
        with self._capture_lock:
            current = self.outbox / CURRENT_BATCH
            if current.exists() and current.stat().st_size > 0:
                name = f"batch-{time.time_ns()}-{uuid.uuid4().hex[:8]}.jsonl"
                os.replace(current, self.outbox / name)

    def pending_batches(self) -> list[Path]:
        return sorted(self.outbox.glob("batch-*.jsonl"))

    def captured_lines(self) -> int:
        total = 0
        for path in [*self.pending_batches(), self.outbox / CURRENT_BATCH]:
            with contextlib.suppress(FileNotFoundError):
                total += sum(1 for _ in path.open())
        return total


def write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
