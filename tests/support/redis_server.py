"""A real `redis-server` (Debian package `redis-server`) on a free loopback port, no persistence."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

_START_TIMEOUT_S = 10.0
_START_ATTEMPTS = 3
_MISSING = (
    "redis-server is not installed; install Debian's package: "
    "apt-get update && apt-get install -y redis-server"
)


class RedisServerMissing(RuntimeError):
    """No `redis-server` binary on PATH."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_once(binary: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    # No RDB snapshots and no AOF: the data lives only as long as the test session.
    process = subprocess.Popen(
        [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(workdir),
            "--loglevel", "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=0.2)
    deadline = time.monotonic() + _START_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                output = process.stdout.read().decode(errors="replace") if process.stdout else ""
                raise RuntimeError(f"redis-server exited with {process.returncode}: {output}")
            try:
                if client.ping():
                    return process, url
            except redis.ConnectionError:
                time.sleep(0.02)
    finally:
        client.close()
    process.kill()
    process.wait()
    raise RuntimeError(f"redis-server did not answer PING on port {port} in {_START_TIMEOUT_S}s")


@contextmanager
def running_redis_server() -> Iterator[str]:
    """Start `redis-server`, yield its URL, kill it on exit; retry if a port race loses."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisServerMissing(_MISSING)
    with tempfile.TemporaryDirectory(prefix="cairn-redis-") as workdir:
        error: RuntimeError | None = None
        for _ in range(_START_ATTEMPTS):
            try:
                process, url = _start_once(binary, Path(workdir))
                break
            except RuntimeError as exc:
                error = exc
        else:
            raise RuntimeError(f"could not start redis-server: {error}")
        try:
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout:
                process.stdout.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real redis-server for the whole session; fails (never skips) if it is missing."""
    if shutil.which("redis-server") is None:
        pytest.fail(_MISSING, pytrace=False)
    with running_redis_server() as url:
        yield url
