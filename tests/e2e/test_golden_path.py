"""The golden path as a user runs it: `cairn up`, `cairn demo`, then the endpoint over plain HTTP.

Checks what the demo promises: the gateway serves exactly the trained model's predictions, the v2
and SageMaker-style protocols agree, the printed curl command works, and the CLI sees it all.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from cairn.artifacts import load_model
from cairn.store import open_store

pytestmark = pytest.mark.e2e

CAIRN = str(Path(sys.executable).with_name("cairn"))
SERVICES = ["ingest", "trainer", "registry", "deployer", "gateway"]


def cli(env: dict[str, str], *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CAIRN, *args], env=env, capture_output=True, text=True, timeout=timeout_s
    )


def all_healthy(env: dict[str, str]) -> dict[str, Any] | None:
    state = json.loads(cli(env, "status", "--json").stdout or "{}")
    if not state.get("running"):
        return None
    statuses = {service["name"]: service["status"] for service in state["services"]}
    return state if all(statuses.get(name) == "healthy" for name in SERVICES) else None


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("golden") / "home"
    env = {key: value for key, value in os.environ.items() if not key.startswith("CAIRN_")}
    env.update(CAIRN_HOME=str(home), CAIRN_OTEL_EXPORTER="none")
    log = home.parent / "up.log"
    only = [arg for name in SERVICES for arg in ("--only", name)]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [CAIRN, "up", *only], env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while (state := all_healthy(env)) is None:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"services not healthy:\n{log.read_text()}"
            time.sleep(0.3)
        demo = cli(env, "demo", "--rows", "8000", "--num-round", "30", "--no-start", timeout_s=120)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        summary = json.loads((home / "demo" / "summary.json").read_text())
        yield {"home": home, "env": env, "state": state, "demo": demo, "summary": summary}
    finally:
        down = cli(env, "down", "--timeout", "20")
        process.wait(timeout=30)
        assert down.returncode == 0, down.stderr


def gateway_url(platform: dict[str, Any]) -> str:
    """From runtime.json: port 8080 may be taken, the runtime then picks another one."""
    return next(s["url"] for s in platform["state"]["services"] if s["name"] == "gateway")


def validation_rows(platform: dict[str, Any], count: int) -> tuple[list[str], pd.DataFrame]:
    summary = platform["summary"]
    frame = pd.read_csv(summary["validation_csv"]).head(count)
    features = frame[summary["feature_columns"]]
    lines = [",".join(str(cell) for cell in row) for row in features.itertuples(index=False)]
    return lines, features


def test_demo_prints_every_step_and_the_event_trail(platform: dict[str, Any]) -> None:
    output = platform["demo"].stdout
    for expected in (
        "Train XGBoost",
        "Approve version",
        "Deploy to endpoint credit-risk",
        "TrainingJobCompleted",
        "ModelPackageRegistered",
        "EndpointUpdated",
        "top contributions",
        "curl ",
        "cairn down",
    ):
        assert expected in output, f"{expected!r} missing from the demo output:\n{output}"
    assert platform["summary"]["gateway_url"] == gateway_url(platform)


def test_served_predictions_equal_the_trained_models_offline_predictions(
    platform: dict[str, Any],
) -> None:
    summary = platform["summary"]
    lines, features = validation_rows(platform, 25)
    store = open_store((platform["home"] / "store").resolve().as_uri())
    model = load_model(store, summary["artifact_uri"])
    offline = model.predict(
        model.encode_rows([list(row) for row in features.itertuples(index=False)])
    )

    response = httpx.post(
        f"{gateway_url(platform)}/endpoints/credit-risk/invocations",
        content="\n".join(lines),
        headers={"Authorization": f"Bearer {summary['bearer_token']}", "Content-Type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    served = np.array([float(line) for line in response.text.split()])
    np.testing.assert_allclose(served, offline, rtol=1e-6)
    assert len(set(np.round(served, 4))) > 5, "a constant model would pass the check above"


def test_v2_and_sagemaker_requests_give_the_same_numbers(platform: dict[str, Any]) -> None:
    from cairn_sdk import Client

    summary = platform["summary"]
    lines, features = validation_rows(platform, 10)
    with Client.from_runtime(platform["home"], access_key=summary["bearer_token"]) as client:
        sagemaker = client.invoke("credit-risk", "\n".join(lines), "text/csv")
        rows = [
            [cell.item() if hasattr(cell, "item") else cell for cell in row]
            for row in features.itertuples(index=False)
        ]
        v2 = client.invoke_v2("credit-risk", rows)
    assert sagemaker.variant == v2.variant == "AllTraffic"
    assert v2.predictions == sagemaker.predictions
    assert summary["answers"]["csv"] == summary["answers"]["v2"] == summary["answers"]["json"]


def test_the_printed_curl_command_works(platform: dict[str, Any]) -> None:
    summary = platform["summary"]
    curl = summary["curl"]
    assert curl in platform["demo"].stdout.replace("\n", "")
    argv = shlex.split(curl)
    if shutil.which("curl"):
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        answer = float(result.stdout)
    else:
        headers = dict(argv[i + 1].split(": ", 1) for i, arg in enumerate(argv) if arg == "-H")
        answer = float(httpx.post(argv[4], content=argv[-1], headers=headers).text)
    assert answer == pytest.approx(summary["answers"]["csv"][0], rel=1e-6)


def test_the_cli_sees_the_model_and_the_endpoint(platform: dict[str, Any]) -> None:
    env, summary = platform["env"], platform["summary"]
    models = cli(env, "models", "list", "credit-risk", "--json")
    assert models.returncode == 0, models.stderr
    assert [v["approval_status"] for v in json.loads(models.stdout)] == ["Approved"]

    endpoint = json.loads(cli(env, "endpoints", "describe", "credit-risk", "--json").stdout)
    assert endpoint["status"] == "InService"
    assert endpoint["production_variants"][0]["model_version"] == summary["model_version"]

    lines, _ = validation_rows(platform, 1)
    invoked = cli(
        env,
        "invoke",
        "credit-risk",
        "--body",
        lines[0],
        "--access-key",
        summary["bearer_token"],
        "--json",
    )
    assert invoked.returncode == 0, invoked.stderr
    assert json.loads(invoked.stdout)["body"] == [summary["answers"]["csv"][0]]

    refused = cli(env, "invoke", "credit-risk", "--body", lines[0])  # no access key
    assert refused.returncode == 1
    assert "401" in refused.stderr

    missing = cli(env, "jobs", "describe", "no-such-job")
    assert missing.returncode == 1 and "no training job" in missing.stderr
