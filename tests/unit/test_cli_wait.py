"""`--wait` outlasts a restart: the CLI keeps waiting while the service is down or answers 503,
finds it again on its new port in runtime.json, and reports the job's or endpoint's real outcome.

The services are small stand-ins (the trainer's and deployer's routes, the gateway's readiness)
on real uvicorn servers; `cairn` runs as its own process, as a user runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from tests.support.http_server import served_in_thread
from tests.support.runtime_home import fake_platform

CAIRN = str(Path(sys.executable).with_name("cairn"))
OUTAGE_S = 1.0  # longer than the CLI's poll interval, so its next poll finds nobody


class Platform:
    """What the stand-ins serve; shared by the server before and after the restart."""

    def __init__(self, job_status: str, endpoint_status: str) -> None:
        self.job_status = job_status
        self.endpoint_status = endpoint_status
        self.unavailable_left = 0
        self.unavailable_served = 0
        self.polls = 0
        self.polled = threading.Event()

    def poll(self) -> JSONResponse | None:
        """A 503 while 'starting up', else count the poll."""
        if self.unavailable_left:
            self.unavailable_left -= 1
            self.unavailable_served += 1
            return JSONResponse({"error": "starting", "code": "unavailable"}, status_code=503)
        self.polls += 1
        self.polled.set()
        return None


def stand_in(platform: Platform) -> FastAPI:
    api = FastAPI()

    def job(name: str) -> dict[str, Any]:
        return {
            "job_name": name,
            "status": platform.job_status,
            "artifact_uri": "models/x/",
            "metrics": {"validation:auc": 0.9},
            "request": {"hyperparameters": {"num_round": 10}},
            "failure_reason": "out of memory" if platform.job_status == "Failed" else None,
        }

    @api.post("/training-jobs", status_code=201)
    def create_job(body: dict[str, Any]) -> dict[str, Any]:
        return job(body["job_name"])

    @api.get("/training-jobs/{name}", response_model=None)
    def get_job(name: str) -> dict[str, Any] | JSONResponse:
        return platform.poll() or job(name)

    def endpoint(name: str) -> dict[str, Any]:
        return {"endpoint_name": name, "status": platform.endpoint_status, "revision": 2}

    @api.put("/endpoints/{name}")
    def update_endpoint(name: str, body: dict[str, Any]) -> dict[str, Any]:
        return endpoint(name)

    @api.get("/endpoints/{name}", response_model=None)
    def get_endpoint(name: str) -> dict[str, Any] | JSONResponse:
        return platform.poll() or endpoint(name)

    def batch_job(name: str) -> dict[str, Any]:
        return {
            "job_name": name,
            "status": platform.job_status,
            "shards_total": 2,
            "shards_done": 2 if platform.job_status == "Completed" else 1,
            "records_per_s": 10.0,
            "records_out": 20,
            "records_failed": 0,
            "manifest_key": "outputs/x/manifest.json",
            "failure_reason": "model failed" if platform.job_status == "Failed" else None,
        }

    @api.post("/transform-jobs", status_code=202)
    def create_transform_job(body: dict[str, Any]) -> dict[str, Any]:
        return batch_job(body["job_name"])

    @api.get("/transform-jobs/{name}", response_model=None)
    def get_transform_job(name: str) -> dict[str, Any] | JSONResponse:
        return platform.poll() or batch_job(name)

    def tuning_job(name: str) -> dict[str, Any]:
        return {"tuning_job_name": name, "status": platform.job_status, "trials": []}

    @api.post("/tuning-jobs", status_code=202)
    def create_tuning_job(body: dict[str, Any]) -> dict[str, Any]:
        return tuning_job(body["tuning_job_name"])

    @api.get("/tuning-jobs/{name}", response_model=None)
    def get_tuning_job(name: str) -> dict[str, Any] | JSONResponse:
        return platform.poll() or tuning_job(name)

    @api.get("/endpoints/{name}/models", response_model=None)
    def served(name: str) -> dict[str, Any] | JSONResponse:
        if platform.endpoint_status != "InService":
            return JSONResponse({"error": "not served", "code": "not_found"}, status_code=404)
        return {"endpoint_name": name, "revision": 2, "models": []}

    return api


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def start_cairn(home: Path, *args: str) -> subprocess.Popen[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("CAIRN_") or key == "CAIRN_PLATFORM_KEY"
    }
    env.update(CAIRN_HOME=str(home.parent / "elsewhere"), COLUMNS="200", CAIRN_API_KEY="k:s")
    return subprocess.Popen(
        [CAIRN, *args, "--home", str(home)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def restart_mid_wait(
    home: Path,
    platform: Platform,
    services: tuple[str, ...],
    command: list[str],
    while_down: Callable[[], None],
) -> tuple[int, str, str]:
    """Run `cairn` against the stand-in; once it has polled, stop the stand-in, apply
    `while_down` (what happens meanwhile), and bring it back on another port answering 503
    twice first. Returns the CLI's exit code and output."""
    with served_in_thread(stand_in(platform), "before") as before:
        fake_platform(home, dict.fromkeys(services, before))
        process = start_cairn(home, *command)
        assert platform.polled.wait(60), "the CLI never polled"
    while_down()
    time.sleep(OUTAGE_S)
    platform.unavailable_left = 2
    with served_in_thread(stand_in(platform), "after") as after:
        assert after != before
        platform.polls = 0
        fake_platform(home, dict.fromkeys(services, after))
        stdout, stderr = process.communicate(timeout=60)
        assert platform.polls >= 1, "the CLI never found the service on its new port"
    assert platform.unavailable_served == 2
    return process.returncode, stdout, stderr


