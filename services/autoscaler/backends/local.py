"""Local worker processes (`python -m <module>`), the embedded default."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cairn.settings import CairnSettings

from services.autoscaler.backends.base import WorkerBackend, worker_env
from services.autoscaler.pools import WorkerPool

log = logging.getLogger("cairn.autoscaler")

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: the worker gets SIGTERM if the autoscaler dies, so no worker outlives it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    log_handle: IO[bytes]
    draining_since: float | None = None


class LocalProcessBackend(WorkerBackend):
    """Starts worker processes with the platform's CAIRN_* settings; drains with SIGTERM.

    Args:
        settings: the platform settings every worker inherits.
        log_dir: one log file per pool (default `<home>/logs`).
        drain_timeout_s: a draining worker still alive after this long is killed (its job is
            redelivered).
        python: the interpreter that runs workers.
        extra_env: added to every worker's environment (e.g. PYTHONPATH for test workers).
    """

    def __init__(
        self,
        settings: CairnSettings,
        *,
        log_dir: Path | None = None,
        drain_timeout_s: float = 60.0,
        python: str = sys.executable,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.log_dir = log_dir or settings.home / "logs"
        self.drain_timeout_s = drain_timeout_s
        self.python = python
        self.extra_env = extra_env or {}
        self._workers: dict[str, list[_Worker]] = {}

    async def current(self, pool: WorkerPool) -> int:
        self._reap(pool.name)
        return len(self._serving(pool.name))

    async def scale(self, pool: WorkerPool, replicas: int) -> int:
        self._reap(pool.name)
        serving = self._serving(pool.name)
        for _ in range(replicas - len(serving)):
            self._start(pool)
        for worker in reversed(serving[replicas:] if replicas < len(serving) else []):
            self._drain(pool.name, worker)
        return len(self._serving(pool.name))

    def pids(self, pool: WorkerPool, *, draining: bool = False) -> list[int]:
        """Process ids of the pool's serving (or draining) workers."""
        return [
            w.process.pid
            for w in self._workers.get(pool.name, [])
            if (w.draining_since is not None) == draining and w.process.poll() is None
        ]

    async def close(self) -> None:
        """Drain every worker and wait for them (killing stragglers after the drain timeout)."""
        for name, workers in self._workers.items():
            for worker in workers:
                if worker.draining_since is None:
                    self._drain(name, worker)
        deadline = time.monotonic() + self.drain_timeout_s
        while any(w.process.poll() is None for ws in self._workers.values() for w in ws):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        for name in list(self._workers):
            self._reap(name, kill_after=0.0)

    def _serving(self, name: str) -> list[_Worker]:
        return [w for w in self._workers.get(name, []) if w.draining_since is None]

    def _start(self, pool: WorkerPool) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        handle = (self.log_dir / f"pool-{pool.name}.log").open("ab")
        env = dict(os.environ) | worker_env(self.settings, pool) | self.extra_env
        process = subprocess.Popen(
            [self.python, "-m", pool.module, *pool.args],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        log.info("pool %s: started worker pid %d", pool.name, process.pid)
        self._workers.setdefault(pool.name, []).append(_Worker(process, handle))

    def _drain(self, name: str, worker: _Worker) -> None:
        worker.draining_since = time.monotonic()
        log.info("pool %s: draining worker pid %d (SIGTERM)", name, worker.process.pid)
        with contextlib.suppress(ProcessLookupError):
            worker.process.send_signal(signal.SIGTERM)

    def _reap(self, name: str, kill_after: float | None = None) -> None:
        """Forget exited workers; kill draining ones that outlived the drain timeout."""
        limit = self.drain_timeout_s if kill_after is None else kill_after
        now = time.monotonic()
        kept: list[_Worker] = []
        for worker in self._workers.get(name, []):
            if worker.process.poll() is None:
                if worker.draining_since is not None and now - worker.draining_since >= limit:
                    log.warning(
                        "pool %s: worker pid %d still busy after %.0fs; killing it, its job "
                        "will be redelivered",
                        name,
                        worker.process.pid,
                        limit,
                    )
                    worker.process.kill()
                    worker.process.wait()
                else:
                    kept.append(worker)
                    continue
            elif worker.draining_since is None:
                log.warning(
                    "pool %s: worker pid %d exited with %s; it will be replaced",
                    name,
                    worker.process.pid,
                    worker.process.returncode,
                )
            worker.log_handle.close()
        self._workers[name] = kept
