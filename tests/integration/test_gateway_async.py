"""InvokeEndpointAsync end to end: boto3 unchanged -> gateway -> Kafka -> async worker -> store.

A gateway in role `serve` and an async worker in role `worker` run as real uvicorn servers on
the session's Tansu broker and moto S3 server. boto3's `invoke_endpoint_async` (SigV4 with a
Cairn key) gets its 202; the answer lands at the output location with the bytes the synchronous
invocation answers; failures land at the failure location; a redelivered request is answered
and announced once.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from cairn.auth.sealing import secret_box
from cairn.auth.signing import SERVICE_KEY_PREFIX
from cairn.bus.broker import kafka_client_options
from cairn.bus.client import EventProducer
from cairn.bus.lag import existing_partitions, fetch_high_watermarks
from cairn.bus.ledger import ProcessedLedger
from cairn.bus.publish import Signer
from cairn.contracts import decode_envelope, spec_for
from cairn.contracts.async_events import AsyncInferenceRequested
from cairn.contracts.state import EndpointStateView, state_spec
from cairn.settings import CairnSettings
from cairn.store import ObjectStore, open_store
from cairn_cli import app
from cairn_sdk import Client
from typer.testing import CliRunner

from services.gateway.app import create_service
from services.gateway.config import GatewaySettings
from services.gateway.pools import ASYNC_GROUP
from tests.integration.test_gateway_http import revision, runtime_client
from tests.support.auth import auth_settings, token_for
from tests.support.http_server import served_in_thread
from tests.unit.test_gateway_payloads import ROWS, make_package

pytestmark = pytest.mark.integration

WAIT_S = 90.0  # a hang guard: the async group's first join can take tens of seconds on 2 busy cores
ENDPOINT = "credit-async"
CSV_BODY = "\n".join(",".join(str(cell) for cell in row) for row in ROWS).encode()
ASYNC_CONFIG = {
    "client_config": {"max_concurrent_invocations_per_instance": 1},
    "output_config": {"s3_output_path": "outputs/answers/"},
}


@pytest.fixture(scope="module")
def settings(
    kafka_bootstrap: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> CairnSettings:
    return auth_settings(
        home=tmp_path_factory.mktemp("gateway-async-home"),
        kafka_bootstrap_servers=kafka_bootstrap,
        store_url=f"s3://async-{uuid.uuid4().hex[:12]}",
        s3_endpoint=s3_endpoint,
        s3_access_key="cairn-test",
        s3_secret_key="cairn-test-secret",
        bus_session_timeout_ms=1000,
        bus_heartbeat_interval_ms=100,
        bus_max_retries=1,
        bus_retry_backoff_s=0.05,
        bus_retry_backoff_max_s=0.2,
    )


@pytest.fixture(scope="module")
def store(settings: CairnSettings) -> ObjectStore:
    """One deployed model with an AsyncInferenceConfig, and the requests' input objects."""
    store = open_store(settings=settings)
    uri = make_package(store, "models/job-async/", seed=3)
    state = revision(1, [("blue", uri, 1.0)]).model_copy(update={"endpoint_name": ENDPOINT})
    document = {**state.model_dump(mode="json"), "async_inference_config": ASYNC_CONFIG}
    store.put_bytes(state_spec(EndpointStateView).key(ENDPOINT), json.dumps(document).encode())
    store.put_bytes("data/async/rows.csv", CSV_BODY, content_type="text/csv")
    store.put_bytes("data/async/short.csv", b"1,2\n", content_type="text/csv")
    return store


@pytest.fixture(scope="module")
def base_url(settings: CairnSettings, store: ObjectStore) -> Iterator[str]:
    """The gateway (serving, queueing) and one async worker (two consumers) of the same store."""
    gateway = create_service(settings, store, GatewaySettings(role="serve", capture_sample_rate=0))
    worker = create_service(settings, store, GatewaySettings(role="worker", async_concurrency=2))
    with (
        served_in_thread(worker.asgi, "the async worker", timeout_s=WAIT_S),
        served_in_thread(gateway.asgi, "the gateway", timeout_s=WAIT_S) as url,
    ):
        yield url


