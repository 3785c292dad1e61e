"""The ingest service on a real uvicorn server, Tansu broker and moto S3 store.

One server runs for the module; each test uses its own dataset names so they stay independent.
Callers hold real keys from the store's key ring (`data` + `read` unless a test says otherwise).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from cairn.audit import list_audit_records
from cairn.bus import DLQ_ERROR, DLQ_REASON, EventProducer, tail_events
from cairn.bus.publish import Signer
from cairn.contracts.catalogue import spec_for
from cairn.contracts.events import DatasetRegistrationRequested
from cairn.settings import CairnSettings
from cairn.store import ObjectStore, open_store
from cairn_cli import app
from typer.testing import CliRunner

from services.ingest.app import create_service
from services.ingest.config import IngestSettings
from tests.support.auth import auth_settings, scoped_headers, token_for
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
    return auth_settings(
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
    )


@pytest.fixture(scope="module")
def store(settings: CairnSettings) -> ObjectStore:
    return open_store(settings=settings)


@pytest.fixture(scope="module")
def base_url(
    settings: CairnSettings, store: ObjectStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    config = IngestSettings(work_dir=tmp_path_factory.mktemp("ingest-work"))
    service = create_service(settings, store, config)
    with served_in_thread(service.api, "the ingest service", timeout_s=WAIT_S) as url:
        yield url


@pytest.fixture(scope="module")
async def http(
    base_url: str, settings: CairnSettings, store: ObjectStore
) -> AsyncIterator[httpx.AsyncClient]:
    headers = scoped_headers(store, settings, ["data", "read"], name="data-engineer")
    async with httpx.AsyncClient(base_url=base_url, timeout=30, headers=headers) as client:
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


def data_signer(store: ObjectStore, settings: CairnSettings) -> Signer:
    """A user's `data` key to sign privileged requests on the bus with."""
    key_id, _, secret = token_for(store, settings, ["data"], name="bus-user").partition(":")
    return Signer(key_id, secret)


