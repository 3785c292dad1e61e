"""Restart suite: `cairn down` / `cairn up` after the demo brings everything back as it was.

One restart of the shared demo platform (marked `restarts_platform`, so it runs after every other
user of it). Before it the test writes down what a user sees through the CLI: every model version
and its approval, the ingest service's datasets and their profiles, the endpoint's answers to the
same rows over both protocols the golden path uses (SageMaker CSV and Open Inference Protocol
v2), which keys authenticate and where every service and the broker listen. After it, every one of
those facts must be the same, and the URLs printed before the restart (the demo's `curl`) must
still answer.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from typing import Any

import httpx
import pandas as pd
import pytest
from cairn_sdk import Client

from tests.support.demo_platform import DemoPlatform

pytestmark = [pytest.mark.e2e, pytest.mark.restarts_platform]

ROWS = 5  # the validation rows whose answers the demo's summary holds


def cli(platform: DemoPlatform, *args: str) -> str:
    result = platform.cli(*args)
    assert result.returncode == 0, f"cairn {' '.join(args)}: {result.stdout}{result.stderr}"
    return result.stdout


def validation_lines(platform: DemoPlatform) -> str:
    summary = platform.summary
    features = pd.read_csv(summary["validation_csv"]).head(ROWS)[summary["feature_columns"]]
    return "\n".join(
        ",".join(str(cell) for cell in row) for row in features.itertuples(index=False)
    )


def seen_by_a_user(platform: DemoPlatform) -> dict[str, Any]:
    """Every model version and its status, every dataset version's profile, the endpoint's
    answers over both protocols, and where each part of the platform listens."""
    endpoint, rows = platform.summary["endpoint_name"], validation_lines(platform)
    groups = [group["name"] for group in json.loads(cli(platform, "models", "list", "--json"))]
    models = {
        group: [
            (v["version"], v["approval_status"], v["artifact_uri"], v["metrics"])
            for v in json.loads(cli(platform, "models", "list", group, "--json"))
        ]
        for group in groups
    }
    datasets = {
        uri: cli(platform, "datasets", "describe", uri)
        for uri in platform.summary["datasets"].values()
    }
    csv = json.loads(cli(platform, "invoke", endpoint, "--body", rows, "--json"))
    v2 = json.loads(cli(platform, "invoke", endpoint, "--v2", "--body", rows, "--json"))
    return {
        "models": models,
        "datasets": datasets,
        "dataset list": cli(platform, "datasets", "list"),
        "answers": {"csv": csv, "v2": v2},
        "urls": {service["name"]: service["url"] for service in platform.state["services"]},
        "broker": platform.state["kafka_bootstrap_servers"],
    }


def invoke_status(platform: DemoPlatform, gateway_url: str, token: str) -> int:
    """The status of one CSV invocation at `gateway_url` with `token` (200, or 403 refused)."""
    response = httpx.post(
        f"{gateway_url}/endpoints/{platform.summary['endpoint_name']}/invocations",
        content=validation_lines(platform).splitlines()[0],
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
        timeout=30,
    )
    return response.status_code


def run_curl(command: str) -> str:
    """The demo's printed curl command, run as printed (by httpx where curl is not installed)."""
    argv = shlex.split(command)
    if shutil.which("curl"):
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return result.stdout
    headers = dict(argv[i + 1].split(": ", 1) for i, arg in enumerate(argv) if arg == "-H")
    response = httpx.post(argv[4], content=argv[-1], headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.text


def test_after_a_restart_every_model_endpoint_key_dataset_and_port_is_back(
    demo_platform: DemoPlatform,
) -> None:
    platform, summary = demo_platform, demo_platform.summary
    endpoint = summary["endpoint_name"]
    with Client.from_runtime(platform.home) as client:
        kept = client.create_key("restart-kept", scopes=["invoke"], endpoints=[endpoint])
        revoked = client.create_key("restart-revoked", scopes=["invoke"], endpoints=[endpoint])
        client.revoke_key(revoked["key_id"])
    before = seen_by_a_user(platform)
    gateway_before = before["urls"]["gateway"]
    assert before["models"][summary["model_package_group"]], before["models"]
    assert before["answers"]["csv"]["body"] == summary["answers"]["csv"]
    assert invoke_status(platform, gateway_before, kept["token"]) == 200
    assert invoke_status(platform, gateway_before, revoked["token"]) == 403

    platform.restart()

    after = seen_by_a_user(platform)
    for fact in ("urls", "broker", "models", "datasets", "dataset list", "answers"):
        assert after[fact] == before[fact], f"{fact} changed across the restart"
    # The URL and key printed before the restart still work: the demo's curl, the kept key.
    assert float(run_curl(summary["curl"])) == pytest.approx(summary["answers"]["csv"][0], rel=1e-6)
    assert invoke_status(platform, gateway_before, kept["token"]) == 200
    assert invoke_status(platform, gateway_before, revoked["token"]) == 403
