"""`cairn serve <service>`, the container command: one service in the foreground, by name."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cairn.runtime.discovery import discover_services
from cairn.settings import CairnSettings
from cairn_cli import app
from cairn_cli.serve_cmd import resolve_service, service_environment
from typer.testing import CliRunner

runner = CliRunner()
SERVICES = [spec.name for spec in discover_services(CairnSettings(services_paths=[]))]
CAIRN = str(Path(sys.executable).with_name("cairn"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("service", SERVICES)
def test_every_discovered_service_is_a_serve_target(service: str) -> None:
    spec = resolve_service(service, CairnSettings(services_paths=[]))

    assert spec.module == f"services.{service}"


def test_serve_is_the_gateway_per_the_sagemaker_container_contract() -> None:
    spec = resolve_service("serve", CairnSettings(services_paths=[]))
    env = service_environment(spec, None, None, {})

    assert spec.name == "gateway"
    assert env["CAIRN_HTTP_PORT"] == "8080"


def test_unknown_service_exits_2_and_lists_the_real_ones() -> None:
    result = runner.invoke(app, ["serve", "nosuchservice"], env={"COLUMNS": "300"})

    assert result.exit_code == 2
    assert "nosuchservice" in result.output
    assert "trainer" in result.output and "gateway" in result.output


def test_port_option_beats_the_environment_which_beats_the_service_default() -> None:
    gateway = resolve_service("gateway", CairnSettings(services_paths=[]))

    assert service_environment(gateway, "0.0.0.0", 9000, {"CAIRN_HTTP_PORT": "7000"}) == {
        "CAIRN_HTTP_PORT": "9000",
        "CAIRN_HTTP_HOST": "0.0.0.0",
    }
    assert service_environment(gateway, None, None, {"CAIRN_HTTP_PORT": "7000"}) == {
        "CAIRN_HTTP_PORT": "7000"
    }


def test_serve_runs_the_service_in_the_foreground_until_sigterm(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "CAIRN_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "CAIRN_STORE_URL": (tmp_path / "store").as_uri(),
        "CAIRN_HOME": str(tmp_path / "home"),
        "CAIRN_HTTP_PORT": str(port),
        "CAIRN_OTEL_EXPORTER": "none",
    }
    process = subprocess.Popen(
        [CAIRN, "serve", "registry"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        health = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json()
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert health == {"status": "ok", "service": "registry", "pid": str(process.pid)}, (
            process.stderr
        )
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.status_code == 200

        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        log = stderr.decode()

        # uvicorn shuts down cleanly, then re-raises the signal it caught.
        assert process.returncode in (0, -signal.SIGTERM)
        assert "Application shutdown complete." in log
        # exec: the service is the process `cairn serve` started (PID 1 in a container).
        assert f"Finished server process [{process.pid}]" in log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
