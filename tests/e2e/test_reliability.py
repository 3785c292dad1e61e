"""Reliability as a user sees it: kill -9 a trainer mid-job and the job still finishes exactly once.

Driven only through `cairn up`, `cairn status --json`, `cairn events tail` and the services' HTTP
APIs. The other reliability promise of the closed loop (the same DriftDetected three times -> one
retrain) is checked end to end in tests/integration/test_monitor_flow.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.auth import home_headers
from tests.support.trainer_data import credit_frame

pytestmark = pytest.mark.e2e

CAIRN = str(Path(sys.executable).with_name("cairn"))
SERVICES = ["trainer", "registry"]
JOB = "reliability-kill-9"
GROUP = "reliability-credit"
WATCHED = [
    "TrainingJobRequested",
    "TrainingJobStarted",
    "TrainingJobProgressed",
    "TrainingJobCompleted",
    "TrainingJobFailed",
    "ModelPackageRegistered",
]


def cli(env: dict[str, str], *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CAIRN, *args], env=env, capture_output=True, text=True, timeout=timeout_s
    )


def status(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """`cairn status --json` by service name; empty while the platform is not up."""
    state = json.loads(cli(env, "status", "--json").stdout or "{}")
    return {s["name"]: s for s in state.get("services", [])} if state.get("running") else {}


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, log: Path) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{log.read_text()}"
        time.sleep(0.2)
    return result


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Trainer + registry under `cairn up`, with a short lease so a dead worker's job moves fast."""
    home = tmp_path_factory.mktemp("reliability") / "home"
    env = {key: value for key, value in os.environ.items() if not key.startswith("CAIRN_")}
    env.update(
        CAIRN_HOME=str(home),
        CAIRN_OTEL_EXPORTER="none",
        CAIRN_BUS_SESSION_TIMEOUT_MS="1500",
        CAIRN_BUS_HEARTBEAT_INTERVAL_MS="300",
        CAIRN_TRAINER_LEASE_S="3",
        CAIRN_TRAINER_HEARTBEAT_S="0.5",
    )
    log = home.parent / "up.log"
    only = [arg for name in SERVICES for arg in ("--only", name)]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [CAIRN, "up", *only], env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:

        def healthy() -> dict[str, dict[str, Any]] | None:
            assert process.poll() is None, log.read_text()
            services = status(env)
            ok = all(services.get(name, {}).get("status") == "healthy" for name in SERVICES)
            return services if ok else None

        services = wait_for("healthy services", healthy, 60, log)
        yield {"home": home, "env": env, "log": log, "services": services}
    finally:
        down = cli(env, "down", "--timeout", "20")
        process.wait(timeout=30)
        assert down.returncode == 0, down.stderr


class EventLog:
    """`cairn events tail --json` running in the background, read back as parsed events."""

    def __init__(self, env: dict[str, str], path: Path) -> None:
        self.path = path
        types = [arg for name in WATCHED for arg in ("--type", name)]
        with path.open("wb") as sink:
            self.process = subprocess.Popen(
                [CAIRN, "events", "tail", "--json", "--from-beginning", *types],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )

    def of(self, event_type: str) -> list[dict[str, Any]]:
        events = []
        for line in self.path.read_text().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("type") == event_type and record["data"].get("job_name") == JOB:
                    events.append(record)
        return events

    def registered(self) -> list[dict[str, Any]]:
        return [
            e
            for e in map(json.loads, filter(None, self.path.read_text().splitlines()))
            if e.get("type") == "ModelPackageRegistered"
            and e["data"].get("model_package_group") == GROUP
        ]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def test_a_trainer_killed_mid_job_is_replaced_and_the_job_completes_exactly_once(
    platform: dict[str, Any],
) -> None:
    home, env, log = platform["home"], platform["env"], platform["log"]
    trainer_url = platform["services"]["trainer"]["url"]
    registry_url = platform["services"]["registry"]["url"]
    # The file:// store is <home>/store: a CSV put there is a training channel by its key.
    data_key = "data/reliability/train.csv"
    (home / "store" / data_key).parent.mkdir(parents=True, exist_ok=True)
    credit_frame(rows=20_000, seed=7).to_csv(home / "store" / data_key, index=False)
    events = EventLog(env, home.parent / "events.jsonl")
    try:
        request = {
            "job_name": JOB,
            "algorithm": "xgboost",
            # Slow enough (several seconds a run on 2 cores) to be killed mid-way.
            "hyperparameters": {"num_round": 250, "max_depth": 6, "eta": 0.1, "progress_every": 5},
            "input_channels": [{"name": "train", "uri": data_key, "label_column": "default"}],
            "registration": {"model_package_group": GROUP},
        }
        created = httpx.post(
            f"{trainer_url}/training-jobs", json=request, headers=home_headers(home), timeout=30
        )
        assert created.status_code in (200, 201, 202), created.text

        victim = platform["services"]["trainer"]  # as `cairn status --json` showed it at start
        wait_for("training progress", lambda: events.of("TrainingJobProgressed"), 60, log)
        os.kill(victim["pid"], signal.SIGKILL)

        def job_done() -> dict[str, Any] | None:
            try:
                doc = httpx.get(
                    f"{trainer_url}/training-jobs/{JOB}", headers=home_headers(home), timeout=5
                ).json()
            except httpx.TransportError:
                return None  # the trainer is still coming back
            return doc if doc.get("status") in ("Completed", "Failed", "Stopped") else None

        job = wait_for("the job to finish after the kill", job_done, 60, log)
        wait_for("the registration", events.registered, 20, log)
        time.sleep(1.5)  # room for a duplicate outcome to show up, if one were coming
        started = events.of("TrainingJobStarted")
        completed = events.of("TrainingJobCompleted")
        registered = events.registered()
    finally:
        events.stop()

    replacement = status(env)["trainer"]
    assert replacement["pid"] != victim["pid"] and replacement["restarts"] >= 1
    assert job["status"] == "Completed", job.get("failure_reason")
    assert job["attempt"] == 2
    # Two starts by two different workers: the killed one, then its replacement's takeover.
    assert [e["data"]["attempt"] for e in started] == [1, 2]
    assert len({e["data"]["worker_id"] for e in started}) == 2
    assert not events.of("TrainingJobFailed")
    # Exactly once: one outcome (a redelivered request may only repeat the same one), one package,
    # one model version.
    assert completed and {e["data"]["artifact_uri"] for e in completed} == {job["artifact_uri"]}
    assert len(registered) == 1
    versions = httpx.get(
        f"{registry_url}/model-package-groups/{GROUP}/versions",
        headers=home_headers(platform["home"]),
        timeout=10,
    )
    assert versions.status_code == 200, versions.text
    assert len(versions.json()) == 1
    manifests = list((home / "store").glob("models/**/manifest.json"))
    assert [m.parent.name for m in manifests] == [JOB]
