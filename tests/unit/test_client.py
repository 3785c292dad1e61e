"""`cairn_sdk.Client`: errors become `cairn.errors` classes; URLs, waits and credentials work."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from cairn.errors import Conflict, InvalidInput, NotFound, Unauthenticated, Unavailable
from cairn_sdk import Client, ServiceNotConfigured, service_urls


def client_answering(status: int, body: Any, **urls: str) -> Client:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body)

    given = urls or {"trainer_url": "http://trainer", "deployer_url": "http://deployer"}
    return Client(**given, transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (404, "endpoint_not_found", NotFound),
        (409, "conflict", Conflict),
        (400, "model_version_unknown", InvalidInput),
        (422, "invalid_input", InvalidInput),
        (401, "unauthenticated", Unauthenticated),
        (503, "unavailable", Unavailable),
    ],
)
def test_service_errors_map_to_cairn_errors_with_the_services_reason_and_code(
    status: int, code: str, expected: type[Exception]
) -> None:
    client = client_answering(status, {"error": "the reason", "code": code})
    with pytest.raises(expected) as raised:
        client.describe_endpoint("credit-risk")
    assert raised.value.message == "the reason"  # type: ignore[attr-defined]
    assert raised.value.code == code  # type: ignore[attr-defined]
    assert raised.value.details["status"] == status  # type: ignore[attr-defined]


def test_a_service_that_cannot_be_reached_is_unavailable() -> None:
    client = Client(deployer_url="http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(Unavailable, match="deployer"):
        client.list_endpoints()


def test_a_service_without_a_url_says_how_to_give_one() -> None:
    with pytest.raises(ServiceNotConfigured, match="CAIRN_REGISTRY_URL"):
        Client(trainer_url="http://trainer").list_model_packages("credit-risk")


def test_per_service_env_overrides_the_target_and_runtime(tmp_path: Path) -> None:
    env = {"CAIRN_TARGET": "http://ingress:80/", "CAIRN_GATEWAY_URL": "http://gw:8080"}
    urls = service_urls(env=env)
    assert urls["trainer"] == "http://ingress:80"
    assert urls["gateway"] == "http://gw:8080"
    assert service_urls(home=tmp_path, env={}) == {}  # nothing runs there


def test_training_job_request_carries_channels_registration_and_hyperparameters() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(202, json={"job_name": "j", "status": "Pending"})

    client = Client(trainer_url="http://trainer", transport=httpx.MockTransport(handler))
    client.create_training_job(
        "j",
        "xgboost",
        {"train": "dataset://d@1"},
        hyperparameters={"num_round": 5},
        label_column="default",
        register_group="credit-risk",
    )
    assert seen[0]["input_channels"][0] == {
        "name": "train",
        "uri": "dataset://d@1",
        "content_type": "text/csv",
        "label_column": "default",
    }
    assert seen[0]["registration"] == {"model_package_group": "credit-risk"}
    assert seen[0]["hyperparameters"] == {"num_round": 5}


def test_wait_for_training_job_reports_each_poll_until_the_job_ends() -> None:
    statuses = iter(["Pending", "InProgress", "InProgress", "Completed"])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"job_name": "j", "status": next(statuses)})

    client = Client(trainer_url="http://trainer", transport=httpx.MockTransport(handler))
    seen: list[str] = []
    job = client.wait_for_training_job(
        "j", on_progress=lambda j: seen.append(j["status"]), poll_s=0
    )
    assert job["status"] == "Completed"
    assert seen == ["Pending", "InProgress", "InProgress", "Completed"]


def test_wait_for_endpoint_returns_only_once_the_gateway_serves_the_final_revision() -> None:
    """The deployer stored revision 3 InService but died before announcing it: the gateway
    serves revision 2 until the restarted deployer announces 3. The waiter waits for that."""
    served = iter([None, 2, 2, 3])
    asked: list[int | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "deployer":
            return httpx.Response(200, json={"status": "InService", "revision": 3})
        assert request.url.path == "/endpoints/credit-risk/models"
        revision = next(served)
        asked.append(revision)
        if revision is None:
            return httpx.Response(404, json={"error": "not served", "code": "endpoint_not_found"})
        return httpx.Response(200, json={"endpoint_name": "credit-risk", "revision": revision})

    client = Client(
        deployer_url="http://deployer",
        gateway_url="http://gateway",
        transport=httpx.MockTransport(handler),
    )
    endpoint = client.wait_for_endpoint("credit-risk", poll_s=0)
    assert endpoint["revision"] == 3 and asked == [None, 2, 2, 3]


def test_invoke_sends_sagemaker_headers_and_reads_the_invoked_variant() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            content=b"0.25\n0.75\n",
            headers={"content-type": "text/csv", "x-amzn-invoked-production-variant": "blue"},
        )

    client = Client(
        gateway_url="http://gw", access_key="CKIA:secret", transport=httpx.MockTransport(handler)
    )
    answer = client.invoke("credit", "1,2\n3,4", target_variant="blue", explain=True)
    assert answer.predictions == [0.25, 0.75]
    assert answer.variant == "blue"
    headers = seen[0].headers
    assert headers["authorization"] == "Bearer CKIA:secret"
    assert headers["x-amzn-sagemaker-target-variant"] == "blue"
    assert headers["x-amzn-sagemaker-enable-explanations"] == "true"
    assert seen[0].url.path == "/endpoints/credit/invocations"


def recording_client(seen: list[httpx.Request], **options: Any) -> Client:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/invocations"):
            return httpx.Response(200, content=b"0.5\n", headers={"content-type": "text/csv"})
        return httpx.Response(200, json=[])

    urls = {"deployer_url": "http://deployer", "gateway_url": "http://gw"}
    return Client(**urls, transport=httpx.MockTransport(handler), **options)


def test_every_call_sends_the_homes_credential_unless_cairn_api_key_names_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cairn.auth.credentials import save_home_credential

    save_home_credential(tmp_path, "CKIAHOME:home-secret", name="admin")
    monkeypatch.delenv("CAIRN_API_KEY", raising=False)
    monkeypatch.delenv("CAIRN_ACCESS_KEY", raising=False)
    seen: list[httpx.Request] = []

    with recording_client(seen, home=tmp_path) as client:
        client.list_endpoints()
        client.invoke("credit-risk", "1,2")
    monkeypatch.setenv("CAIRN_API_KEY", "CKIAENV:env-secret")
    with recording_client(seen, home=tmp_path) as client:
        client.list_endpoints()

    assert [request.headers["authorization"] for request in seen] == [
        "Bearer CKIAHOME:home-secret",
        "Bearer CKIAHOME:home-secret",
        "Bearer CKIAENV:env-secret",
    ]
    assert all("x-api-key" not in request.headers for request in seen)


def test_a_narrow_access_key_is_sent_on_invocations_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CAIRN_ACCESS_KEY", raising=False)
    seen: list[httpx.Request] = []

    with recording_client(seen, api_key="CKIAADMIN:admin", home=tmp_path) as client:
        client.use_access_key({"key_id": "CKIANARROW", "token": "CKIANARROW:narrow"})
        client.invoke("credit-risk", "1,2")
        client.list_endpoints()

    assert seen[0].headers["authorization"] == "Bearer CKIANARROW:narrow"
    assert seen[1].headers["authorization"] == "Bearer CKIAADMIN:admin"


def test_without_any_credential_no_authorization_header_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CAIRN_API_KEY", raising=False)
    monkeypatch.delenv("CAIRN_ACCESS_KEY", raising=False)
    seen: list[httpx.Request] = []

    with recording_client(seen, home=tmp_path) as client:
        client.list_endpoints()

    assert "authorization" not in seen[0].headers
