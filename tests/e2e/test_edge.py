"""Edge fleets as a user runs them: `cairn up --only edge`, the CLI, and ten `cairn edge agent`
processes on loopback. Some agents reach the service through a test proxy that misbehaves on cue:
one download stalls halfway and its agent is killed and restarted (it resumes with Range), one
package gets a flipped byte (refused and reported), one device is offline for the rollout (it
catches up), and a gate broken by one wave device rolls back exactly that wave.

The registry is not started: the test writes the two model versions as the registry declares
them (`ModelVersionView`) into the platform's store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cairn.auth.credentials import load_home_credential
from cairn.contracts.state import ModelVersionView, write_state
from cairn.store import open_store
from cairn_sdk import Client, edge

from tests.unit.test_batch_transform import make_batch_model

pytestmark = pytest.mark.e2e

CAIRN = str(Path(sys.executable).with_name("cairn"))
DEVICES = [f"d{i:02d}" for i in range(10)]
STALLED, TAMPERED, OFFLINE = "d07", "d08", "d09"
HANG_GUARD_S = 120.0


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = HANG_GUARD_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@dataclass
class Proxy:
    """A loopback proxy in front of the edge service: `pass`, `down`, `stall` or `flip`."""

    target: str
    mode: str = "pass"
    ranges: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def start(self) -> Proxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                self._forward("GET")

            def do_POST(self) -> None:
                self._forward("POST")

            def _forward(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.mode == "down":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                model_file = "/files/model.so" in self.path
                if model_file and self.headers.get("Range"):
                    proxy.ranges.append(self.headers["Range"])
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                answer = httpx.request(
                    method, proxy.target + self.path, headers=headers, content=body, timeout=60
                )
                data = answer.content
                if model_file and proxy.mode == "flip":
                    data = data[:100] + bytes([data[100] ^ 0x01]) + data[101:]
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if model_file and proxy.mode == "stall":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    proxy.release.wait(HANG_GUARD_S)
                    self.close_connection = True
                    return
                self.wfile.write(data)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        return self


@dataclass
class Fleet:
    root: Path
    env: dict[str, str]
    edge_url: str
    process: subprocess.Popen[bytes]
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    servers: dict[str, str] = field(default_factory=dict)

    def cli(self, *args: str) -> Any:
        result = subprocess.run(
            [CAIRN, *args, "--json"], env=self.env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"cairn {' '.join(args)}:\n{result.stderr}"
        return json.loads(result.stdout)

    def start_agent(self, device: str) -> None:
        folder = self.root / "agents" / device
        folder.mkdir(parents=True, exist_ok=True)
        log = (folder / "agent.log").open("ab")
        self.agents[device] = subprocess.Popen(
            [
                CAIRN, "edge", "agent", "--fleet", "fleet", "--device", device,
                "--server", self.servers.get(device, self.edge_url),
                "--credential", str(self.root / "credentials" / f"{device}.json"),
                "--dir", str(folder), "--port", "0", "--heartbeat", "0.3", "--poll-wait", "2",
                "--upload-every", "1", "--capture-rate", "1", "--max-backoff", "1",
            ],
            env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    @property
    def sdk(self) -> Client:
        """Polling goes through the SDK: a CLI process per poll costs seconds of CPU."""
        token = load_home_credential(self.root / "home")
        return Client(edge_url=self.edge_url, api_key=token)

    def device(self, name: str) -> dict[str, Any]:
        with self.sdk as client:
            return edge.describe_device(client, "fleet", name)

    def plan(self, name: str) -> dict[str, Any]:
        with self.sdk as client:
            return edge.describe_deployment(client, name)

    def port(self, device: str) -> int:
        info = self.root / "agents" / device / "agent.json"
        wait_for(info.exists, f"{device} to serve")
        return int(json.loads(info.read_text())["port"])


def edge_url(env: dict[str, str]) -> str | None:
    result = subprocess.run(
        [CAIRN, "status", "--json"], env=env, capture_output=True, text=True, timeout=30
    )
    if result.returncode != 0:
        return None
    services = {s["name"]: s for s in json.loads(result.stdout).get("services", [])}
    edge = services.get("edge")
    return str(edge["url"]) if edge and edge["status"] == "healthy" else None


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("edge")
    env = {key: value for key, value in os.environ.items() if not key.startswith("CAIRN_")}
    env.update(
        CAIRN_HOME=str(root / "home"), CAIRN_OTEL_EXPORTER="none", CAIRN_EDGE_SWEEP_INTERVAL_S="0.3"
    )
    with (root / "up.log").open("wb") as sink:
        process = subprocess.Popen(
            [CAIRN, "up", "--only", "edge", "--grace-period", "10"],
            env=env, cwd=root, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    running: Fleet | None = None
    try:
        url = wait_for(lambda: edge_url(env), "the edge service to be healthy", 90)
        running = Fleet(root=root, env=env | {"CAIRN_EDGE_URL": url}, edge_url=url, process=process)
        yield running
    finally:
        for agent in running.agents.values() if running else []:
            agent.kill()
        subprocess.run([CAIRN, "down", "--timeout", "20"], env=env, timeout=60)
        process.wait(timeout=30)


def register_models(root: Path) -> str:
    store = open_store((root / "home" / "store").resolve().as_uri())
    for version, trees in ((1, 10), (2, 20)):
        uri = make_batch_model(store, f"models/edge-e2e/{version}/", trees=trees)
        view = ModelVersionView(
            model_package_group="edge-e2e", version=version, artifact_uri=uri,
            approval_status="Approved",
        )  # fmt: skip
        write_state(store, view, "edge-e2e", str(version))
    return "edge-e2e"


def test_ten_agents_roll_out_resume_refuse_catch_up_and_roll_back_a_wave(fleet: Fleet) -> None:
    group = register_models(fleet.root)
    fleet.cli("edge", "fleets", "create", "fleet")
    credentials = fleet.root / "credentials"
    fleet.cli("edge", "devices", "register", "d00", "--fleet", "fleet",
              "--out", str(credentials / "d00.json"))  # fmt: skip
    assert oct((credentials / "d00.json").stat().st_mode & 0o777) == "0o600"
    with fleet.sdk as client:
        for device in DEVICES[1:]:
            registered = edge.register_device(client, "fleet", device)
            keys = ("fleet_name", "device_name", "token", "public_key")
            (credentials / f"{device}.json").write_text(
                json.dumps({k: registered[k] for k in keys})
            )
    v1 = fleet.cli("edge", "package", f"{group}:1")
    v2 = fleet.cli("edge", "package", f"{group}:2")
    assert (v1["status"], v1["format"]) == ("Completed", "treelite")
    assert v1["max_abs_error"] <= v1["tolerance"]

    proxies = {
        STALLED: Proxy(fleet.edge_url, "stall").start(),
        TAMPERED: Proxy(fleet.edge_url, "flip").start(),
        OFFLINE: Proxy(fleet.edge_url, "down").start(),
    }
    fleet.servers = {device: proxy.url for device, proxy in proxies.items()}
    for device in DEVICES:
        fleet.start_agent(device)

    # Wave 1: v1 everywhere, one refusal allowed, 70% must install.
    fleet.cli(
        "edge", "deploy", "first", "--fleet", "fleet", "--package", v1["package_name"],
        "--stage", "all=percent:100", "--success-threshold", "70%", "--max-failures", "1",
        "--bake", "1",
    )  # fmt: skip
    partial = fleet.root / "agents" / STALLED / "downloads" / v1["package_name"] / "model.so.part"
    wait_for(lambda: partial.exists() and partial.stat().st_size > 0, "a half download")
    fleet.agents[STALLED].send_signal(signal.SIGKILL)
    fleet.agents[STALLED].wait()
    proxies[STALLED].mode = "pass"
    proxies[STALLED].release.set()
    fleet.start_agent(STALLED)

    first = wait_for(lambda: (p := fleet.plan("first"))["status"] != "InProgress" and p, "plan 1")
    assert first["status"] == "Completed", first
    wait_for(lambda: fleet.device(STALLED)["package_name"] == v1["package_name"], "the resume")
    assert proxies[STALLED].ranges and proxies[STALLED].ranges[0] != "bytes=0-"

    refusal = wait_for(lambda: fleet.device(TAMPERED)["refusal"], "the tampered refusal")
    assert refusal["code"] == "checksum_mismatch" and refusal["package_name"] == v1["package_name"]
    assert fleet.device(TAMPERED)["package_name"] is None

    assert fleet.device(OFFLINE)["package_name"] is None
    proxies[OFFLINE].mode = "pass"
    wait_for(lambda: fleet.device(OFFLINE)["package_name"] == v1["package_name"], "the catch-up")

    # Wave 2: v2 through a canary and a wave; one wave device fails requests -> the gate fails.
    fleet.cli(
        "edge", "deploy", "second", "--fleet", "fleet", "--package", v2["package_name"],
        "--stage", "canary=devices:d00,d01", "--stage", "wave=devices:d02,d03,d04",
        "--stage", "rest=percent:100", "--gate", "error-rate:0.3", "--bake", "6",
    )  # fmt: skip
    wave = ["d02", "d03", "d04"]
    wait_for(
        lambda: all(fleet.device(d)["package_name"] == v2["package_name"] for d in wave),
        "the wave to install v2",
    )
    port = fleet.port("d03")
    for _ in range(5):
        httpx.post(f"http://127.0.0.1:{port}/invocations", content=b"1,2",
                   headers={"Content-Type": "text/csv"})  # fmt: skip
    second = wait_for(lambda: (p := fleet.plan("second"))["status"] != "InProgress" and p, "plan 2")
    assert second["status"] == "RolledBack", second
    assert [s["status"] for s in second["stages"]] == ["Completed", "RolledBack", "Pending"]
    assert "error-rate gate: d03" in second["stages"][1]["reason"]
    for device in wave:
        wait_for(lambda d=device: fleet.device(d)["package_name"] == v1["package_name"], "rollback")
    for device in ("d00", "d01"):
        assert fleet.device(device)["package_name"] == v2["package_name"]
    for device in ("d05", "d06", STALLED, OFFLINE):
        described = fleet.device(device)
        assert described["desired"]["package_name"] == v1["package_name"]
        assert described["package_name"] == v1["package_name"]

    # Sampled requests reach the store in batches.
    good = httpx.post(f"http://127.0.0.1:{fleet.port('d00')}/invocations", content=b"0.1,0.2,0.3",
                      headers={"Content-Type": "text/csv"})  # fmt: skip
    assert good.status_code == 200
    captures = fleet.root / "home" / "store" / "edge" / "captures" / "fleet" / "d00"
    wait_for(lambda: list(captures.rglob("*.jsonl")), "captures of d00 in the store")
