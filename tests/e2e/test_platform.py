"""The embedded platform as a user runs it: `cairn up`, the events CLI, kill -9, `cairn down`.

Only the public surface is used: the `cairn` command, the services' HTTP endpoints, the bus and
the files the platform promises (runtime.json, the local store). The tests in the first class
run in order against one platform started once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
CAIRN = str(Path(sys.executable).with_name("cairn"))
TEST_SERVICES = REPO_ROOT / "tests" / "services"


def platform_env(home: Path) -> dict[str, str]:
    """A clean CAIRN_* environment: the echo test service and its events, no telemetry export."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CAIRN_")}
    env.update(
        CAIRN_HOME=str(home),
        CAIRN_SERVICES_PATHS=json.dumps([str(TEST_SERVICES)]),
        CAIRN_CONTRACT_MODULES='["tests.services.echo.contracts"]',
        CAIRN_OTEL_EXPORTER="none",
        # A restarted member rejoins once the killed one's session expires: keep that short.
        CAIRN_BUS_SESSION_TIMEOUT_MS="1500",
        CAIRN_BUS_HEARTBEAT_INTERVAL_MS="300",
    )
    return env


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().split(")")[-1].split()[0] != "Z"


def port_open(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Platform:
    """One `cairn up` process and the helpers to drive it through the CLI."""

    home: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    output: Path
    seen: dict[str, Any] = field(default_factory=dict)  # what later tests compare with

    def cli(self, *args: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CAIRN, *args],
            env=self.env,
            cwd=self.home.parent,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def status(self) -> dict[str, Any]:
        result = self.cli("status", "--json")
        return dict(json.loads(result.stdout))

    def service(self, name: str) -> dict[str, Any]:
        state = self.status()
        return next(service for service in state["services"] if service["name"] == name)

    def wait_healthy(self, name: str, timeout_s: float = 40) -> dict[str, Any]:
        def healthy() -> dict[str, Any] | None:
            if self.process.poll() is not None:
                raise AssertionError(f"cairn up exited:\n{self.output.read_text()}")
            state = self.status()
            if not state.get("running"):
                return None
            service = next(s for s in state["services"] if s["name"] == name)
            return service if service["status"] == "healthy" else None

        return dict(wait_for(healthy, timeout_s, f"{name} to be healthy"))

    def publish_echo(self, request_id: str, message: str, delay_s: float = 0) -> dict[str, str]:
        data = json.dumps({"request_id": request_id, "message": message, "delay_s": delay_s})
        result = self.cli(
            "events",
            "publish",
            "EchoRequested",
            "--data",
            data,
            "--correlation-id",
            f"corr-{request_id}",
        )
        assert result.returncode == 0, result.stderr
        return dict(part.split("=", 1) for part in result.stdout.split())

    def completed(
        self, request_id: str, timeout_s: float = 30, kafka: str | None = None
    ) -> dict[str, Any]:
        """The EchoCompleted event for this request, as `cairn events tail --json` prints it."""
        tail = subprocess.Popen(
            [
                CAIRN,
                "events",
                "tail",
                "--type",
                "EchoCompleted",
                "--from-beginning",
                "--json",
                "--timeout",
                str(timeout_s),
                *(["--kafka", kafka] if kafka else []),
            ],
            env=self.env,
            cwd=self.home.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert tail.stdout is not None
            for line in tail.stdout:
                event = json.loads(line)
                if event["data"]["request_id"] == request_id:
                    return dict(event)
        finally:
            tail.kill()
            _, errors = tail.communicate()
        raise AssertionError(f"no EchoCompleted for {request_id} in {timeout_s}s: {errors}")


def start_platform(home: Path, *extra: str, env: dict[str, str] | None = None) -> Platform:
    env = env or platform_env(home)
    output = home.parent / f"{home.name}-up.log"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [CAIRN, "up", "--only", "echo", "--grace-period", "10", *extra],
            env=env,
            cwd=home.parent,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return Platform(home=home, env=env, process=process, output=output)


def stop_platform(platform: Platform) -> None:
    """Teardown safety net: whatever a failed test left running is stopped."""
    if platform.process.poll() is None:
        platform.cli("down", "--timeout", "20")
        try:
            platform.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            platform.process.send_signal(signal.SIGKILL)
            platform.process.wait()


@pytest.fixture(scope="class")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    home = tmp_path_factory.mktemp("platform") / "home"
    running = start_platform(home)
    try:
        running.wait_healthy("echo")
        yield running
    finally:
        stop_platform(running)


class TestEmbeddedPlatform:
    def test_status_shows_echo_healthy_with_its_pid_and_url(self, platform: Platform) -> None:
        state = platform.status()
        echo = platform.service("echo")

        assert state["running"] is True
        assert state["broker_embedded"] is True
        assert port_open(state["kafka_bootstrap_servers"])
        assert pid_alive(echo["pid"])
        assert httpx.get(f"{echo['url']}/healthz", timeout=5).status_code == 200
        table = platform.cli("status")
        assert table.returncode == 0
        assert "echo" in table.stdout
        assert "healthy" in table.stdout
        assert str(echo["pid"]) in table.stdout

    def test_second_up_on_the_same_home_is_refused(self, platform: Platform) -> None:
        result = platform.cli("up", "--only", "echo", timeout_s=30)

        assert result.returncode == 1
        assert "already running" in result.stdout + result.stderr
        assert platform.process.poll() is None

    def test_published_request_is_stored_and_answered(self, platform: Platform) -> None:
        request_id = f"r-{uuid.uuid4().hex[:8]}"

        published = platform.publish_echo(request_id, "hello cairn")
        completed = platform.completed(request_id)
        platform.seen["request_id"] = request_id

        assert published["topic"] == "cairn.echo.echo-requested"
        assert published["key"] == request_id
        assert completed["source"] == "echo"
        assert completed["correlation_id"] == f"corr-{request_id}"
        assert completed["causation_id"] == published["event_id"]
        stored = platform.home / "store" / completed["data"]["object_key"]
        assert json.loads(stored.read_text()) == {
            "request_id": request_id,
            "message": "hello cairn",
        }

    def test_invalid_publish_exits_2_naming_the_field(self, platform: Platform) -> None:
        result = platform.cli("events", "publish", "EchoRequested", "--data", '{"request_id": "x"}')

        assert result.returncode == 2
        assert "data.message" in result.stderr

    def test_killed_service_is_restarted_and_handles_events_again(self, platform: Platform) -> None:
        before = platform.service("echo")

        os.kill(before["pid"], signal.SIGKILL)
        after = wait_for(
            lambda: (
                (s := platform.service("echo"))["pid"] not in (None, before["pid"])
                and s["status"] == "healthy"
                and s
            ),
            40,
            "echo to come back",
        )

        assert after["restarts"] == before["restarts"] + 1
        assert after["url"] == before["url"]
        request_id = f"r-{uuid.uuid4().hex[:8]}"
        platform.publish_echo(request_id, "after restart")
        assert platform.completed(request_id)["data"]["message"] == "after restart"

    def test_down_stops_every_process_and_closes_the_broker(self, platform: Platform) -> None:
        state = platform.status()
        pids = [
            state["supervisor_pid"],
            state["broker_pid"],
            *(s["pid"] for s in state["services"]),
        ]

        platform.seen["state"] = state
        result = platform.cli("down", timeout_s=60)

        assert result.returncode == 0, result.stderr
        assert platform.process.wait(timeout=10) == 0
        assert [pid for pid in pids if pid_alive(pid)] == []
        assert not port_open(state["kafka_bootstrap_servers"])
        assert not (platform.home / "runtime.json").exists()
        assert platform.cli("status").returncode == 1

    def test_up_again_keeps_the_ports_and_the_events(self, platform: Platform) -> None:
        """The URLs a user saved still answer, and the events from before are still there."""
        before = platform.seen["state"]
        echo_before = next(s for s in before["services"] if s["name"] == "echo")
        again = start_platform(platform.home)
        try:
            echo = again.wait_healthy("echo")
            assert echo["url"] == echo_before["url"]
            assert again.status()["kafka_bootstrap_servers"] == before["kafka_bootstrap_servers"]
            answered = again.completed(platform.seen["request_id"])  # published before `down`
            assert answered["data"]["message"] == "hello cairn"
            request_id = f"r-{uuid.uuid4().hex[:8]}"
            again.publish_echo(request_id, "after up")
            assert again.completed(request_id)["data"]["message"] == "after up"
        finally:
            stop_platform(again)


def test_up_runs_against_an_external_kafka_and_s3(
    tmp_path: Path, kafka_bootstrap: str, s3_endpoint: str
) -> None:
    from cairn.settings import CairnSettings
    from cairn.store import open_store

    from tests.support.moto_server import S3_ACCESS_KEY, S3_SECRET_KEY

    bucket = f"cairn-e2e-{uuid.uuid4().hex[:12]}"
    home = tmp_path / "home"
    running = start_platform(
        home,
        "--kafka",
        kafka_bootstrap,
        "--store",
        f"s3://{bucket}/platform",
        "--s3-endpoint",
        s3_endpoint,
        "--s3-access-key",
        S3_ACCESS_KEY,
        "--s3-secret-key",
        S3_SECRET_KEY,
    )
    try:
        running.wait_healthy("echo")
        state = running.status()
        assert state["broker_embedded"] is False
        assert state["broker_pid"] is None
        assert state["kafka_bootstrap_servers"] == kafka_bootstrap

        request_id = f"r-{uuid.uuid4().hex[:8]}"
        running.publish_echo(request_id, "to s3")
        completed = running.completed(request_id)

        store = open_store(
            settings=CairnSettings(
                store_url=f"s3://{bucket}/platform",
                s3_endpoint=s3_endpoint,
                s3_access_key=S3_ACCESS_KEY,
                s3_secret_key=S3_SECRET_KEY,  # type: ignore[arg-type]
            )
        )
        stored = json.loads(store.get_bytes(completed["data"]["object_key"]))
        assert stored == {"request_id": request_id, "message": "to s3"}
        assert not (home / "store").exists()

        # Stopped mid-handler: the handler finishes (object written, answer published) first.
        slow_id = f"r-{uuid.uuid4().hex[:8]}"
        running.publish_echo(slow_id, "slow", delay_s=3)
        time.sleep(1.0)
        assert running.cli("down").returncode == 0
        assert running.process.wait(timeout=10) == 0
        assert json.loads(store.get_bytes(f"echo/{slow_id}.json"))["message"] == "slow"
        assert running.completed(slow_id, kafka=kafka_bootstrap)["data"]["message"] == "slow"
        assert port_open(kafka_bootstrap)  # an external broker is not ours to stop
    finally:
        stop_platform(running)
