"""InvokeEndpointAsync without a broker: header and location rules, the 202 front, the worker.

The front is served in-process over ASGI (its published events recorded), the worker runs on an
in-memory store; the real broker, S3 server and boto3 are in the integration test.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cairn.contracts.async_events import (
    AsyncInferenceCompleted,
    AsyncInferenceConfig,
    AsyncInferenceFailed,
    AsyncInferenceOutputConfig,
    AsyncInferenceRequested,
    async_prefixes,
    location_key,
    location_uri,
)
from cairn.contracts.envelope import Envelope
from cairn.contracts.events import DeploymentRequested, VariantSpec
from cairn.contracts.state import EndpointStateView
from cairn.errors import InvalidInput
from cairn.inference import format_response, parse_body
from cairn.service import Service
from cairn.store import InMemoryObjectStore, LocalObjectStore
from cairn_cli import app as cli_app
from pydantic import BaseModel, ValidationError
from typer.testing import CliRunner

from services.autoscaler.domain import desired_replicas
from services.autoscaler.pools import WorkerPool
from services.deployer import domain as deployer_domain
from services.deployer.routes import CreateEndpointBody
from services.deployer.routes import _request as deployer_request
from services.gateway.app import create_service
from services.gateway.async_requests import (
    check_input,
    object_name,
    parse_headers,
    request_keys,
)
from services.gateway.async_routes import AsyncInvocations
from services.gateway.async_worker import AsyncWorker, EndpointSlots, announced_key
from services.gateway.config import GatewaySettings
from services.gateway.gateway import Gateway
from services.gateway.handlers import GatewayHandlers
from tests.support.auth import auth_settings, token_for
from tests.unit.test_deployer_domain import MODELS, T0
from tests.unit.test_gateway_auth import ENDPOINT, endpoint_document
from tests.unit.test_gateway_payloads import ROWS, make_package

BASE = "http://gateway.test"
ASYNC = f"/endpoints/{ENDPOINT}/async-invocations"
CSV_BODY = "\n".join(",".join(str(cell) for cell in row) for row in ROWS).encode()
LOCATION = "x-amzn-sagemaker-inputlocation"


def new_id() -> str:
    return "generated-id"


# Header and location rules --------------------------------------------------------------------


def test_headers_default_to_sagemakers_and_name_the_header_they_refuse():
    request = parse_headers({LOCATION: "s3://cairn/data/in.csv"}, new_id)
    assert (request.inference_id, request.request_ttl_s, request.invocation_timeout_s) == (
        "generated-id", 21600, 900,
    )  # fmt: skip
    assert request.output_extension == "" and request.filename is None

    refused = {
        "x-amzn-sagemaker-requestttlseconds": ("59", "RequestTTLSeconds"),
        "x-amzn-sagemaker-invocationtimeoutseconds": ("soon", "InvocationTimeoutSeconds"),
        "x-amzn-sagemaker-inference-id": (" leading-space", "Inference-Id"),
        "x-amzn-sagemaker-s3outputpathextension": ("../escape", "S3OutputPathExtension"),
        "x-amzn-sagemaker-filename": ("a.b.c", "Filename"),
    }
    for header, (value, named) in refused.items():
        with pytest.raises(InvalidInput, match=named):
            parse_headers({header: value}, new_id)
    with pytest.raises(InvalidInput, match="Inference-Id"):
        parse_headers({"x-amzn-sagemaker-inference-id": "x" * 65}, new_id)


def test_exactly_one_input_and_keys_named_after_the_inference_id_or_filename():
    plain = parse_headers({}, new_id)
    with pytest.raises(InvalidInput, match="give the input"):
        check_input(plain, 0)
    located = parse_headers({LOCATION: "data/in.csv"}, new_id)
    with pytest.raises(InvalidInput, match="not both"):
        check_input(located, 10)
    check_input(located, 0)
    check_input(plain, 10)

    keys = request_keys(located, "data/in.csv", "outputs/async/e/", "outputs/async/e/failures/")
    assert keys.output_key == "outputs/async/e/generated-id.out"
    assert keys.failure_key == "outputs/async/e/failures/generated-id-error.out"
    named = parse_headers(
        {
            "x-amzn-sagemaker-filename": "result.json",
            "x-amzn-sagemaker-s3outputpathextension": "/day/1/",
        },
        new_id,
    )
    keys = request_keys(named, "data/in.csv", "outputs/a/", "outputs/f/")
    assert (keys.output_key, keys.failure_key) == (
        "outputs/a/day/1/result.json", "outputs/f/day/1/result.json-error.out",
    )  # fmt: skip
    # An inference id that is not a safe file name is hashed: stable, never a path.
    assert object_name("a/../b c") == object_name("a/../b c")
    assert "/" not in object_name("a/../b c") and len(object_name("a/../b c")) == 32
    assert object_name("order-17.v2") == "order-17.v2"


def test_locations_in_the_embedded_store_answer_to_the_bucket_cairn(tmp_path: Path):
    memory = InMemoryObjectStore()
    assert location_key("data/in.csv", field="f", store=memory) == "data/in.csv"
    assert location_key("s3://cairn/uploads/x.csv", field="f", store=memory) == "uploads/x.csv"
    assert location_uri("outputs/async/e/1.out", memory) == "s3://cairn/outputs/async/e/1.out"
    local = LocalObjectStore(tmp_path / "store")
    assert location_key(local.uri("data/x.csv"), field="f", store=local) == "data/x.csv"
    refused = {
        "s3://my-bucket/data/x.csv": "not in this platform's object store",
        "https://example.com/data/x.csv": "not in this platform's object store",
        "platform/keys/k.json": "outside the user namespaces",
        "s3://cairn/platform/keys/k.json": "outside the user namespaces",
        "data/../platform/keys/k.json": "not a valid store location",
        "gateway/async/announced/x.json": "outside the user namespaces",
    }
    for location, reason in refused.items():
        with pytest.raises(InvalidInput, match=reason) as raised:
            location_key(location, field="X-Amzn-SageMaker-InputLocation", store=memory)
        assert "X-Amzn-SageMaker-InputLocation" in raised.value.message


def test_async_config_paths_default_per_endpoint_and_bare_keys_are_checked_on_deploy():
    store = InMemoryObjectStore()
    assert async_prefixes("credit", None, store) == (
        "outputs/async/credit/", "outputs/async/credit/failures/",
    )  # fmt: skip
    config = AsyncInferenceConfig(
        output_config=AsyncInferenceOutputConfig(
            s3_output_path="s3://cairn/outputs/answers", s3_failure_path="outputs/errors/"
        )
    )
    assert async_prefixes("credit", config, store) == ("outputs/answers/", "outputs/errors/")
    with pytest.raises(ValidationError, match="outside the user namespaces"):
        AsyncInferenceOutputConfig(s3_output_path="gateway/async/")
    with pytest.raises(InvalidInput, match="s3_output_path"):
        bad = AsyncInferenceOutputConfig(s3_output_path="s3://elsewhere/outputs/")
        async_prefixes("credit", AsyncInferenceConfig(output_config=bad), store)


def test_the_deployers_endpoint_document_carries_the_async_config_to_the_gateway():
    config = AsyncInferenceConfig.model_validate(
        {"client_config": {"max_concurrent_invocations_per_instance": 3}}
    )
    variant = VariantSpec(variant_name="AllTraffic", model_package_group="credit", model_version=1)
    request = DeploymentRequested(
        endpoint_name="live", production_variants=[variant], async_inference_config=config
    )
    body = CreateEndpointBody.model_validate(
        {
            "endpoint_name": "live",
            "production_variants": [variant.model_dump()],
            "async_inference_config": config.model_dump(),
        }
    )
    assert deployer_request("live", "create", body) == request  # the HTTP API takes it too
    doc = deployer_domain.create_endpoint(None, request, MODELS, T0)
    view = EndpointStateView.model_validate_json(doc.model_dump_json())
    assert view.async_inference_config == config
    plain = DeploymentRequested(
        endpoint_name="live", action="update", production_variants=[variant]
    )
    updated = deployer_domain.update_endpoint(doc, plain, MODELS, T0)
    assert updated.revision == 2
    view = EndpointStateView.model_validate_json(updated.model_dump_json())
    assert view.async_inference_config is None


# The 202 front --------------------------------------------------------------------------------


class Published:
    def __init__(self) -> None:
        self.events: list[BaseModel] = []

    async def __call__(self, data: BaseModel, cause: Any = None, correlation_id: Any = None) -> Any:
        self.events.append(data)


@pytest.fixture(scope="module")
def store() -> InMemoryObjectStore:
    store = InMemoryObjectStore()
    deployed = make_package(store, "models/job-a/", seed=1)
    store.put_bytes(f"deployer/endpoints/{ENDPOINT}.json", endpoint_document(deployed))
    store.put_bytes("data/requests/in.csv", CSV_BODY, content_type="text/csv")
    return store


@pytest.fixture
async def served(
    tmp_path: Path, store: InMemoryObjectStore
) -> AsyncIterator[tuple[Service, Published, httpx.AsyncClient]]:
    service = create_service(auth_settings(home=tmp_path), store, GatewaySettings(role="serve"))
    gateway: Gateway = service.api.state.gateway
    handlers = GatewayHandlers(gateway, store, service.publish)
    await handlers.load_stored_endpoints()
    published = Published()
    front = AsyncInvocations(gateway, published)
    transport = httpx.ASGITransport(app=gateway.asgi(front.asgi(service.api)))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield service, published, client
    await handlers.close(gateway)


def bearer(service: Service, **kw: Any) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token_for(service.store, service.settings, ['invoke'], **kw)}"
    }


async def test_an_accepted_request_is_queued_and_answered_202_with_its_locations(
    served: tuple[Service, Published, httpx.AsyncClient],
):
    service, published, client = served
    headers = {
        **bearer(service),
        "X-Amzn-SageMaker-InputLocation": "s3://cairn/data/requests/in.csv",
        "X-Amzn-SageMaker-Content-Type": "text/csv",
        "X-Amzn-SageMaker-Inference-Id": "order-1",
    }
    answer = await client.post(ASYNC, headers=headers)
    assert answer.status_code == 202, answer.text
    expected = {
        "InferenceId": "order-1",
        "OutputLocation": f"s3://cairn/outputs/async/{ENDPOINT}/order-1.out",
        "FailureLocation": f"s3://cairn/outputs/async/{ENDPOINT}/failures/order-1-error.out",
    }
    assert answer.json() == expected
    assert answer.headers["x-amzn-sagemaker-outputlocation"] == expected["OutputLocation"]
    assert answer.headers["x-amzn-sagemaker-failurelocation"] == expected["FailureLocation"]
    [queued] = published.events
    assert isinstance(queued, AsyncInferenceRequested)
    assert (queued.input_key, queued.output_key, queued.content_type) == (
        "data/requests/in.csv", f"outputs/async/{ENDPOINT}/order-1.out", "text/csv",
    )  # fmt: skip
    assert queued.expires_at - queued.received_at == timedelta(hours=6)

    inline = await client.post(
        ASYNC, content=CSV_BODY, headers={**bearer(service), "Content-Type": "text/csv"}
    )
    assert inline.status_code == 202, inline.text
    stored = published.events[-1]
    assert isinstance(stored, AsyncInferenceRequested)
    assert stored.input_key.startswith(f"uploads/async/{ENDPOINT}/")
    assert service.store.get_bytes(stored.input_key) == CSV_BODY
    assert stored.content_type == "text/csv"


async def test_bad_async_requests_are_refused_like_invoke_endpoint_or_named(
    served: tuple[Service, Published, httpx.AsyncClient],
):
    service, published, client = served
    auth = bearer(service)

    def located(location: str) -> dict[str, str]:
        return {**auth, "X-Amzn-SageMaker-InputLocation": location}

    unknown = await client.post("/endpoints/nope/async-invocations", headers=located("data/x"))
    assert unknown.status_code == 404
    assert unknown.headers["x-amzn-errortype"] == "ValidationError"
    assert unknown.json()["message"] == "Endpoint nope of account cairn not found."
    anonymous = await client.post(ASYNC, headers={LOCATION: "data/requests/in.csv"})
    assert anonymous.status_code == 401
    other = await client.post(
        ASYNC, headers={**bearer(service, endpoints=["other"]), LOCATION: "data/requests/in.csv"}
    )
    assert other.status_code == 403 and other.headers["x-amzn-errortype"] == "AccessDeniedException"
    for location, reason in {
        "platform/keys/x.json": "outside the user namespaces",
        "s3://cairn/data/../platform/keys/x.json": "not a valid store location",
        "s3://somebody-else/data/requests/in.csv": "not in this platform's object store",
        "data/requests/missing.csv": "names no object in the store",
    }.items():
        refused = await client.post(ASYNC, headers=located(location))
        assert refused.status_code == 400, (location, refused.text)
        assert reason in refused.json()["message"]
        assert "X-Amzn-SageMaker-InputLocation" in refused.json()["message"]
    both = await client.post(ASYNC, content=b"1,2", headers=located("data/requests/in.csv"))
    assert both.status_code == 400 and "not both" in both.json()["message"]
    too_big = await client.post(ASYNC, content=b"1" * 128_001, headers=auth)
    assert too_big.status_code == 413
    assert published.events == []


async def test_a_repeat_of_an_answered_request_is_not_queued_again(
    served: tuple[Service, Published, httpx.AsyncClient],
):
    service, published, client = served
    service.store.put_bytes(f"outputs/async/{ENDPOINT}/done-1.out", b"0.5\n")
    headers = {
        **bearer(service),
        LOCATION: "data/requests/in.csv",
        "X-Amzn-SageMaker-Inference-Id": "done-1",
    }
    answer = await client.post(ASYNC, headers=headers)
    assert answer.status_code == 202
    assert answer.json()["OutputLocation"].endswith(f"/{ENDPOINT}/done-1.out")
    assert published.events == []


async def test_a_request_that_cannot_be_queued_is_a_503_boto3_retries(
    served: tuple[Service, Published, httpx.AsyncClient],
):
    service, _, _ = served
    gateway: Gateway = service.api.state.gateway

    async def broker_down(data: BaseModel, cause: Any = None, correlation_id: Any = None) -> Any:
        raise ConnectionError("no broker")

    front = AsyncInvocations(gateway, broker_down)
    transport = httpx.ASGITransport(app=front.asgi(service.api))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        answer = await client.post(
            ASYNC, headers={**bearer(service), LOCATION: "data/requests/in.csv"}
        )
    assert answer.status_code == 503
    assert answer.headers["x-amzn-errortype"] == "ServiceUnavailable"


# The worker -----------------------------------------------------------------------------------


@pytest.fixture
def worker(tmp_path: Path, store: InMemoryObjectStore) -> tuple[AsyncWorker, Published]:
    service = create_service(auth_settings(home=tmp_path), store, GatewaySettings(role="worker"))
    gateway: Gateway = service.api.state.gateway
    published = Published()
    return AsyncWorker(store, gateway.cache, gateway.executor, published), published


def work(inference_id: str, **fields: Any) -> Envelope[AsyncInferenceRequested]:
    now = datetime.now(UTC)
    data = {
        "inference_id": inference_id,
        "endpoint_name": ENDPOINT,
        "input_key": "data/requests/in.csv",
        "output_key": f"outputs/async/{ENDPOINT}/{inference_id}.out",
        "failure_key": f"outputs/async/{ENDPOINT}/failures/{inference_id}-error.out",
        "content_type": "text/csv",
        "received_at": now,
        "expires_at": now + timedelta(hours=1),
    } | fields
    return Envelope[AsyncInferenceRequested](
        type="AsyncInferenceRequested",
        source="gateway",
        correlation_id=inference_id,
        data=AsyncInferenceRequested(**data),
    )


async def test_the_worker_answers_once_as_the_sync_path_would_and_announces_once(
    worker: tuple[AsyncWorker, Published], store: InMemoryObjectStore
):
    async_worker, published = worker
    request = work("w-1")
    await async_worker.on_request(request)
    [completed] = published.events
    assert isinstance(completed, AsyncInferenceCompleted)
    assert completed.output_location == f"s3://cairn/outputs/async/{ENDPOINT}/w-1.out"
    assert (completed.variant_name, completed.content_type) == ("blue", "text/csv")
    serving = await async_worker.cache.get("models/job-a/")
    model = serving.model
    expected, _ = format_response(
        model.predict(parse_body(model, "text/csv", CSV_BODY)), model.output_names, "text/csv"
    )
    assert store.get_bytes(request.data.output_key) == expected

    await async_worker.on_request(request)  # redelivered: answered and announced already
    assert len(published.events) == 1
    # A worker that died after storing the answer: the next delivery announces what is stored.
    store.delete(announced_key(request.data))
    await async_worker.on_request(request)
    assert len(published.events) == 2 and published.events[1] == completed
    assert store.get_bytes(request.data.output_key) == expected


async def test_failures_are_stored_with_their_reason_and_announced(
    worker: tuple[AsyncWorker, Published], store: InMemoryObjectStore
):
    async_worker, published = worker
    store.put_bytes("data/requests/short.csv", b"1,2\n")
    past = datetime.now(UTC) - timedelta(hours=2)
    cases = {
        "f-model": ({"input_key": "data/requests/short.csv"}, "model_error", "takes 4"),
        "f-input": ({"input_key": "data/requests/gone.csv"}, "input_not_found", "no longer"),
        "f-old": ({"received_at": past, "expires_at": past}, "expired", "RequestTTLSeconds"),
        "f-endpoint": ({"endpoint_name": "nope"}, "endpoint_not_found", "'nope'"),
        "f-type": ({"content_type": "image/png"}, "model_error", "image/png"),
    }
    for inference_id, (fields, code, reason) in cases.items():
        request = work(inference_id, **fields)
        await async_worker.on_request(request)
        failed = published.events[-1]
        assert isinstance(failed, AsyncInferenceFailed), inference_id
        assert (failed.failure_code, failed.inference_id) == (code, inference_id)
        assert reason in failed.reason
        stored = json.loads(store.get_bytes(request.data.failure_key))
        assert stored["code"] == code and reason in stored["error"]
        assert not store.exists(request.data.output_key)
    assert len(published.events) == len(cases)


async def test_max_concurrent_invocations_per_instance_bounds_one_endpoints_requests():
    slots = EndpointSlots()
    running, most = 0, 0

    async def invocation(endpoint: str, limit: int | None) -> None:
        nonlocal running, most
        async with slots.slot(endpoint, limit):
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.01)
            running -= 1

    await asyncio.gather(*(invocation("a", 2) for _ in range(6)))
    assert most == 2
    most = 0
    await asyncio.gather(*(invocation("b", None) for _ in range(6)))
    assert most == 6


def test_the_async_pool_is_declared_for_the_autoscaler_and_wakes_on_lag(tmp_path: Path):
    store = InMemoryObjectStore()
    declared = {
        role: create_service(auth_settings(home=tmp_path), store, GatewaySettings(role=role))
        for role in ("all", "serve", "worker")
    }
    pools = {role: service._pools for role, service in declared.items()}
    assert pools["worker"] == []  # a worker is a member, never the declarer
    [behind_servers] = pools["serve"]
    [with_member] = pools["all"]
    pool = WorkerPool.model_validate(behind_servers.model_dump()).clamped()
    assert pool.topics() == ["cairn.gateway.async-inference-requested"]
    assert (pool.min_replicas, pool.env) == (0, {"CAIRN_GATEWAY_ROLE": "worker"})
    assert desired_replicas(pool, lag=1).replicas == 1  # the first queued request starts one
    assert desired_replicas(pool, lag=0).replicas == 0  # an empty queue: back to zero
    # A gateway in role `all` runs requests itself: only a backlog starts workers.
    assert with_member.activation_lag_threshold > behind_servers.activation_lag_threshold


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--input-location", "data/x.csv"], "--input-location needs --async"),
        (["--async", "--body", "1", "--input-location", "data/x.csv"], "exactly one"),
        (["--async", "--body", "1", "--variant", "blue"], "--async takes no"),
    ],
)
def test_cairn_invoke_async_refuses_what_invoke_endpoint_async_cannot_take(
    args: list[str], named: str
):
    result = CliRunner().invoke(
        cli_app, ["invoke", "e", *args], env={"CAIRN_TARGET": "http://127.0.0.1:9"}
    )
    assert result.exit_code == 2, result.output
    assert named in " ".join(result.output.replace("│", " ").split())
