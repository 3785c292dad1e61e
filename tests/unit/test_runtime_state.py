"""runtime.json and the home lock: what `cairn status/down/events` rely on."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cairn.errors import Conflict
from cairn.runtime.state import (
    HomeLock,
    RuntimeState,
    ServiceState,
    pid_alive,
    read_state,
    remove_state,
    state_path,
    write_state,
)


def _state(home: Path) -> RuntimeState:
    return RuntimeState(
        supervisor_pid=os.getpid(),
        started_at=datetime.now(UTC),
        home=str(home),
        kafka_bootstrap_servers="127.0.0.1:9092",
        broker_embedded=True,
        broker_pid=123,
        store_url=(home / "store").as_uri(),
        services=[
            ServiceState(
                name="echo",
                module="tests.services.echo",
                pid=456,
                port=8001,
                url="http://127.0.0.1:8001",
                status="healthy",
                restarts=2,
                log_path=str(home / "logs" / "echo.log"),
            )
        ],
    )


def test_state_round_trips_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    state = _state(tmp_path)

    write_state(tmp_path, state)
    write_state(tmp_path, state.model_copy(update={"kafka_bootstrap_servers": "10.0.0.1:9092"}))

    loaded = read_state(tmp_path)
    assert loaded is not None
    assert loaded.kafka_bootstrap_servers == "10.0.0.1:9092"
    assert loaded.services[0].restarts == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runtime.json"]


def test_missing_or_corrupt_state_reads_as_not_running(tmp_path: Path) -> None:
    assert read_state(tmp_path) is None
    state_path(tmp_path).write_text('{"supervisor_pid": ')
    assert read_state(tmp_path) is None
    remove_state(tmp_path)
    remove_state(tmp_path)  # removing twice is fine
    assert not state_path(tmp_path).exists()


def test_second_lock_on_one_home_is_refused_with_the_holder_pid(tmp_path: Path) -> None:
    first = HomeLock(tmp_path)
    first.acquire()
    try:
        assert HomeLock(tmp_path).is_held_elsewhere()
        with pytest.raises(Conflict, match=f"already running .*pid {os.getpid()}"):
            HomeLock(tmp_path).acquire()
    finally:
        first.release()
    assert not HomeLock(tmp_path).is_held_elsewhere()
    again = HomeLock(tmp_path)
    again.acquire()
    again.release()


def test_pid_alive_tells_running_from_exited_processes() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()

    assert pid_alive(os.getpid())
    assert not pid_alive(child.pid)
    assert not pid_alive(None)
