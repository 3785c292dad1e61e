"""The golden path as a user runs it: `cairn up`, `cairn demo`, then the endpoint over plain HTTP.

Checks what the demo promises: the gateway serves exactly the trained model's predictions, the v2
and SageMaker-style protocols agree, the printed curl command works, and the CLI sees it all.
"""

from __future__ import annotations

import json
import shlex
import shutil
import stat
import subprocess

import httpx
import numpy as np
import pandas as pd
import pytest
from cairn.artifacts import load_model
from cairn.store import open_store

from tests.support.auth import home_headers
from tests.support.demo_platform import DemoPlatform, cli

pytestmark = pytest.mark.e2e


@pytest.fixture
def platform(demo_platform: DemoPlatform) -> DemoPlatform:
    return demo_platform


def gateway_url(platform: DemoPlatform) -> str:
    """From runtime.json: port 8080 may be taken, the runtime then picks another one."""
    return next(s["url"] for s in platform.state["services"] if s["name"] == "gateway")


def validation_rows(platform: DemoPlatform, count: int) -> tuple[list[str], pd.DataFrame]:
    summary = platform.summary
    frame = pd.read_csv(summary["validation_csv"]).head(count)
    features = frame[summary["feature_columns"]]
    lines = [",".join(str(cell) for cell in row) for row in features.itertuples(index=False)]
    return lines, features


def test_demo_prints_every_step_and_the_event_trail(platform: DemoPlatform) -> None:
    output = platform.demo.stdout
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
    assert platform.summary["gateway_url"] == gateway_url(platform)


def test_served_predictions_equal_the_trained_models_offline_predictions(
    platform: DemoPlatform,
) -> None:
    summary = platform.summary
    lines, features = validation_rows(platform, 25)
    store = open_store((platform.home / "store").resolve().as_uri())
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


def test_v2_and_sagemaker_requests_give_the_same_numbers(platform: DemoPlatform) -> None:
    from cairn_sdk import Client

    summary = platform.summary
    lines, features = validation_rows(platform, 10)
    with Client.from_runtime(platform.home, access_key=summary["bearer_token"]) as client:
        sagemaker = client.invoke("credit-risk", "\n".join(lines), "text/csv")
        rows = [
            [cell.item() if hasattr(cell, "item") else cell for cell in row]
            for row in features.itertuples(index=False)
        ]
        v2 = client.invoke_v2("credit-risk", rows)
    assert sagemaker.variant == v2.variant == "AllTraffic"
    assert v2.predictions == sagemaker.predictions
    assert summary["answers"]["csv"] == summary["answers"]["v2"] == summary["answers"]["json"]


def test_the_printed_curl_command_works(platform: DemoPlatform) -> None:
    summary = platform.summary
    curl = summary["curl"]
    assert curl in platform.demo.stdout.replace("\n", "")
    argv = shlex.split(curl)
    if shutil.which("curl"):
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        answer = float(result.stdout)
    else:
        headers = dict(argv[i + 1].split(": ", 1) for i, arg in enumerate(argv) if arg == "-H")
        answer = float(httpx.post(argv[4], content=argv[-1], headers=headers).text)
    assert answer == pytest.approx(summary["answers"]["csv"][0], rel=1e-6)


def test_the_cli_sees_the_model_and_the_endpoint(platform: DemoPlatform) -> None:
    env, summary = platform.env, platform.summary
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

    wrong = {**env, "CAIRN_API_KEY": "CKIAAAAAAAAAAAAAAAAA:not-the-secret"}
    refused = cli(wrong, "invoke", "credit-risk", "--body", lines[0])
    assert refused.returncode == 1
    assert "403" in refused.stderr

    missing = cli(env, "jobs", "describe", "no-such-job")
    assert missing.returncode == 1 and "no training job" in missing.stderr


def service_url(platform: DemoPlatform, name: str) -> str:
    return next(s["url"] for s in platform.state["services"] if s["name"] == name)


def admin(platform: DemoPlatform) -> dict[str, str]:
    return home_headers(platform.home)


