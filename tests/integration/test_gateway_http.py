"""The gateway on a real uvicorn server, Tansu broker and moto S3 store, driven like a user would.

One server for the module: endpoint state read from the store at start (an unreadable document
beside it is skipped), an EndpointUpdated applied hot under load, SageMaker (CSV/JSON, boto3
SigV4) and v2 calls answering the model's offline numbers, auth refusals with the kernel's keys,
Target-Model limited to the endpoint's packages, and data capture written and announced.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from cairn.artifacts import load_model
from cairn.bus import EventProducer, tail_events
from cairn.contracts.events import EndpointUpdated, VariantState
from cairn.contracts.state import EndpointStateView, state_spec
from cairn.settings import CairnSettings
from cairn.store import ObjectStore, open_store

from services.gateway.app import create_service
from services.gateway.config import GatewaySettings
from tests.support.auth import auth_settings, scoped_headers, token_for
from tests.support.http_server import served_in_thread
from tests.unit.test_gateway_payloads import ROWS, make_package

pytestmark = pytest.mark.integration

WAIT_S = 20.0
ENDPOINT = "credit"
CSV_BODY = "\n".join(",".join(str(cell) for cell in row) for row in ROWS)


@pytest.fixture(scope="module")
def settings(
    kafka_bootstrap: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> CairnSettings:
    return auth_settings(
        home=tmp_path_factory.mktemp("gateway-home"),
        kafka_bootstrap_servers=kafka_bootstrap,
        store_url=f"s3://gateway-{uuid.uuid4().hex[:12]}",
        s3_endpoint=s3_endpoint,
        s3_access_key="cairn-test",
        s3_secret_key="cairn-test-secret",
        bus_session_timeout_ms=1000,
        bus_heartbeat_interval_ms=100,
        otel_exporter="none",
    )


@pytest.fixture(scope="module")
def store(settings: CairnSettings) -> ObjectStore:
    return open_store(settings=settings)


@pytest.fixture(scope="module")
def packages(store: ObjectStore) -> dict[str, str]:
    """Three models, and the deployer's stored state: variant blue serves model a.

    Model c is in the store but no endpoint declares it; beside the endpoint's document lies
    one that is not an endpoint state at all.
    """
    uris = {
        "a": make_package(store, "models/job-a/", seed=1),
        "b": make_package(store, "models/job-b/", seed=2, trees=5),
        "c": make_package(store, "models/job-c/", seed=3, trees=3),
    }
    state = revision(1, [("blue", uris["a"], 1.0)])
    document = {**state.model_dump(mode="json"), "rollout": {"phase": "done"}}
    endpoints = state_spec(EndpointStateView)
    store.put_bytes(endpoints.key(ENDPOINT), json.dumps(document).encode())
    store.put_bytes(endpoints.key("garbage"), b'{"endpoint_name": "garbage", "revision": ')
    return uris


def revision(
    number: int, variants: list[tuple[str, str, float]], shadow_uri: str | None = None
) -> EndpointUpdated:
    shadow = None
    if shadow_uri is not None:
        shadow = VariantState(
            variant_name="shadow",
            model_package_group="credit",
            model_version=9,
            artifact_uri=shadow_uri,
            weight=1.0,
            instance_count=1,
        )
    return EndpointUpdated(
        endpoint_name=ENDPOINT,
        revision=number,
        status="InService",
        production_variants=[
            VariantState(
                variant_name=name,
                model_package_group="credit",
                model_version=index + 1,
                artifact_uri=uri,
                weight=weight,
                instance_count=1,
            )
            for index, (name, uri, weight) in enumerate(variants)
        ],
        shadow_variant=shadow,
    )


def offline(store: ObjectStore, uri: str) -> list[float]:
    model = load_model(store, uri)
    return model.predict(model.encode_rows(ROWS)).tolist()


@pytest.fixture(scope="module")
def base_url(
    settings: CairnSettings, store: ObjectStore, packages: dict[str, str]
) -> Iterator[str]:
    config = GatewaySettings(capture_flush_s=0.3, metrics_report_s=0.5)
    service = create_service(settings, store, config)
    with served_in_thread(service.asgi, "the gateway", timeout_s=WAIT_S) as url:
        yield url


@pytest.fixture(scope="module")
def key(settings: CairnSettings, store: ObjectStore) -> tuple[str, str]:
    """An invoke key bound to the test's endpoint: (key id, secret)."""
    token = token_for(store, settings, ["invoke"], name="invoker", endpoints=[ENDPOINT])
    key_id, _, secret = token.partition(":")
    return key_id, secret