@pytest.fixture(scope="module")
def client(base_url: str, settings: CairnSettings, store: ObjectStore) -> Any:
    token = token_for(store, settings, ["invoke"], name="async", endpoints=[ENDPOINT])
    key_id, _, secret = token.partition(":")
    return runtime_client(base_url, (key_id, secret))


def key_of(location: str, store: ObjectStore) -> str:
    root = store.url.rstrip("/") + "/"
    assert location.startswith(root), location
    return location[len(root) :]


async def stored(store: ObjectStore, key: str) -> bytes:
    """The object once a worker has written it."""
    deadline = time.monotonic() + WAIT_S
    while not await asyncio.to_thread(store.exists, key):
        assert time.monotonic() < deadline, f"nothing was written at {key}"
        await asyncio.sleep(0.1)
    return await asyncio.to_thread(store.get_bytes, key)


async def announced(settings: CairnSettings, event_type: str) -> list[dict[str, Any]]:
    """Every event of the type in the log, read up to its current end."""
    topic = spec_for(event_type).topic
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings, client_id="async-test"),
        group_id=None,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        partitions = await existing_partitions(consumer, [topic])
        consumer.assign(partitions)
        ends = await fetch_high_watermarks(consumer, partitions)
        await consumer.seek_to_beginning(*partitions)
        found: list[dict[str, Any]] = []
        for partition in partitions:
            while await consumer.position(partition) < ends[partition]:
                records = await consumer.getmany(partition, timeout_ms=1000)
                for record in records.get(partition, []):
                    found.append(decode_envelope(record.value).data.model_dump(mode="json"))
        return found
    finally:
        await consumer.stop()


