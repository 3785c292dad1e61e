"""`cairn monitor` against a real monitor found through `--home`, and `--home` on every verb.

The monitor app runs on uvicorn in a thread over an in-memory store and the session's Tansu; a
home with a `runtime.json` naming it stands for a platform `cairn up` runs there.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from cairn.store import InMemoryObjectStore
from cairn_cli import app
from typer.testing import CliRunner

from services.monitor.app import create_service
from services.monitor.config import MonitorSettings
from tests.support.auth import auth_settings, token_for
from tests.support.http_server import served_in_thread
from tests.support.runtime_home import fake_platform
from tests.unit.test_monitor_checks import deploy_model, labelled_frame, write_capture


@pytest.fixture(autouse=True)
def elsewhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """CAIRN_HOME names an empty folder: only --home can find the platform."""
    for name in ("CAIRN_MONITOR_URL", "CAIRN_API_KEY", "CAIRN_TARGET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CAIRN_HOME", str(tmp_path / "no-platform-here"))
    monkeypatch.setenv("COLUMNS", "250")


@pytest.fixture(scope="module")
def monitored(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[InMemoryObjectStore, Path]]:
    """A monitor serving an endpoint `ep` with a model, and the home that names it."""
    store = InMemoryObjectStore()
    settings = auth_settings(
        home=tmp_path_factory.mktemp("monitor-home"), kafka_bootstrap_servers=kafka_bootstrap
    )
    deploy_model(store, "ep", "credit", 1, "job-1")
    service = create_service(settings, store, MonitorSettings(run_lease_s=0))
    token = token_for(store, settings, ["deploy", "read"], name="operator")
    with served_in_thread(service.api, "monitor") as url:
        home = fake_platform(tmp_path_factory.mktemp("user-home"), {"monitor": url}, token)
        yield store, home


def cairn(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_monitor_run_checks_the_traffic_now(
    monitored: tuple[InMemoryObjectStore, Path],
) -> None:
    store, home = monitored
    code, out, err = cairn(
        "monitor", "schedule", "create", "ep", "--min-rows", "50", "--home", str(home)
    )
    assert code == 0, err
    assert "schedule ep: every 3600s" in out

    code, out, err = cairn("monitor", "run", "ep", "--home", str(home))
    assert (code, err) == (0, "")
    assert "no run for ep" in out  # nothing captured yet

    write_capture(store, "ep", labelled_frame(300, seed=7, shift=1.0), "a", datetime.now(UTC))
    # A window ends a whole second in the past: the file is in the next run's after that.
    deadline = time.monotonic() + 10
    while True:
        code, out, err = cairn("monitor", "run", "ep", "--home", str(home))
        assert code == 0, err
        if "no run" not in out or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert "300 rows" in out and "f0" in out and "report monitor/reports/ep/" in out

    code, out, err = cairn("monitor", "runs", "ep", "--home", str(home))
    assert code == 0, err
    assert "credit v1" in out and "300" in out


def test_monitor_run_of_an_unscheduled_endpoint_exits_1_with_the_reason(
    monitored: tuple[InMemoryObjectStore, Path],
) -> None:
    _, home = monitored
    code, _, err = cairn("monitor", "run", "nowhere", "--home", str(home))
    assert code == 1
    assert "error 404" in err and "nowhere" in err


def _commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    for name, command in getattr(group, "commands", {}).items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))
        else:
            yield " ".join((*path, name)), command


def test_every_verb_that_finds_the_platform_accepts_home() -> None:
    """A verb that reaches a service (by --url or --target) also takes --home."""
    root = typer.main.get_command(app)
    missing = [
        name
        for name, command in _commands(root)
        if {"url", "target"} & {p.name for p in command.params}
        and "home" not in {p.name for p in command.params}
    ]
    assert missing == []
    names = {name for name, _ in _commands(root)}
    assert {"datasets upload", "datasets describe", "monitor runs", "monitor run"} <= names