@pytest.fixture
async def http(base_url: str, key: tuple[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {key[0]}:{key[1]}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10) as client:
        yield client


def runtime_client(base_url: str, key: tuple[str, str], secret: str | None = None) -> Any:
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=base_url,
        region_name="eu-west-1",
        aws_access_key_id=key[0],
        aws_secret_access_key=secret or key[1],
        config=Config(retries={"max_attempts": 0}),
    )


async def next_event(
    settings: CairnSettings, event_type: str, match: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    async def find() -> dict[str, Any]:
        async for tailed in tail_events(settings, [event_type], from_beginning=True):
            if isinstance(tailed.event, dict):
                continue
            data = tailed.event.data.model_dump(mode="json")
            if match(data):
                return data
        raise AssertionError("the tail ended")

    return await asyncio.wait_for(find(), WAIT_S)


async def test_csv_and_json_invocations_answer_the_offline_numbers(
    http: httpx.AsyncClient, store: ObjectStore, packages: dict[str, str]
):
    expected = offline(store, packages["a"])
    csv = await http.post(
        f"/endpoints/{ENDPOINT}/invocations",
        content=CSV_BODY,
        headers={"Content-Type": "text/csv", "X-Amzn-SageMaker-Custom-Attributes": "trace=1"},
    )
    assert csv.status_code == 200, csv.text
    assert csv.headers["x-amzn-invoked-production-variant"] == "blue"
    assert csv.headers["x-amzn-sagemaker-custom-attributes"] == "trace=1"
    assert [float(line) for line in csv.text.splitlines()] == expected

    as_json = await http.post(f"/endpoints/{ENDPOINT}/invocations", json={"instances": ROWS})
    assert [p["probability"] for p in as_json.json()["predictions"]] == expected

    container = await http.post(
        "/invocations", content=CSV_BODY, headers={"Content-Type": "text/csv"}
    )
    assert [float(line) for line in container.text.splitlines()] == expected
    assert (await http.get("/ping")).status_code == 200


async def test_v2_infer_answers_the_same_numbers(
    http: httpx.AsyncClient, settings: CairnSettings, store: ObjectStore, packages: dict[str, str]
):
    expected = offline(store, packages["a"])
    assert (await http.get("/v2/health/ready")).json() == {"ready": True}
    metadata = (await http.get(f"/v2/models/{ENDPOINT}")).json()
    assert [tensor["name"] for tensor in metadata["inputs"]] == ["income", "age", "debt", "region"]
    columns = list(zip(*ROWS, strict=True))
    request = {
        "id": "req-7",
        "inputs": [
            {"name": "income", "shape": [3], "datatype": "FP32", "data": list(columns[0])},
            {"name": "age", "shape": [3], "datatype": "INT64", "data": list(columns[1])},
            {"name": "debt", "shape": [3], "datatype": "FP32", "data": list(columns[2])},
            {"name": "region", "shape": [3], "datatype": "BYTES", "data": list(columns[3])},
        ],
    }
    response = await http.post(f"/v2/models/{ENDPOINT}/versions/blue/infer", json=request)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model_name"], body["model_version"], body["id"]) == (ENDPOINT, "blue", "req-7")
    (output,) = body["outputs"]
    assert (output["name"], output["shape"], output["datatype"]) == ("probability", [3], "FP32")
    assert output["data"] == expected

    bad = await http.post(
        f"/v2/models/{ENDPOINT}/infer",
        json={"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0]}]},
    )
    assert bad.status_code == 400 and "needs 2 values" in bad.json()["error"]
    not_this_key = await http.post("/v2/models/nope/infer", json=request)
    assert not_this_key.status_code == 403  # the key invokes only ENDPOINT
    any_endpoint = scoped_headers(store, settings, ["invoke"], name="any-endpoint")
    missing = await http.post("/v2/models/nope/infer", json=request, headers=any_endpoint)
    assert missing.status_code == 404 and "error" in missing.json()


def test_boto3_sagemaker_runtime_signs_with_a_cairn_key(
    base_url: str, key: tuple[str, str], store: ObjectStore, packages: dict[str, str]
):
    client = runtime_client(base_url, key)
    answer = client.invoke_endpoint(
        EndpointName=ENDPOINT,
        Body=CSV_BODY.encode(),
        ContentType="text/csv",
        Accept="application/json",
        InferenceId="inference-42",
    )
    assert answer["InvokedProductionVariant"] == "blue"
    predictions = json.loads(answer["Body"].read())["predictions"]
    assert [p["probability"] for p in predictions] == offline(store, packages["a"])

    with pytest.raises(ClientError) as refused:
        runtime_client(base_url, key, secret="not-the-secret").invoke_endpoint(
            EndpointName=ENDPOINT, Body=CSV_BODY.encode(), ContentType="text/csv"
        )
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


async def test_missing_or_wrong_credentials_and_bad_requests_are_4xx_json(
    base_url: str, http: httpx.AsyncClient, key: tuple[str, str]
):
    url = f"{base_url}/endpoints/{ENDPOINT}/invocations"
    csv = {"Content-Type": "text/csv"}
    async with httpx.AsyncClient() as anonymous:
        missing = await anonymous.post(url, content=CSV_BODY, headers=csv)
        wrong = await anonymous.post(
            url, content=CSV_BODY, headers={**csv, "Authorization": "Bearer CKIAAAAAAAAAAAAAAAAA:x"}
        )
        bare_secret = await anonymous.post(
            url, content=CSV_BODY, headers={**csv, "Authorization": f"Bearer {key[1]}"}
        )
        v2_missing = await anonymous.get(f"{base_url}/v2/models/{ENDPOINT}")
    assert missing.status_code == 401 and "credentials" in missing.json()["error"]
    assert wrong.status_code == 403
    assert bare_secret.status_code == 403  # only key_id:secret is a Bearer token
    assert v2_missing.status_code == 401

    cases = [
        ("/endpoints/credit/invocations", b"1,2,3", {}, 424, "takes 4"),  # SageMaker's ModelError
        ("/endpoints/credit/invocations", b"1,x,3,north", {}, 424, "not a number"),
        ("/endpoints/nope/invocations", b"1,2,3,north", {}, 403, "may not invoke"),
        (
            "/endpoints/credit/invocations",
            b"1,2,3,north",
            {"X-Amzn-SageMaker-Target-Variant": "purple"},
            400,
            "purple",
        ),
        ("/endpoints/credit/invocations", b"1" * (7 * 1024 * 1024), {}, 413, "exceeds"),
    ]
    for path, body, headers, status, reason in cases:
        response = await http.post(path, content=body, headers={**csv, **headers})
        assert response.status_code == status, (path, response.text)
        assert reason in response.json()["error"]


async def test_capture_is_written_in_sagemaker_layout_and_announced(
    http: httpx.AsyncClient, settings: CairnSettings, store: ObjectStore
):
    inference_id = f"capture-{uuid.uuid4().hex[:8]}"
    response = await http.post(
        f"/endpoints/{ENDPOINT}/invocations",
        content=CSV_BODY,
        headers={"Content-Type": "text/csv", "X-Amzn-SageMaker-Inference-Id": inference_id},
    )
    assert response.status_code == 200

    event = await next_event(
        settings, "InferenceCaptured", lambda data: data["variant_name"] == "blue"
    )
    hour = datetime.now(UTC).strftime("%Y/%m/%d/%H")
    prefix = f"capture/{ENDPOINT}/blue/"
    assert event["capture_uri"].startswith(prefix) and event["capture_uri"].endswith(".jsonl")

    deadline = time.monotonic() + WAIT_S
    found: dict[str, Any] | None = None
    while found is None and time.monotonic() < deadline:
        for info in store.list(prefix):
            assert hour[:10] in info.key  # yyyy/mm/dd/hh folders
            for line in store.get_bytes(info.key).decode().splitlines():
                record = json.loads(line)
                if record["eventMetadata"].get("inferenceId") == inference_id:
                    found = record
        await asyncio.sleep(0.1)
    assert found is not None, "the captured request never reached the store"
    assert found["captureData"]["endpointInput"]["data"] == CSV_BODY
    assert found["captureData"]["endpointOutput"]["data"] == response.text


async def test_endpoint_update_applies_hot_without_failed_requests(
    http: httpx.AsyncClient, settings: CairnSettings, store: ObjectStore, packages: dict[str, str]
):
    expected_b = offline(store, packages["b"])
    failures: list[str] = []
    variants_seen: set[str] = set()
    stop = asyncio.Event()
    green_served = asyncio.Event()

    async def traffic() -> None:
        while not stop.is_set():
            response = await http.post(
                f"/endpoints/{ENDPOINT}/invocations",
                content=CSV_BODY,
                headers={"Content-Type": "text/csv"},
            )
            if response.status_code != 200:
                failures.append(response.text)
            else:
                variant = response.headers["x-amzn-invoked-production-variant"]
                variants_seen.add(variant)
                if variant == "green":
                    green_served.set()

    clients = [asyncio.create_task(traffic()) for _ in range(4)]
    async with EventProducer(settings, source="deployer") as producer:
        await producer.publish(
            revision(
                2,
                [("blue", packages["a"], 0.0), ("green", packages["b"], 1.0)],
                shadow_uri=packages["a"],
            )
        )
    try:
        await asyncio.wait_for(green_served.wait(), WAIT_S)
        await asyncio.sleep(0.2)  # traffic keeps flowing on the new revision
    finally:
        stop.set()
    await asyncio.gather(*clients)
    assert failures == []
    assert "green" in variants_seen

    green = await http.post(
        f"/endpoints/{ENDPOINT}/invocations", content=CSV_BODY, headers={"Content-Type": "text/csv"}
    )
    assert green.headers["x-amzn-invoked-production-variant"] == "green"
    assert [float(line) for line in green.text.splitlines()] == expected_b
    blue = await http.post(
        f"/endpoints/{ENDPOINT}/invocations",
        content=CSV_BODY,
        headers={"Content-Type": "text/csv", "X-Amzn-SageMaker-Target-Variant": "blue"},
    )
    assert blue.headers["x-amzn-invoked-production-variant"] == "blue"

    report = await next_event(
        settings,
        "EndpointMetricsReported",
        lambda data: any(v["variant_name"] == "green" for v in data["variants"]),
    )
    green_traffic = next(v for v in report["variants"] if v["variant_name"] == "green")
    assert green_traffic["requests"] >= 1 and green_traffic["errors"] == 0
    assert green_traffic["p99_latency_ms"] >= green_traffic["p50_latency_ms"] > 0
    # The shadow saw copies of the traffic; its answers were captured, never returned.
    shadow = await next_event(
        settings, "InferenceCaptured", lambda data: data["variant_name"] == "shadow"
    )
    assert shadow["capture_uri"].startswith(f"capture/{ENDPOINT}/shadow/")
    assert "shadow" not in variants_seen


async def test_target_model_picks_only_the_endpoints_packages_and_explanations_add_up(
    http: httpx.AsyncClient, store: ObjectStore, packages: dict[str, str]
):
    response = await http.post(
        f"/endpoints/{ENDPOINT}/invocations",
        json={"instances": ROWS},
        headers={
            "X-Amzn-SageMaker-Target-Model": "job-b",
            "X-Amzn-SageMaker-Target-Variant": "blue",
            "X-Amzn-SageMaker-Enable-Explanations": "`true`",
        },
    )
    assert response.status_code == 200, response.text
    document = response.json()
    expected = offline(store, packages["b"])
    assert [p["probability"] for p in document["predictions"]] == expected
    for probability, explanation in zip(expected, document["explanations"], strict=True):
        margin = sum(explanation["feature_contributions"].values()) + explanation["bias"]
        assert 1 / (1 + math.exp(-margin)) == pytest.approx(probability, abs=1e-5)
    for undeclared in ("job-none", "job-c", "models/job-c/manifest.json", "../platform/keys"):
        refused = await http.post(
            f"/endpoints/{ENDPOINT}/invocations",
            content=CSV_BODY,
            headers={"Content-Type": "text/csv", "X-Amzn-SageMaker-Target-Model": undeclared},
        )
        assert refused.status_code == 404, (undeclared, refused.text)
        assert "serves no model" in refused.json()["error"]
    still = await http.post(
        f"/endpoints/{ENDPOINT}/invocations", content=CSV_BODY, headers={"Content-Type": "text/csv"}
    )
    assert still.status_code == 200


async def test_an_unreadable_endpoint_document_is_skipped_and_keys_are_scoped(
    base_url: str, settings: CairnSettings, store: ObjectStore
):
    reader = scoped_headers(store, settings, ["read"], name="reader")
    elsewhere = scoped_headers(store, settings, ["invoke"], name="other", endpoints=["other"])
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        listed = await client.get("/endpoints", headers=reader)
        not_allowed = await client.post(
            f"/endpoints/{ENDPOINT}/invocations",
            content=CSV_BODY,
            headers={**elsewhere, "Content-Type": "text/csv"},
        )
        not_allowed_v2 = await client.get(f"/v2/models/{ENDPOINT}", headers=elsewhere)
        read_only_invoke = await client.post(
            f"/endpoints/{ENDPOINT}/invocations",
            content=CSV_BODY,
            headers={**reader, "Content-Type": "text/csv"},
        )
    assert listed.status_code == 200, listed.text
    assert [endpoint["endpoint_name"] for endpoint in listed.json()] == [ENDPOINT]
    assert not_allowed.status_code == 403 and ENDPOINT in not_allowed.json()["error"]
    assert not_allowed_v2.status_code == 403
    assert read_only_invoke.status_code == 403
