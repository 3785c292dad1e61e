"""Human review of live predictions on real parts: gateway and labeling over HTTP, Tansu, moto S3.

The gateway reads an endpoint's human loop from the store at start, evaluates it after each
answer and publishes HumanReviewRequested for low-confidence answers (and for a deterministic
sample of requests once the loop is changed hot). The labeling service queues them; a reviewer
claims and answers one, which becomes HumanReviewCompleted, GroundTruthRecorded keyed by the
inference id, and a new version of the review dataset. A redelivered request changes nothing, and
an answer stored by a service killed before it published goes out when the service starts again.

Each check waits for a sentinel (the last request's own review) instead of sleeping: reviews of
one endpoint share a partition, so everything sent before the sentinel has been seen by then.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import pytest
from cairn.artifacts import load_model
from cairn.bus import EventProducer, tail_events
from cairn.contracts.review_events import (
    HumanLoopConfig,
    HumanLoopConfigured,
    HumanLoopConfigView,
    HumanReviewRequested,
    Payload,
)
from cairn.contracts.state import EndpointStateView, state_spec, write_state
from cairn.service import Service
from cairn.settings import CairnSettings
from cairn.store import ObjectStore, open_store
from cairn_cli import app
from typer.testing import CliRunner

from services.gateway.app import create_service as create_gateway
from services.gateway.config import GatewaySettings
from services.gateway.human_loop import sample_draw, top_class_probability
from services.labeling.review import ReviewTask, new_task, rows_key
from services.labeling.review_routes import install_reviews
from tests.integration.test_gateway_http import revision
from tests.support.auth import auth_settings, scoped_headers, token_for
from tests.support.http_server import served_in_thread
from tests.unit.test_gateway_payloads import make_package

pytestmark = pytest.mark.integration

WAIT_S = 30.0
ENDPOINT = "scoring"
LABELS = ["0", "1"]


@pytest.fixture(scope="module")
def settings(
    kafka_bootstrap: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> CairnSettings:
    return auth_settings(
        home=tmp_path_factory.mktemp("review-home"),
        kafka_bootstrap_servers=kafka_bootstrap,
        store_url=f"s3://review-{uuid.uuid4().hex[:12]}",
        s3_endpoint=s3_endpoint,
        s3_access_key="cairn-test",
        s3_secret_key="cairn-test-secret",
        bus_session_timeout_ms=1000,
        bus_heartbeat_interval_ms=100,
    )


@pytest.fixture(scope="module")
def store(settings: CairnSettings) -> ObjectStore:
    return open_store(settings=settings)


def csv_rows(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    regions = ["north", "south", "east"]
    return [
        f"{rng.normal(50, 10):.3f},{int(rng.integers(18, 80))},{rng.normal(5, 2):.3f},"
        f"{regions[int(rng.integers(0, 3))]}"
        for _ in range(count)
    ]


@pytest.fixture(scope="module")
def model_uri(store: ObjectStore) -> str:
    """A model served by the endpoint, whose loop (stored first) reviews confidence < 0.8."""
    uri = make_package(store, "models/review/", seed=1)
    state = revision(1, [("blue", uri, 1.0)]).model_copy(update={"endpoint_name": ENDPOINT})
    document = {**state.model_dump(mode="json"), "rollout": {"phase": "done"}}
    store.put_bytes(state_spec(EndpointStateView).key(ENDPOINT), json.dumps(document).encode())
    config = HumanLoopConfig.model_validate(
        {
            "labels": LABELS,
            "activation_conditions": {
                "Conditions": [
                    {
                        "ConditionType": "ClassProbabilityBelow",
                        "ConditionParameters": {"Threshold": 0.8},
                    }
                ]
            },
        }
    )
    write_state(
        store, HumanLoopConfigView(endpoint_name=ENDPOINT, revision=1, config=config), ENDPOINT
    )
    return uri


@pytest.fixture(scope="module")
def gateway(
    settings: CairnSettings, store: ObjectStore, model_uri: str
) -> Iterator[tuple[str, Service]]:
    service = create_gateway(settings, store, GatewaySettings(capture_flush_s=0.3))
    with served_in_thread(service.asgi, "the gateway", timeout_s=WAIT_S) as url:
        yield url, service


@pytest.fixture(scope="module")
def labeling(settings: CairnSettings, store: ObjectStore) -> Iterator[str]:
    service = Service("labeling", settings=settings, store=store)
    install_reviews(service)
    with served_in_thread(service.asgi, "the labeling service", timeout_s=WAIT_S) as url:
        yield url


@pytest.fixture
async def invoke(
    gateway: tuple[str, Service], store: ObjectStore, settings: CairnSettings
) -> AsyncIterator[Callable[[str, str], Any]]:
    headers = scoped_headers(store, settings, ["invoke"], name="caller")
    async with httpx.AsyncClient(base_url=gateway[0], headers=headers, timeout=10) as client:

        async def call(body: str, inference_id: str) -> str:
            answer = await client.post(
                f"/endpoints/{ENDPOINT}/invocations",
                content=body,
                headers={"Content-Type": "text/csv", "X-Amzn-SageMaker-Inference-Id": inference_id},
            )
            assert answer.status_code == 200, answer.text
            return answer.text

        yield call


async def reviews_until(settings: CairnSettings, sentinel: str) -> dict[str, dict[str, Any]]:
    """Every review request of the endpoint by inference id, up to the sentinel's own."""
    seen: dict[str, dict[str, Any]] = {}

    async def collect() -> None:
        async for tailed in tail_events(settings, ["HumanReviewRequested"], from_beginning=True):
            if isinstance(tailed.event, dict):
                continue
            data = tailed.event.data.model_dump(mode="json")
            if data["endpoint_name"] == ENDPOINT and data["inference_id"]:
                seen.setdefault(data["inference_id"], data)
                if data["inference_id"] == sentinel:
                    return

    await asyncio.wait_for(collect(), WAIT_S)
    return seen