@pytest.mark.parametrize(("outcome", "exit_code"), [("Completed", 0), ("Failed", 1)])
def test_train_wait_reports_the_real_outcome_after_a_trainer_restart(
    home: Path, outcome: str, exit_code: int
) -> None:
    """The job ends while the trainer is down; the CLI sees how once it is back elsewhere."""
    platform = Platform(job_status="InProgress", endpoint_status="InService")
    train = ["train", "job-1", "-c", "train=data/x.csv", "--label", "y", "--wait", "--json"]

    def job_ends() -> None:
        platform.job_status = outcome

    code, stdout, stderr = restart_mid_wait(home, platform, ("trainer",), train, job_ends)

    assert code == exit_code, stderr
    assert f'"status": "{outcome}"' in stdout
    assert "cannot reach" not in stderr


def test_endpoints_update_wait_outlasts_a_deployer_and_gateway_restart(home: Path) -> None:
    platform = Platform(job_status="Completed", endpoint_status="Updating")
    update = ["endpoints", "update", "ep", "--variant", "AllTraffic=credit:2", "--wait", "--json"]

    def rollout_ends() -> None:
        platform.endpoint_status = "InService"

    code, stdout, stderr = restart_mid_wait(
        home, platform, ("deployer", "gateway"), update, rollout_ends
    )

    assert code == 0, stderr
    assert '"status": "InService"' in stdout


TRANSFORM = [
    "transform", "create", "score", "--model", "credit:1", "--input", "data/x/",
    "--output", "outputs/x/", "--wait", "--json",
]  # fmt: skip
TUNE = [
    "tune", "create", "tune-1", "-c", "train=data/x.csv", "--label", "y",
    "--range", "eta=0.1:0.3", "--max-jobs", "2", "--wait", "--json",
]  # fmt: skip


@pytest.mark.parametrize(
    ("service", "command"), [("batch", TRANSFORM), ("tuner", TUNE)], ids=["transform", "tune"]
)
def test_transform_and_tune_wait_report_the_real_outcome_after_a_restart(
    home: Path, service: str, command: list[str]
) -> None:
    """Found by the chaos suite: these waits said "cannot reach" while the job went on."""
    platform = Platform(job_status="InProgress", endpoint_status="InService")

    def job_ends() -> None:
        platform.job_status = "Completed"

    code, stdout, stderr = restart_mid_wait(home, platform, (service,), command, job_ends)

    assert code == 0, stderr
    assert '"status": "Completed"' in stdout
    assert "cannot reach" not in stderr
