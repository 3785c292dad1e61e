"""The ingest service on a real uvicorn server, Tansu broker and moto S3 store.

One server runs for the module; each test uses its own dataset names so they stay independent.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from cairn.bus import EventProducer, tail_events
from cairn.contracts.events import DatasetRegistrationRequested
from cairn.settings import CairnSettings
from cairn.store import ObjectStore, open_store

from services.ingest.app import create_service
from services.ingest.config import IngestSettings
from tests.support.http_server import served_in_thread

pytestmark = pytest.mark.integration

WAIT_S = 20.0
CSV = "id,city,amount\n1,paris,10.5\n2,oslo,\n3,paris,7\n"


def new_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def settings(
    kafka_bootstrap: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> CairnSettings:
    return CairnSettings(
        home=tmp_path_factory.mktemp("ingest-home"),
        kafka_bootstrap_servers=kafka_bootstrap,
        store_url=f"s3://ingest-{uuid.uuid4().hex[:12]}",
        s3_endpoint=s3_endpoint,
        s3_access_key="cairn-test",
        s3_secret_key="cairn-test-secret",  # type: ignore[arg-type]
        bus_session_timeout_ms=1000,
        bus_heartbeat_interval_ms=100,
        bus_max_retries=1,
        bus_retry_backoff_s=0.05,
        otel_exporter="none",
    )


@pytest.fixture(scope="module")
def store(settings: CairnSettings) -> ObjectStore:
    return open_store(settings=settings)


@pytest.fixture(scope="module")
async def http(
    settings: CairnSettings, store: ObjectStore, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[httpx.AsyncClient]:
    config = IngestSettings(work_dir=tmp_path_factory.mktemp("ingest-work"))
    service = create_service(settings, store, config)
    with served_in_thread(service.api, "the ingest service", timeout_s=WAIT_S) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield client


async def next_event(
    settings: CairnSettings, event_type: str, match: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The data of the first event of `event_type` on the bus that `match` accepts."""

    async def find() -> dict[str, Any]:
        async for tailed in tail_events(settings, [event_type], from_beginning=True):
            if isinstance(tailed.event, dict):
                continue
            data = tailed.event.data.model_dump(mode="json")
            if tailed.event.type == event_type and match(data):
                return data
        raise AssertionError("the tail ended")

    return await asyncio.wait_for(find(), WAIT_S)


async def upload(
    http: httpx.AsyncClient, name: str, body: bytes, content_type: str = "text/csv", **params: str
) -> httpx.Response:
    async def chunks() -> AsyncIterator[bytes]:  # sent chunked, as the CLI streams a file
        for start in range(0, len(body), 16):
            yield body[start : start + 16]

    return await http.post(
        f"/datasets/{name}/upload",
        content=chunks(),
        params=params,
        headers={"Content-Type": content_type},
    )


async def test_upload_csv_then_same_again_is_a_no_op(
    http: httpx.AsyncClient, settings: CairnSettings
) -> None:
    name = new_name("sales")
    first = await upload(http, name, CSV.encode())
    assert first.status_code == 201, first.text
    assert first.json()["uri"] == f"dataset://{name}@1" and first.json()["row_count"] == 3

    event = await next_event(settings, "DatasetIngested", lambda d: d["dataset_name"] == name)
    assert event["uri"] == f"dataset://{name}@1" and event["created"] is True

    again = await upload(http, name, CSV.encode())
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["sha256"] == first.json()["sha256"]
    await next_event(
        settings, "DatasetIngested", lambda d: d["dataset_name"] == name and not d["created"]
    )

    described = (await http.get(f"/datasets/{name}/latest")).json()
    amount = next(p for p in described["profile"] if p["name"] == "amount")
    assert amount["missing"] == 1 and amount["max"] == 10.5
    assert [v["version"] for v in (await http.get(f"/datasets/{name}")).json()["versions"]] == [1]
    assert name in [row["name"] for row in (await http.get("/datasets")).json()]


async def test_bad_rows_are_rejected_and_nothing_is_visible(
    http: httpx.AsyncClient, settings: CairnSettings, store: ObjectStore
) -> None:
    name = new_name("people")
    declared = json.dumps([{"name": "id", "dtype": "int"}, {"name": "age", "dtype": "int"}])
    answer = await upload(http, name, b"id,age\n1,30\n2,old\n3,x\n", schema=declared)

    assert answer.status_code == 400
    body = answer.json()
    assert body["code"] == "schema_violation"
    first = body["details"]["violations"][0]
    assert (first["row"], first["column"], first["value"]) == (2, "age", "old")
    assert "row 2, column 'age'" in body["error"]
    assert list(store.list(f"datasets/{name}/")) == []
    assert (await http.get(f"/datasets/{name}")).status_code == 404
    rejected = await next_event(settings, "DatasetRejected", lambda d: d["dataset_name"] == name)
    assert "row 2" in rejected["reason"]


async def test_register_a_prefix_of_json_lines_through_the_event(
    http: httpx.AsyncClient, settings: CairnSettings, store: ObjectStore
) -> None:
    name = new_name("clicks")
    store.put_bytes(
        f"landing/{name}/a.jsonl", b'{"user": "u1", "clicks": 3}\n{"user": "u2", "clicks": 5}\n'
    )
    store.put_bytes(f"landing/{name}/b.jsonl", b'{"user": "u3", "clicks": 1, "ref": "ad"}\n')

    async with EventProducer(settings, source="test") as producer:
        await producer.publish(
            DatasetRegistrationRequested(dataset_name=name, source_uri=f"landing/{name}/")
        )

    event = await next_event(settings, "DatasetIngested", lambda d: d["dataset_name"] == name)
    assert event["uri"] == f"dataset://{name}@1" and event["row_count"] == 3
    assert {c["name"]: c["dtype"] for c in event["columns"]} == {
        "user": "string",
        "clicks": "int",
        "ref": "string",
    }
    version = (await http.get(f"/datasets/{name}/1")).json()
    assert version["source"] == f"landing/{name}/"
    assert all(store.exists(event["location"] + f["name"]) for f in version["files"])