async def next_event(
    settings: CairnSettings, event_type: str, match: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    async def find() -> dict[str, Any]:
        async for tailed in tail_events(settings, [event_type], from_beginning=True):
            if not isinstance(tailed.event, dict):
                data = tailed.event.data.model_dump(mode="json")
                if match(data):
                    return data
        raise AssertionError("the tail ended")

    return await asyncio.wait_for(find(), WAIT_S)


async def test_low_confidence_answers_are_sent_to_review(
    invoke: Callable[[str, str], Any], settings: CairnSettings, store: ObjectStore, model_uri: str
):
    model = load_model(store, model_uri)
    rows = csv_rows(40, seed=7)
    confidence = [
        top_class_probability([float(p)])
        for p in model.predict(model.encode_rows([row.split(",") for row in rows])).tolist()
    ]
    expected = {f"low-{i}" for i, c in enumerate(confidence) if c < 0.8}
    assert 0 < len(expected) < len(rows), "the rows should straddle the threshold"
    for index, row in enumerate(rows):
        await invoke(row, f"low-{index}")
    sentinel = rows[int(np.argmin(confidence))]
    await invoke(sentinel, "low-sentinel")

    seen = await reviews_until(settings, "low-sentinel")
    reviewed = {key for key in seen if key.startswith("low-") and key != "low-sentinel"}
    assert reviewed == expected
    one = seen[min(expected)]
    assert one["reasons"] == ["ClassProbabilityBelow(0.8)"]
    assert one["input"]["data"] == rows[int(min(expected).split("-")[1])]
    assert one["labels"] == LABELS and one["review_dataset"] == f"{ENDPOINT}-reviews"


async def test_random_sampling_is_the_same_for_the_same_request(
    invoke: Callable[[str, str], Any], gateway: tuple[str, Service], settings: CairnSettings
):
    config = HumanLoopConfig(labels=LABELS, random_sampling_percentage=50)
    async with EventProducer(settings, source="deployer") as producer:
        await producer.publish(
            HumanLoopConfigured(endpoint_name=ENDPOINT, revision=2, config=config)
        )
    loop = gateway[1].api.state.gateway.human_loop
    await _until(lambda: loop.configs.get(ENDPOINT, (0,))[0] == 2)

    bodies = csv_rows(24, seed=11)
    for index, body in enumerate(bodies):
        await invoke(body, f"sample-{index}-a")
    for index, body in enumerate(bodies):
        await invoke(body, f"sample-{index}-b")
    sentinel = next(body for body in csv_rows(50, seed=12) if sample_draw(body.encode()) < 50)
    await invoke(sentinel, "sample-sentinel")

    seen = await reviews_until(settings, "sample-sentinel")
    sampled = {i for i, body in enumerate(bodies) if sample_draw(body.encode()) < 50}
    assert 0 < len(sampled) < len(bodies)
    for index in range(len(bodies)):
        first, second = f"sample-{index}-a" in seen, f"sample-{index}-b" in seen
        assert first == second == (index in sampled), index
    assert seen["sample-sentinel"]["reasons"] == ["RandomSamplingPercentage(50%)"]


async def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {condition}"
        await asyncio.sleep(0.05)


def review_request(inference_id: str | None, rows: str = "1.0,2,3.0,north") -> HumanReviewRequested:
    return HumanReviewRequested(
        review_id=str(uuid.uuid4()),
        endpoint_name=ENDPOINT,
        variant_name="blue",
        inference_id=inference_id,
        requested_at=datetime.now(UTC),
        reasons=["ClassProbabilityBelow(0.8)"],
        input=Payload(content_type="text/csv", data=rows),
        output=Payload(content_type="text/csv", data="0.61\n" * rows.count("\n") + "0.61\n"),
        labels=LABELS,
        review_dataset=f"{ENDPOINT}-reviews",
    )


async def wait_task(http: httpx.AsyncClient, review_id: str) -> dict[str, Any]:
    async def find() -> dict[str, Any]:
        while True:
            found = await http.get(f"/reviews/{review_id}")
            if found.status_code == 200:
                return dict(found.json())
            assert found.status_code == 404, found.text
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(find(), WAIT_S)


async def test_an_answered_review_becomes_ground_truth_and_dataset_rows(
    labeling: str, settings: CairnSettings, store: ObjectStore
):
    reviewer = scoped_headers(store, settings, ["label"], name="alice")
    other = scoped_headers(store, settings, ["label"], name="bob")
    reader = scoped_headers(store, settings, ["read"], name="reader")
    request = review_request("gt-1")
    async with EventProducer(settings, source="gateway") as producer:
        await producer.publish(request)
    async with httpx.AsyncClient(base_url=labeling, headers=reviewer, timeout=10) as http:
        task = await wait_task(http, request.review_id)
        assert task["status"] == "Pending" and task["row_count"] == 1
        listed = (await http.get("/reviews", params={"endpoint_name": ENDPOINT})).json()
        assert request.review_id in {item["review_id"] for item in listed}
        assert (await http.get("/reviews", headers=reader)).status_code == 403

        unclaimed = await http.post(f"/reviews/{request.review_id}/answer", json={"labels": ["1"]})
        assert unclaimed.status_code == 409, unclaimed.text
        claim = await http.post(f"/reviews/{request.review_id}/claim")
        assert claim.status_code == 200 and claim.json()["claimed_by"] == "alice"
        taken = await http.post(f"/reviews/{request.review_id}/claim", headers=other)
        assert taken.status_code == 409 and "alice" in taken.json()["error"]
        bad = await http.post(f"/reviews/{request.review_id}/answer", json={"labels": ["7"]})
        assert bad.status_code == 400 and "labels" in bad.json()["error"]
        missing = await http.post("/reviews/no-such-review/claim")
        assert missing.status_code == 404

        answer = await http.post(f"/reviews/{request.review_id}/answer", json={"labels": ["1"]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "Completed" and answer.json()["reviewer"] == "alice"

    truth = await next_event(settings, "GroundTruthRecorded", lambda d: "gt-1" in d["labels"])
    assert truth == {"endpoint_name": ENDPOINT, "labels": {"gt-1": 1}}
    completed = await next_event(
        settings, "HumanReviewCompleted", lambda d: d["review_id"] == request.review_id
    )
    assert completed["labels"] == ["1"] and completed["reviewer"] == "alice"
    registration = await next_event(
        settings,
        "DatasetRegistrationRequested",
        lambda d: d["dataset_name"] == f"{ENDPOINT}-reviews",
    )
    assert registration["format"] == "csv"
    rows = store.get_bytes(rows_key(ReviewTask.model_validate(answer.json()))).decode()
    assert rows.splitlines()[1].endswith(",1") and "gt-1" in rows

    env = {
        "CAIRN_LABELING_URL": labeling,
        "CAIRN_API_KEY": token_for(store, settings, ["label"], name="cli-reviewer"),
        "COLUMNS": "250",
    }
    listed = CliRunner().invoke(app, ["review", "list", "--endpoint", ENDPOINT], env=env)
    assert listed.exit_code == 0, listed.output
    assert request.review_id in listed.output and "alice" in listed.output
    described = CliRunner().invoke(
        app, ["review", "describe", request.review_id, "--json"], env=env
    )
    assert described.exit_code == 0, described.output
    assert json.loads(described.output)["answer"] == ["1"]


async def test_a_redelivered_request_leaves_the_answered_task_alone(
    labeling: str, settings: CairnSettings, store: ObjectStore
):
    reviewer = scoped_headers(store, settings, ["label"], name="carol")
    request = review_request("redelivered", rows="1.0,2,3.0,north\n4.0,5,6.0,south")
    sentinel = review_request("sentinel")
    async with httpx.AsyncClient(base_url=labeling, headers=reviewer, timeout=10) as http:
        async with EventProducer(settings, source="gateway") as producer:
            await producer.publish(request)
            await wait_task(http, request.review_id)
            assert (await http.post(f"/reviews/{request.review_id}/claim")).status_code == 200
            answer = await http.post(
                f"/reviews/{request.review_id}/answer", json={"labels": ["0", "1"]}
            )
            assert answer.status_code == 200, answer.text
            await producer.publish(request)  # the same request again: a redelivery
            await producer.publish(sentinel)
        await wait_task(http, sentinel.review_id)
        again = (await http.get(f"/reviews/{request.review_id}")).json()
        assert again["status"] == "Completed" and again["answer"] == ["0", "1"]
        listed = (await http.get("/reviews", params={"limit": 1000})).json()
        assert [item["review_id"] for item in listed].count(request.review_id) == 1
    truth = await next_event(
        settings, "GroundTruthRecorded", lambda d: "redelivered:0" in d["labels"]
    )
    assert truth["labels"] == {"redelivered:0": 0, "redelivered:1": 1}


async def test_an_answer_stored_before_a_kill_is_published_at_start(
    settings: CairnSettings, store: ObjectStore
):
    """The state a service killed between storing an answer and publishing it leaves behind."""
    request = review_request("after-kill")
    task = new_task(request).model_copy(
        update={
            "status": "Completed",
            "answer": ["0"],
            "reviewer": "dave",
            "completed_at": datetime.now(UTC),
        }
    )
    store.put_bytes(f"labeling/reviews/{request.review_id}.json", task.model_dump_json().encode())
    service = Service("labeling", settings=settings, store=store)
    install_reviews(service)
    with served_in_thread(service.asgi, "the restarted labeling service", timeout_s=WAIT_S):
        truth = await next_event(
            settings, "GroundTruthRecorded", lambda d: "after-kill" in d["labels"]
        )
        assert truth["labels"] == {"after-kill": 0}
        await _until(
            lambda: (
                ReviewTask.model_validate_json(
                    store.get_bytes(f"labeling/reviews/{request.review_id}.json")
                ).published
            )
        )