async def dead_letter(
    settings: CairnSettings, match: Callable[[dict[str, Any]], bool]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The first DatasetRegistrationRequested on its DLQ whose envelope `match` accepts."""
    consumer = AIOKafkaConsumer(
        spec_for(DatasetRegistrationRequested).dlq_topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        async with asyncio.timeout(WAIT_S):
            async for message in consumer:
                value = json.loads(message.value or b"{}")
                if match(value):
                    return value, {k: v.decode() for k, v in message.headers or ()}
    finally:
        await consumer.stop()
    raise AssertionError("unreachable")


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
        f"data/landing/{name}/a.jsonl",
        b'{"user": "u1", "clicks": 3}\n{"user": "u2", "clicks": 5}\n',
    )
    store.put_bytes(f"data/landing/{name}/b.jsonl", b'{"user": "u3", "clicks": 1, "ref": "ad"}\n')

    async with EventProducer(settings, source="test", signer=data_signer(store, settings)) as bus:
        await bus.publish(
            DatasetRegistrationRequested(dataset_name=name, source_uri=f"data/landing/{name}/")
        )

    event = await next_event(settings, "DatasetIngested", lambda d: d["dataset_name"] == name)
    assert event["uri"] == f"dataset://{name}@1" and event["row_count"] == 3
    assert {c["name"]: c["dtype"] for c in event["columns"]} == {
        "user": "string",
        "clicks": "int",
        "ref": "string",
    }
    version = (await http.get(f"/datasets/{name}/1")).json()
    assert version["source"] == f"data/landing/{name}/"
    assert all(store.exists(event["location"] + f["name"]) for f in version["files"])


# Locked by default, confined to user namespaces -------------------------------------------------


async def test_the_key_ring_and_service_data_cannot_be_registered_as_a_dataset(
    http: httpx.AsyncClient, store: ObjectStore
) -> None:
    """Issue 9's reproduction: `gateway/keys/` registered as a dataset exposed secrets."""
    store.put_bytes("gateway/keys/k1.jsonl", b'{"key_id": "AK1", "secret_access_key": "s3cr3t"}\n')
    refused = ["gateway/keys/", "platform/keys/", "data/../platform/keys/", "s3://other/data/x/"]
    for source in refused:
        answer = await http.post(
            "/datasets/keysdump/register", json={"source_uri": source, "format": "jsonl"}
        )
        assert answer.status_code == 400, (source, answer.text)
        assert answer.json()["details"]["field"] == "source_uri"
        assert answer.json()["error"].startswith("source_uri:")
    assert (await http.get("/datasets/keysdump")).status_code == 404
    assert list(store.list("datasets/keysdump/")) == []

    store.put_bytes("data/keysdump/rows.jsonl", b'{"user": "u1"}\n')
    allowed = await http.post(
        "/datasets/keysdump/register", json={"source_uri": "data/keysdump/", "format": "jsonl"}
    )
    assert allowed.status_code == 201, allowed.text
    assert "s3cr3t" not in (await http.get("/datasets/keysdump/latest")).text


async def test_a_registration_event_outside_the_user_namespaces_is_rejected_and_dead_lettered(
    http: httpx.AsyncClient, settings: CairnSettings, store: ObjectStore
) -> None:
    name = new_name("keyring")
    request = DatasetRegistrationRequested(dataset_name=name, source_uri="platform/keys/")
    async with EventProducer(settings, source="test", signer=data_signer(store, settings)) as bus:
        sent = await bus.publish(request)

    rejected = await next_event(settings, "DatasetRejected", lambda d: d["dataset_name"] == name)
    assert rejected["reason"].startswith("source_uri:")
    dead, headers = await dead_letter(settings, lambda v: v["event_id"] == str(sent.event_id))
    assert dead["data"]["source_uri"] == "platform/keys/"
    assert headers[DLQ_REASON] == "location-refused" and "source_uri" in headers[DLQ_ERROR]
    assert (await http.get(f"/datasets/{name}")).status_code == 404


async def test_anonymous_and_read_only_callers_cannot_change_datasets(
    base_url: str, settings: CairnSettings, store: ObjectStore
) -> None:
    name = new_name("locked")
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as anonymous:
        assert (await anonymous.get("/datasets")).status_code == 401
        answer = await upload(anonymous, name, CSV.encode())
        assert answer.status_code == 401 and answer.json()["code"] == "unauthenticated"
    reader = scoped_headers(store, settings, ["read"], name="analyst")
    async with httpx.AsyncClient(base_url=base_url, timeout=30, headers=reader) as client:
        assert (await client.get("/datasets")).status_code == 200
        assert (await upload(client, name, CSV.encode())).status_code == 403
        assert (await client.get(f"/datasets/{name}")).status_code == 404


async def test_a_registration_is_audited_with_the_callers_name(
    http: httpx.AsyncClient, store: ObjectStore
) -> None:
    name = new_name("audited")
    store.put_bytes(f"data/{name}/a.csv", CSV.encode())
    answer = await http.post(f"/datasets/{name}/register", json={"source_uri": f"data/{name}/"})
    assert answer.status_code == 201, answer.text

    records = list_audit_records(store, resource=f"/datasets/{name}/register")
    assert [(r.action, r.principal, r.outcome, r.status_code) for r in records] == [
        ("dataset.register", "data-engineer", "success", 201)
    ]


# Bad input is a 400 with the reason, never a 500 ----------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "code", "says"),
    [
        (b"", "text/csv", "unreadable_source", "upload is empty (0 bytes)"),
        (b"", "application/x-parquet", "unreadable_source", "upload is empty (0 bytes)"),
        (b"x" * (50 << 20), "text/csv", "unreadable_source", "longer than 1 MiB"),
        ("id,city\n1,Zürich\n".encode("latin-1"), "text/csv", "unreadable_source", "not UTF-8"),
        ("id,city\n1,Zürich\n".encode("utf-16"), "text/csv", "unreadable_source", "not UTF-8"),
        (
            '{"city": "Zürich"}\n'.encode("latin-1"),
            "application/jsonlines",
            "unreadable_source",
            "not UTF-8",
        ),
        (b"id,city\n", "text/csv", "no_rows", "a header but no rows"),
    ],
    ids=["empty-csv", "empty-parquet", "50mb-line", "latin1", "utf16", "latin1-jsonl", "header"],
)
async def test_unreadable_uploads_are_refused_with_the_reason(
    http: httpx.AsyncClient, body: bytes, content_type: str, code: str, says: str
) -> None:
    name = new_name("bad")
    answer = await http.post(
        f"/datasets/{name}/upload", content=body, headers={"Content-Type": content_type}
    )

    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == code and says in answer.json()["error"]
    assert (await http.get(f"/datasets/{name}")).status_code == 404


async def test_registering_an_empty_source_is_refused_naming_the_field(
    http: httpx.AsyncClient,
) -> None:
    answer = await http.post("/datasets/x/register", json={"source_uri": "", "format": "parquet"})

    assert answer.status_code == 400, answer.text
    assert answer.json()["details"]["field"] == "source_uri"


async def test_a_big_file_goes_through_a_presigned_url_then_registers(
    http: httpx.AsyncClient,
) -> None:
    name = new_name("big")
    ticket = await http.post(f"/datasets/{name}/upload-url", json={"filename": "big.csv"})
    assert ticket.status_code == 200, ticket.text
    body = ticket.json()
    assert body["source_uri"].startswith(f"uploads/{name}/") and body["format"] == "csv"

    async with httpx.AsyncClient(timeout=30) as direct:  # straight to the store, no credential
        put = await direct.put(body["upload_url"], content=CSV.encode(), headers=body["headers"])
    assert put.status_code == 200, put.text
    registered = await http.post(
        body["register_path"], json={"source_uri": body["source_uri"], "format": body["format"]}
    )

    assert registered.status_code == 201, registered.text
    assert registered.json()["row_count"] == 3


def test_cli_upload_via_store_puts_the_file_in_the_store_and_registers_it(
    base_url: str,
    settings: CairnSettings,
    store: ObjectStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CAIRN_API_KEY", token_for(store, settings, ["data"], name="cli-user"))
    name = new_name("cli-big")
    path = tmp_path / "sales 2026.csv"
    path.write_text(CSV)

    result = CliRunner().invoke(
        app, ["datasets", "upload", str(path), "--name", name, "--via-store", "--url", base_url]
    )

    assert result.exit_code == 0, result.output
    assert f"dataset://{name}@1 stored: 3 rows" in result.output
    [uploaded] = [info.key for info in store.list(f"uploads/{name}/")]
    assert uploaded.endswith("/sales_2026.csv")