async def announcement(settings: CairnSettings, event_type: str, inference_id: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while True:
        matching = [
            e for e in await announced(settings, event_type) if e["inference_id"] == inference_id
        ]
        if matching:
            return matching
        assert time.monotonic() < deadline, f"no {event_type} for {inference_id}"
        await asyncio.sleep(0.2)


async def test_boto3_invoke_endpoint_async_lands_the_sync_answer_at_the_output_location(
    client: Any, store: ObjectStore, settings: CairnSettings
):
    sync = client.invoke_endpoint(EndpointName=ENDPOINT, Body=CSV_BODY, ContentType="text/csv")
    expected = sync["Body"].read()
    inference_id = f"order-{uuid.uuid4().hex[:8]}"
    answer = client.invoke_endpoint_async(
        EndpointName=ENDPOINT,
        InputLocation=store.uri("data/async/rows.csv"),
        ContentType="text/csv",
        InferenceId=inference_id,
    )
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert answer["InferenceId"] == inference_id
    assert answer["OutputLocation"] == store.uri(f"outputs/answers/{inference_id}.out")
    assert answer["FailureLocation"] == store.uri(
        f"outputs/async/{ENDPOINT}/failures/{inference_id}-error.out"
    )
    body = await stored(store, key_of(answer["OutputLocation"], store))
    assert body == expected
    assert [float(line) for line in body.splitlines()] == [
        float(line) for line in expected.splitlines()
    ]
    [completed] = await announcement(settings, "AsyncInferenceCompleted", inference_id)
    assert completed["output_location"] == answer["OutputLocation"]
    assert completed["variant_name"] == "blue"

    inline = client.invoke_endpoint_async(
        EndpointName=ENDPOINT, Body=CSV_BODY, ContentType="text/csv", Accept="application/json"
    )
    document = json.loads(await stored(store, key_of(inline["OutputLocation"], store)))
    assert [p["probability"] for p in document["predictions"]] == [
        float(line) for line in expected.splitlines()
    ]


async def test_bad_input_is_refused_and_a_model_error_is_a_failure_object(
    client: Any, store: ObjectStore, settings: CairnSettings
):
    with pytest.raises(client.exceptions.ValidationError) as outside:
        client.invoke_endpoint_async(
            EndpointName=ENDPOINT, InputLocation=store.uri("platform/keys/any.json")
        )
    message = outside.value.response["Error"]["Message"]
    assert "X-Amzn-SageMaker-InputLocation" in message and "outside the user namespaces" in message
    with pytest.raises(client.exceptions.ValidationError, match="names no object"):
        client.invoke_endpoint_async(
            EndpointName=ENDPOINT, InputLocation=store.uri("data/async/missing.csv")
        )
    any_key = token_for(store, settings, ["invoke"], name="async-any").partition(":")
    anywhere = runtime_client(client.meta.endpoint_url, (any_key[0], any_key[2]))
    with pytest.raises(anywhere.exceptions.ValidationError) as unknown:
        anywhere.invoke_endpoint_async(EndpointName="nope", InputLocation="data/async/rows.csv")
    assert unknown.value.response["Error"]["Message"] == "Endpoint nope of account cairn not found."

    failing = client.invoke_endpoint_async(
        EndpointName=ENDPOINT,
        InputLocation=store.uri("data/async/short.csv"),
        ContentType="text/csv",
    )
    reason = json.loads(await stored(store, key_of(failing["FailureLocation"], store)))
    assert reason["code"] == "model_error" and "takes 4" in reason["error"]
    [failed] = await announcement(settings, "AsyncInferenceFailed", failing["InferenceId"])
    assert failed["failure_location"] == failing["FailureLocation"]
    assert failed["failure_code"] == "model_error" and "takes 4" in failed["reason"]
    assert not store.exists(key_of(failing["OutputLocation"], store))


async def test_a_redelivered_request_is_answered_and_announced_once(
    client: Any, store: ObjectStore, settings: CairnSettings
):
    inference_id = f"again-{uuid.uuid4().hex[:8]}"
    answer = client.invoke_endpoint_async(
        EndpointName=ENDPOINT,
        InputLocation=store.uri("data/async/rows.csv"),
        ContentType="text/csv",
        InferenceId=inference_id,
    )
    output_key = key_of(answer["OutputLocation"], store)
    first = await stored(store, output_key)
    await announcement(settings, "AsyncInferenceCompleted", inference_id)

    # The same request once more, as the gateway would send it after a crash (signed as it).
    gateway_key = Signer(
        SERVICE_KEY_PREFIX + "gateway", secret_box(settings).service_secret("gateway")
    )
    request = AsyncInferenceRequested(
        inference_id=inference_id,
        endpoint_name=ENDPOINT,
        input_key="data/async/rows.csv",
        output_key=output_key,
        failure_key=key_of(answer["FailureLocation"], store),
        content_type="text/csv",
        received_at=datetime.now(UTC),
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    async with EventProducer(settings, source="gateway", signer=gateway_key) as producer:
        again = await producer.publish(request)
    ledger = ProcessedLedger(store, ASYNC_GROUP)
    deadline = time.monotonic() + WAIT_S
    while not await ledger.seen(again.event_id):  # the sentinel: the worker settled it
        assert time.monotonic() < deadline, "the redelivered request was never handled"
        await asyncio.sleep(0.1)
    completed = await announced(settings, "AsyncInferenceCompleted")
    assert [e["inference_id"] for e in completed].count(inference_id) == 1
    assert store.get_bytes(output_key) == first


async def test_the_sdk_and_cairn_invoke_async_queue_requests_too(
    base_url: str, store: ObjectStore, settings: CairnSettings, tmp_path: Path
):
    token = token_for(store, settings, ["invoke"], name="async-sdk", endpoints=[ENDPOINT])
    with Client(gateway_url=base_url, api_key=token, home=tmp_path) as sdk:
        expected = sdk.invoke(ENDPOINT, CSV_BODY).raw
        queued = sdk.invoke_async(ENDPOINT, input_location="data/async/rows.csv")
    assert await stored(store, key_of(queued.output_location, store)) == expected

    common = ["--target", base_url, "--home", str(tmp_path)]
    invoked = CliRunner().invoke(
        app,
        ["invoke", ENDPOINT, "--async", "--body", CSV_BODY.decode(), *common],
        env={"CAIRN_API_KEY": token},
    )
    assert invoked.exit_code == 0, invoked.output
    output_location = json.loads(invoked.stdout)["output_location"]
    assert await stored(store, key_of(output_location, store)) == expected