def test_a_fresh_platform_is_locked_and_its_admin_credential_is_private(
    platform: DemoPlatform,
) -> None:
    credential = platform.home / "credentials.json"
    assert stat.S_IMODE(credential.stat().st_mode) == 0o600
    assert "Admin credential created" in platform.log.read_text()
    anonymous = [
        ("ingest", "POST", "/datasets/keysdump/register"),
        ("trainer", "POST", "/training-jobs"),
        ("gateway", "GET", "/endpoints"),
        ("gateway", "POST", "/admin/keys"),
        ("registry", "GET", "/model-package-groups"),
        ("deployer", "GET", "/endpoints"),
        ("gateway", "POST", "/endpoints/credit-risk/invocations"),
    ]
    for name, method, path in anonymous:
        response = httpx.request(method, service_url(platform, name) + path, json={})
        assert response.status_code == 401, (name, path, response.text)


def test_user_locations_cannot_reach_platform_data(platform: DemoPlatform) -> None:
    ingest, trainer = service_url(platform, "ingest"), service_url(platform, "trainer")
    for source in ("gateway/keys/", "platform/keys/", "data/../platform/keys/"):
        body = {"source_uri": source, "format": "jsonl"}
        response = httpx.post(
            f"{ingest}/datasets/keysdump/register", json=body, headers=admin(platform)
        )
        assert response.status_code == 400 and "source_uri" in response.json()["error"], source
    job = {
        "job_name": "sneaky",
        "algorithm": "xgboost",
        "input_channels": [{"name": "train", "uri": "dataset://credit-risk-train@1"}],
    }
    for field, value in (("output_uri", "gateway/keys"), ("output_uri", "platform/keys")):
        response = httpx.post(
            f"{trainer}/training-jobs", json={**job, field: value}, headers=admin(platform)
        )
        assert response.status_code == 400 and field in response.json()["error"]
    script = {**job, "algorithm": "script", "entry_point": "platform/keys/x.json"}
    response = httpx.post(f"{trainer}/training-jobs", json=script, headers=admin(platform))
    assert response.status_code == 400 and "entry_point" in response.json()["error"]
    keys = httpx.get(f"{service_url(platform, 'gateway')}/admin/keys", headers=admin(platform))
    assert keys.status_code == 200 and "secret" not in keys.text


def test_keys_are_scoped_and_a_bare_secret_is_not_a_credential(platform: DemoPlatform) -> None:
    env, summary = platform.env, platform.summary
    gateway = service_url(platform, "gateway")
    lines, _ = validation_rows(platform, 1)
    invoke = f"{gateway}/endpoints/credit-risk/invocations"
    csv = {"Content-Type": "text/csv"}
    bare = summary["bearer_token"].split(":", 1)[1]
    assert (
        httpx.post(
            invoke, content=lines[0], headers={**csv, "Authorization": f"Bearer {bare}"}
        ).status_code
        == 403
    )
    made = cli(
        env,
        "keys",
        "create",
        "--name",
        "other-team",
        "--scope",
        "invoke",
        "--endpoint",
        "other",
        "--json",
    )
    assert made.returncode == 0, made.stderr
    other = {**csv, "Authorization": f"Bearer {json.loads(made.stdout)['token']}"}
    assert httpx.post(invoke, content=lines[0], headers=other).status_code == 403
    undeclared = {
        **csv,
        "Authorization": f"Bearer {summary['bearer_token']}",
        "X-Amzn-SageMaker-Target-Model": "models/some-other-package",
    }
    response = httpx.post(invoke, content=lines[0], headers=undeclared)
    assert response.status_code in (403, 404) and response.json()["code"]
    key_id = json.loads(made.stdout)["key_id"]
    assert cli(env, "keys", "revoke", key_id).returncode == 0
    listed = json.loads(cli(env, "keys", "list", "--json").stdout)
    assert {k["key_id"]: k["status"] for k in listed}[key_id] == "Inactive"


def test_changes_are_audited_under_the_authenticated_principal(platform: DemoPlatform) -> None:
    env = platform.env
    versions = json.loads(cli(env, "models", "list", "credit-risk", "--json").stdout)
    assert versions[0]["approved_by"] == "admin"
    audit = cli(env, "audit", "--json", "--limit", "500")
    assert audit.returncode == 0, audit.stderr
    records = json.loads(audit.stdout)
    done = {(r["action"], r["principal"], r["outcome"]) for r in records}
    assert ("model.approve", "admin", "success") in done
    assert ("key.create", "admin", "success") in done and ("key.revoke", "admin", "success") in done
    assert any(r["action"].startswith("endpoint.") and r["principal"] == "admin" for r in records)
    assert all(r["correlation_id"] for r in records)
