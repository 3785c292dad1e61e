"""`cairn up/status/down` without a platform: documented options, honest exit codes."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cairn.runtime.state import RuntimeState, write_state
from cairn_cli import app
from typer.testing import CliRunner

runner = CliRunner()


def test_up_help_documents_every_option() -> None:
    result = runner.invoke(app, ["up", "--help"], env={"COLUMNS": "200"})

    assert result.exit_code == 0
    for option in (
        "--home",
        "--kafka",
        "--store",
        "--s3-endpoint",
        "--s3-access-key",
        "--s3-secret-key",
        "--services-path",
        "--only",
        "--broker-port",
        "--grace-period",
        "--broker-log",
    ):
        assert option in result.output


def test_status_exits_1_when_nothing_runs(tmp_path: Path) -> None:
    result = runner.invoke(app, ["status", "--home", str(tmp_path), "--json"])

    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"running": False, "home": str(tmp_path.resolve())}


def test_status_treats_a_state_left_by_a_dead_supervisor_as_not_running(tmp_path: Path) -> None:
    dead_pid = os.fork()
    if dead_pid == 0:
        os._exit(0)
    os.waitpid(dead_pid, 0)
    write_state(
        tmp_path,
        RuntimeState(
            supervisor_pid=dead_pid,
            started_at=datetime.now(UTC),
            home=str(tmp_path),
            kafka_bootstrap_servers="127.0.0.1:1",
            broker_embedded=True,
            store_url=tmp_path.as_uri(),
        ),
    )

    status = runner.invoke(app, ["status", "--home", str(tmp_path)])
    down = runner.invoke(app, ["down", "--home", str(tmp_path)])

    assert status.exit_code == 1
    assert "not running" in status.output
    assert down.exit_code == 0
    assert not (tmp_path / "runtime.json").exists()


def test_down_when_nothing_runs_is_a_no_op(tmp_path: Path) -> None:
    result = runner.invoke(app, ["down", "--home", str(tmp_path)])

    assert result.exit_code == 0
    assert "not running" in result.output


def test_up_with_an_unknown_only_name_lists_the_services_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo_services = Path(__file__).resolve().parents[1] / "services"
    monkeypatch.setenv("CAIRN_SERVICES_PATHS", json.dumps([str(repo_services)]))

    result = runner.invoke(app, ["up", "--home", str(tmp_path), "--only", "ehco"])

    assert result.exit_code == 1
    assert "no service named ehco" in result.output
    assert "echo" in result.output
    assert not (tmp_path / "runtime.json").exists()


def test_status_shows_the_autoscalers_pools_only_when_it_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cairn.runtime.state import ServiceState
    from cairn_cli import pools_cmd, runtime_cmd

    asked: list[str] = []
    pool = {"pool": "trainer-cpu", "current": 2, "desired": 3, "lag": 7}

    def fetch(url: str, home: Path | None = None) -> list[dict[str, object]]:
        asked.append(url)
        return [pool]

    monkeypatch.setattr(pools_cmd, "fetch_pools", fetch)

    def state(status: str) -> RuntimeState:
        autoscaler = ServiceState(
            name="autoscaler",
            module="services.autoscaler",
            pid=1,
            port=9,
            url="http://127.0.0.1:9",
            status=status,  # type: ignore[arg-type]
            log_path="x.log",
        )
        return RuntimeState(
            supervisor_pid=1,
            started_at=datetime.now(UTC),
            home="h",
            kafka_bootstrap_servers="127.0.0.1:1",
            broker_embedded=True,
            store_url="file:///tmp",
            services=[autoscaler],
        )

    assert runtime_cmd._worker_pools(state("healthy")) == [pool]
    assert runtime_cmd._worker_pools(state("backoff")) == []
    assert asked == ["http://127.0.0.1:9"]


def test_first_up_makes_an_admin_credential_shown_once_that_the_platform_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cairn.runtime.supervisor import Supervisor
    from cairn.service import Service
    from cairn.settings import CairnSettings
    from cairn.store import open_store
    from cairn_sdk import resolve_token
    from fastapi.testclient import TestClient

    started: list[bool] = []

    async def run(self: Supervisor) -> None:
        started.append((tmp_path / "credentials.json").exists())

    monkeypatch.setattr(Supervisor, "run", run)
    for name in ("CAIRN_STORE_URL", "CAIRN_PLATFORM_KEY", "CAIRN_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    home = ["--home", str(tmp_path)]

    first = runner.invoke(app, ["up", *home], env={"COLUMNS": "300"})
    again = runner.invoke(app, ["up", *home], env={"COLUMNS": "300"})

    assert first.exit_code == 0 and again.exit_code == 0, first.output + again.output
    assert started == [True, True]  # the credential exists before any service starts
    token = resolve_token(tmp_path, env={})
    assert token is not None and token in first.output
    assert str(tmp_path / "credentials.json") in first.output
    assert (tmp_path / "credentials.json").stat().st_mode & 0o777 == 0o600
    assert token not in again.output and "credential" not in again.output
    settings = CairnSettings(
        home=tmp_path, otel_exporter="none", kafka_bootstrap_servers="127.0.0.1:9"
    )
    service = Service("gateway", settings=settings, store=open_store(settings=settings))
    answer = TestClient(service.api).get(
        "/admin/keys", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 200
    assert [key["scopes"] for key in answer.json()["keys"]] == [["admin"]]
