"""The feature store service on the real broker (Tansu), a real S3 server (moto) and real HTTP.

One uvicorn server per online adapter runs the whole service (API + consumers) in a thread; tests
drive it only through HTTP and Kafka, as a user would, with a real `data` + `read` key from the
store's key ring (privileged requests on the bus are signed with one).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
import uvicorn
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from cairn.audit import list_audit_records
from cairn.auth.signing import sign_envelope
from cairn.bus import DLQ_ERROR, DLQ_REASON
from cairn.contracts.catalogue import spec_for
from cairn.contracts.events import (
    FeatureIngestionCompleted,
    FeatureRecordsPut,
    TrainingSetBuilt,
)
from cairn.datasets import write_dataset_version
from cairn.settings import CairnSettings
from cairn.store import ObjectStore, open_store
from cairn_cli import app
from typer.testing import CliRunner

from services.featurestore.app import create_service
from services.featurestore.config import FeatureStoreSettings
from services.featurestore.datasets_io import read_dataset
from tests.support.auth import auth_settings, scoped_headers, token_for

pytestmark = pytest.mark.integration

WAIT_S = 20.0


def group_body(name: str, **overrides: Any) -> dict[str, Any]:
    return {
        "feature_group_name": name,
        "record_identifier_feature_name": "customer_id",
        "event_time_feature_name": "event_time",
        "feature_definitions": [
            {"name": "customer_id", "type": "String"},
            {"name": "event_time", "type": "String"},
            {"name": "spend_30d", "type": "Fractional"},
            {"name": "orders", "type": "Integral"},
        ],
        **overrides,
    }


def new_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class RunningService:
    """A uvicorn server running the feature store in a thread, with an HTTP client to it."""

    def __init__(self, settings: CairnSettings, store: ObjectStore, config: FeatureStoreSettings):
        self.settings = settings
        self.store = store
        self.service = create_service(settings, store, config)
        self.server = uvicorn.Server(
            uvicorn.Config(self.service.api, host="127.0.0.1", port=0, log_config=None)
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> RunningService:
        self.thread.start()
        deadline = time.monotonic() + WAIT_S
        while not self.server.started:
            assert time.monotonic() < deadline, "the feature store did not start"
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.token = token_for(self.store, self.settings, ["data", "read"], name="feature-eng")
        headers = {"Authorization": f"Bearer {self.token}"}
        self.http = httpx.Client(base_url=self.url, timeout=30, headers=headers)
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def wait_for_record(
        self, group: str, record_id: str, check: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        """Poll GetRecord until the record exists and passes `check`."""
        deadline = time.monotonic() + WAIT_S
        while True:
            answer = self.http.get(f"/feature-groups/{group}/records/{record_id}")
            if answer.status_code == 200 and check(answer.json()["record"]):
                return dict(answer.json())
            assert time.monotonic() < deadline, f"{group}/{record_id}: {answer.text}"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def store(s3_endpoint: str) -> ObjectStore:
    settings = CairnSettings(
        store_url=f"s3://fs-{uuid.uuid4().hex[:12]}",
        s3_endpoint=s3_endpoint,
        s3_access_key="cairn-test",
        s3_secret_key="cairn-test-secret",  # type: ignore[arg-type]
    )
    return open_store(settings=settings)


def _service(
    kafka_bootstrap: str, store: ObjectStore, home: Path, online_url: str
) -> RunningService:
    settings = auth_settings(
        home=home,
        kafka_bootstrap_servers=kafka_bootstrap,
        bus_session_timeout_ms=1000,
        bus_heartbeat_interval_ms=100,
        bus_max_retries=1,
        bus_retry_backoff_s=0.05,
        bus_retry_backoff_max_s=0.1,
    )
    config = FeatureStoreSettings(
        online_url=online_url,
        consumer_group=new_name("cairn.featurestore"),
        cache_dir=home / "cache",
        bulk_batch_rows=500,
    )
    return RunningService(settings, store, config)


@pytest.fixture(scope="module")
def sqlite_fs(
    kafka_bootstrap: str, store: ObjectStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    home = tmp_path_factory.mktemp("fs-sqlite")
    with _service(kafka_bootstrap, store, home, "") as running:
        yield running


@pytest.fixture(scope="module")
def redis_fs(
    kafka_bootstrap: str,
    store: ObjectStore,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningService]:
    home = tmp_path_factory.mktemp("fs-redis")
    with _service(kafka_bootstrap, store, home, redis_url) as running:
        yield running


def signed_by(token: str, envelope: dict[str, Any]) -> dict[str, Any]:
    """The envelope signed with a user's key, as the SDK signs a privileged request."""
    key_id, _, secret = token.partition(":")
    return sign_envelope(envelope, key_id, secret)


async def produce_raw(bootstrap: str, topic: str, key: str, value: dict[str, Any]) -> None:
    """Send one message the way any Kafka client would: no Cairn code involved."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, json.dumps(value).encode(), key=key.encode())
    finally:
        await producer.stop()


def records_put(group: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "type": "FeatureRecordsPut",
        "occurred_at": datetime.now(UTC).isoformat(),
        "source": "a-plain-producer",
        "correlation_id": str(uuid.uuid4()),
        "data": {"feature_group_name": group, "records": records},
    }


async def first_message(
    bootstrap: str, topic: str, match: Callable[[dict[str, Any], dict[str, str]], bool]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The first message on `topic` (from the beginning) whose JSON value and headers match."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        async with asyncio.timeout(WAIT_S):
            async for message in consumer:
                value = json.loads(message.value or b"{}")
                headers = {k: v.decode() for k, v in message.headers or ()}
                if match(value, headers):
                    return value, headers
    finally:
        await consumer.stop()
    raise AssertionError("unreachable")


def at(base: datetime, **delta: float) -> str:
    return (base + timedelta(**delta)).isoformat()


# Tests -----------------------------------------------------------------------------------------


async def test_groups_are_created_once_over_http_and_announced(
    sqlite_fs: RunningService, kafka_bootstrap: str
) -> None:
    name = new_name("customers")
    http = sqlite_fs.http
    assert http.post("/feature-groups", json=group_body(name)).status_code == 201
    assert http.post("/feature-groups", json=group_body(name)).status_code == 200
    conflict = http.post("/feature-groups", json=group_body(name, ttl_s=5))
    assert conflict.status_code == 409 and conflict.json()["code"] == "conflict"
    assert http.get(f"/feature-groups/{name}").json()["record_identifier_feature_name"] == (
        "customer_id"
    )
    listed = [g["feature_group_name"] for g in http.get("/feature-groups").json()["feature_groups"]]
    assert name in listed
    missing = http.get(f"/feature-groups/{name}/records/nobody")
    assert missing.status_code == 404
    created, _ = await first_message(
        kafka_bootstrap,
        spec_for("FeatureGroupCreated").topic,
        lambda value, _: value["data"]["feature_group_name"] == name,
    )
    assert created["data"]["online_enabled"] is True
    by_event = new_name("from-event")
    request = records_put(by_event, [{}]) | {"type": "FeatureGroupCreationRequested"}
    request["data"] = group_body(by_event, online_enabled=False)
    topic = spec_for("FeatureGroupCreationRequested").topic
    await produce_raw(kafka_bootstrap, topic, by_event, signed_by(sqlite_fs.token, request))
    deadline = time.monotonic() + WAIT_S
    while (described := http.get(f"/feature-groups/{by_event}")).status_code == 404:
        assert time.monotonic() < deadline, "the group requested by event never appeared"
        await asyncio.sleep(0.05)
    assert described.json()["online_enabled"] is False


async def test_out_of_order_puts_keep_the_latest_by_event_time(sqlite_fs: RunningService) -> None:
    name = new_name("orders")
    http = sqlite_fs.http
    http.post("/feature-groups", json=group_body(name)).raise_for_status()
    base = datetime(2026, 1, 1, tzinfo=UTC)
    newer = {"customer_id": "c1", "event_time": at(base, hours=2), "spend_30d": 20.0}
    older = {"customer_id": "c1", "event_time": at(base, hours=1), "spend_30d": 10.0}
    assert http.put(f"/feature-groups/{name}/records", json={"record": newer}).json()[
        "stored_online"
    ]
    sagemaker_body = {
        "Record": [{"FeatureName": k, "ValueAsString": str(v)} for k, v in older.items()]
    }
    assert not http.put(f"/feature-groups/{name}/records", json=sagemaker_body).json()[
        "stored_online"
    ]
    got = http.get(f"/feature-groups/{name}/records/c1", params={"features": "spend_30d"}).json()
    assert got["record"] == {"spend_30d": 20.0}
    # History keeps both: the group as of between the two events shows the older value.
    past = http.get(f"/feature-groups/{name}/as-of", params={"ts": at(base, hours=1.5)}).json()
    assert [row["spend_30d"] for row in past["records"]] == [10.0]
    invalid = http.put(
        f"/feature-groups/{name}/records",
        json={"record": {"customer_id": "c2", "event_time": at(base), "orders": "many"}},
    )
    assert invalid.status_code == 400 and "'orders' must be Integral" in invalid.json()["error"]
    deleted = http.delete(
        f"/feature-groups/{name}/records/c1", params={"event_time": at(base, hours=3)}
    )
    assert deleted.json()["deleted"] is True
    assert http.get(f"/feature-groups/{name}/records/c1").status_code == 404
    batch = http.post(
        "/batch-get-record",
        json={"identifiers": [{"feature_group_name": name, "record_identifiers": ["c1", "c2"]}]},
    ).json()
    assert batch["records"] == [] and len(batch["not_found"]) == 2


async def _stream_and_check(running: RunningService, kafka_bootstrap: str) -> None:
    name = new_name("clicks")
    running.http.post("/feature-groups", json=group_body(name)).raise_for_status()
    base = datetime(2026, 2, 1, tzinfo=UTC)
    event = records_put(
        name,
        [
            {"customer_id": "s1", "event_time": at(base, hours=2), "orders": 2},
            {"customer_id": "s1", "event_time": at(base, hours=1), "orders": 1},
            {"customer_id": "s2", "event_time": at(base), "orders": "two"},
            {"customer_id": "s3", "event_time": at(base), "spend_30d": 3.5},
        ],
    )
    topic = spec_for(FeatureRecordsPut).topic
    await produce_raw(kafka_bootstrap, topic, name, event)
    assert running.wait_for_record(name, "s1", lambda r: r["orders"] == 2)["record"]["orders"] == 2
    assert (
        running.http.get(f"/feature-groups/{name}/records/s3").json()["record"]["spend_30d"] == 3.5
    )
    assert running.http.get(f"/feature-groups/{name}/records/s2").status_code == 404
    offline = running.http.get(
        f"/feature-groups/{name}/as-of", params={"ts": at(base, hours=1, minutes=30)}
    ).json()
    assert {row["customer_id"]: row["orders"] for row in offline["records"]} == {
        "s1": 1,
        "s3": None,
    }
    completed, _ = await first_message(
        kafka_bootstrap,
        spec_for(FeatureIngestionCompleted).topic,
        lambda value, _: value.get("causation_id") == event["event_id"],
    )
    assert (completed["data"]["records_written"], completed["data"]["records_rejected"]) == (3, 1)
    assert "record 2: feature 'orders' must be Integral" in completed["data"]["rejections"][0]
    dead, headers = await first_message(
        kafka_bootstrap,
        spec_for(FeatureRecordsPut).dlq_topic,
        lambda value, _: value.get("causation_id") == event["event_id"],
    )
    assert dead["data"]["records"] == [event["data"]["records"][2]]
    assert headers[DLQ_REASON] == "invalid-records" and "'orders'" in headers[DLQ_ERROR]


async def test_streamed_records_land_online_and_offline_and_bad_ones_are_dead_lettered(
    sqlite_fs: RunningService, kafka_bootstrap: str
) -> None:
    await _stream_and_check(sqlite_fs, kafka_bootstrap)


async def test_streaming_on_the_redis_online_store(
    redis_fs: RunningService, kafka_bootstrap: str
) -> None:
    await _stream_and_check(redis_fs, kafka_bootstrap)


async def test_training_set_never_leaks_future_or_late_values(
    sqlite_fs: RunningService, store: ObjectStore, kafka_bootstrap: str
) -> None:
    name = new_name("risk")
    http = sqlite_fs.http
    http.post("/feature-groups", json=group_body(name)).raise_for_status()

    def put(event_time: str, spend: float) -> None:
        record = {"customer_id": "r1", "event_time": event_time, "spend_30d": spend}
        http.put(f"/feature-groups/{name}/records", json={"record": record}).raise_for_status()

    base = datetime.now(UTC) - timedelta(hours=1)
    put(at(base), 1.0)
    put(at(base, minutes=30), 2.0)
    await asyncio.sleep(0.02)
    entity_time = datetime.now(UTC)
    await asyncio.sleep(0.02)
    put(at(base, minutes=50), 99.0)  # late: event time before the entity row, written after it
    put(at(entity_time, minutes=10), 1000.0)  # future: event time after the entity row
    entity = pa.table(
        {
            "customer_id": ["r1", "r1", "nobody"],
            "at": pa.array(
                [entity_time, base + timedelta(minutes=10), entity_time],
                pa.timestamp("us", tz="UTC"),
            ),
            "label": [1, 0, 0],
        }
    )
    entity_uri = write_dataset_version(store, new_name("entities"), entity)[0].uri
    results = {}
    for known in (False, True):
        training_set = new_name("train")
        answer = http.post(
            "/training-sets",
            json={
                "training_set_name": training_set,
                "entity_dataset_uri": entity_uri,
                "entity_id_column": "customer_id",
                "entity_time_column": "at",
                "features": [f"{name}:spend_30d"],
                "as_of_known_time": known,
            },
        )
        assert answer.status_code == 201, answer.text
        table = read_dataset(store, answer.json()["dataset_uri"])
        assert table.column("label").to_pylist() == [1, 0, 0]
        results[known] = table.column(f"{name}__spend_30d").to_pylist()
        built, _ = await first_message(
            kafka_bootstrap,
            spec_for(TrainingSetBuilt).topic,
            lambda value, _, ts=training_set: value["data"]["training_set_name"] == ts,
        )
        assert built["data"]["dataset_uri"] == answer.json()["dataset_uri"]
    assert results[False] == [99.0, 1.0, None]  # the late value counts by its event time
    # As of known time: the late 99 was not known at the entity time, and at base + 10 min nothing
    # had been written yet (every row here was written within the last second).
    assert results[True] == [2.0, None, None]
    assert 1000.0 not in results[False] + results[True]


async def test_bulk_ingestion_from_a_dataset_keeps_online_reads_answering(
    sqlite_fs: RunningService, store: ObjectStore, kafka_bootstrap: str
) -> None:
    name = new_name("bulk")
    http = sqlite_fs.http
    http.post("/feature-groups", json=group_body(name)).raise_for_status()
    http.put(
        f"/feature-groups/{name}/records",
        json={"record": {"customer_id": "hot", "event_time": "2026-03-01T00:00:00+00:00"}},
    ).raise_for_status()
    count = 5000
    rows = pa.table(
        {
            "customer_id": [f"b{i}" for i in range(count)],
            "event_time": ["2026-03-01T00:00:00+00:00"] * count,
            "orders": list(range(count)),
        }
    )
    uri = write_dataset_version(store, new_name("history"), rows)[0].uri
    queued = http.post(f"/feature-groups/{name}/ingest", json={"dataset_uri": uri})
    assert queued.status_code == 202
    # Reads keep answering while the load runs (the online-store contract proves they never wait
    # for the whole load); the last record's arrival is the sentinel that the load finished.
    while http.get(f"/feature-groups/{name}/records/b{count - 1}").status_code == 404:
        assert http.get(f"/feature-groups/{name}/records/hot").status_code == 200
    completed, _ = await first_message(
        kafka_bootstrap,
        spec_for(FeatureIngestionCompleted).topic,
        lambda value, _: value["data"]["source"] == uri,
    )
    assert (completed["data"]["records_written"], completed["data"]["records_rejected"]) == (
        count,
        0,
    )


def test_cli_creates_a_group_puts_and_gets_a_record(
    sqlite_fs: RunningService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAIRN_FEATURESTORE_URL", sqlite_fs.url)
    monkeypatch.setenv("CAIRN_API_KEY", sqlite_fs.token)
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    name = new_name("cli")
    keys = ["--record-id", "id", "--event-time", "ts"]
    features = ["-f", "id:String", "-f", "ts:Timestamp", "-f", "score:Fractional"]
    created = runner.invoke(app, ["features", "groups", "create", name, *keys, *features])
    assert created.exit_code == 0, created.output
    assert name in runner.invoke(app, ["features", "groups", "list"]).output
    described = runner.invoke(app, ["features", "groups", "describe", name])
    assert json.loads(described.output)["event_time_feature_name"] == "ts"
    record = '{"id": "u1", "ts": "2026-04-01T00:00:00Z", "score": 0.5}'
    assert runner.invoke(app, ["features", "put", name, record]).exit_code == 0
    got = runner.invoke(app, ["features", "get", name, "u1", "--features", "score"])
    assert got.exit_code == 0 and json.loads(got.output)["record"] == {"score": 0.5}
    bad = runner.invoke(app, ["features", "put", name, '{"id": "u2", "ts": "soon"}'])
    assert bad.exit_code == 1 and "'ts' must be Timestamp" in bad.output


# Locked by default, confined to registered datasets ----------------------------------------------


def test_get_record_fast_path_needs_a_read_key(sqlite_fs: RunningService) -> None:
    name = new_name("guarded")
    http = sqlite_fs.http
    http.post("/feature-groups", json=group_body(name)).raise_for_status()
    record = {"customer_id": "g1", "event_time": "2026-05-01T00:00:00+00:00", "orders": 1}
    http.put(f"/feature-groups/{name}/records", json={"record": record}).raise_for_status()
    path = f"/feature-groups/{name}/records/g1"
    assert http.get(path).json()["record"]["orders"] == 1  # the group is cached: the fast path

    anonymous = httpx.get(sqlite_fs.url + path)
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "unauthenticated"
    forged = httpx.get(sqlite_fs.url + path, headers={"X-API-Key": "nobody:secret"})
    assert forged.status_code == 403
    invoker = scoped_headers(sqlite_fs.store, sqlite_fs.settings, ["invoke"], name="app")
    refused = httpx.get(sqlite_fs.url + path, headers=invoker)
    assert refused.status_code == 403 and refused.json()["details"]["required_scope"] == "read"
    reader = scoped_headers(sqlite_fs.store, sqlite_fs.settings, ["read"], name="model")
    assert httpx.get(sqlite_fs.url + path, headers=reader).json()["record"]["orders"] == 1
    put = httpx.put(sqlite_fs.url + f"/feature-groups/{name}/records", json={"record": record})
    assert put.status_code == 401


def test_feature_sources_must_be_registered_datasets(
    sqlite_fs: RunningService, store: ObjectStore
) -> None:
    name = new_name("confined")
    http = sqlite_fs.http
    http.post("/feature-groups", json=group_body(name)).raise_for_status()
    store.put_bytes("gateway/keys/k1.jsonl", b'{"secret_access_key": "s3cr3t"}\n')
    for source in ("platform/keys/", "gateway/keys/k1.jsonl", "data/features.parquet"):
        queued = http.post(f"/feature-groups/{name}/ingest", json={"dataset_uri": source})
        assert queued.status_code == 400, (source, queued.text)
        assert queued.json()["details"]["field"] == "dataset_uri"
    training = http.post(
        "/training-sets",
        json={
            "training_set_name": new_name("leak"),
            "entity_dataset_uri": "gateway/keys/",
            "entity_id_column": "customer_id",
            "entity_time_column": "at",
            "features": [f"{name}:orders"],
        },
    )
    assert training.status_code == 400
    assert training.json()["details"]["field"] == "entity_dataset_uri"


def test_group_creation_is_audited_and_record_writes_are_not(
    sqlite_fs: RunningService, store: ObjectStore
) -> None:
    name = new_name("audited")
    engineer = new_name("engineer")
    headers = scoped_headers(store, sqlite_fs.settings, ["data"], name=engineer)
    with httpx.Client(base_url=sqlite_fs.url, headers=headers, timeout=30) as http:
        assert http.post("/feature-groups", json=group_body(name)).status_code == 201
        record = {"customer_id": "a1", "event_time": "2026-05-01T00:00:00+00:00"}
        put = http.put(f"/feature-groups/{name}/records", json={"record": record})
        assert put.status_code == 200
        assert http.get(f"/feature-groups/{name}").status_code == 403  # no read scope

    audited = [
        (r.action, r.resource, r.outcome) for r in list_audit_records(store, principal=engineer)
    ]
    assert audited == [("feature_group.create", f"/feature-groups/{name}", "success")]


# Record ids, unknown features, ties and failed training sets (issue 18) ------------------------


def test_record_ids_with_a_slash_are_read_and_deleted_by_their_encoded_path(
    sqlite_fs: RunningService,
) -> None:
    name = new_name("slashed")
    http = sqlite_fs.http
    http.post("/feature-groups", json=group_body(name)).raise_for_status()
    record = {"customer_id": "eu/c1", "event_time": "2026-05-01T00:00:00+00:00", "orders": 7}
    path = f"/feature-groups/{name}/records/eu%2Fc1"

    first = http.get(path)  # the group is not cached yet: the FastAPI route answers
    http.put(f"/feature-groups/{name}/records", json={"record": record}).raise_for_status()
    cached = http.get(path)  # cached now: the fast path answers
    deleted = http.delete(path, params={"event_time": "2026-05-02T00:00:00+00:00"})

    assert first.status_code == 404 and first.json()["details"]["record_identifier"] == "eu/c1"
    assert cached.status_code == 200 and cached.json()["record_identifier"] == "eu/c1"
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert http.get(path).status_code == 404


def test_batch_get_with_an_unknown_feature_names_it(sqlite_fs: RunningService) -> None:
    name = new_name("batch")
    http = sqlite_fs.http
    http.post("/feature-groups", json=group_body(name)).raise_for_status()
    record = {"customer_id": "c1", "event_time": "2026-05-01T00:00:00+00:00", "orders": 1}
    http.put(f"/feature-groups/{name}/records", json={"record": record}).raise_for_status()
    item = {"feature_group_name": name, "record_identifiers": ["c1"], "feature_names": ["order"]}

    answer = http.post("/batch-get-record", json={"identifiers": [item]})

    assert answer.status_code == 400, answer.text
    assert answer.json()["details"]["unknown_features"] == ["order"]
    assert "'order'" in answer.json()["error"]


def test_equal_event_times_resolve_alike_online_offline_and_in_training_sets(
    sqlite_fs: RunningService, store: ObjectStore
) -> None:
    name = new_name("ties")
    http = sqlite_fs.http
    http.post("/feature-groups", json=group_body(name)).raise_for_status()
    when = "2026-05-01T00:00:00+00:00"
    for orders in (1, 2, 1):  # A, B, A
        record = {"customer_id": "t1", "event_time": when, "orders": orders}
        http.put(f"/feature-groups/{name}/records", json={"record": record}).raise_for_status()
    entity = pa.table(
        {
            "customer_id": ["t1"],
            "at": pa.array([datetime(2026, 5, 2, tzinfo=UTC)], pa.timestamp("us", "UTC")),
        }
    )
    uri = write_dataset_version(store, new_name("tie-entities"), entity)[0].uri
    built = http.post(
        "/training-sets",
        json={
            "training_set_name": new_name("tie-set"),
            "entity_dataset_uri": uri,
            "entity_id_column": "customer_id",
            "entity_time_column": "at",
            "features": [f"{name}:orders"],
        },
    )
    assert built.status_code == 201, built.text

    online = http.get(f"/feature-groups/{name}/records/t1").json()["record"]["orders"]
    offline = http.get(f"/feature-groups/{name}/as-of", params={"ts": "2026-05-02T00:00:00Z"})
    training = read_dataset(store, built.json()["dataset_uri"]).column(f"{name}__orders")
    assert online == offline.json()["records"][0]["orders"] == training.to_pylist()[0] == 1


async def test_known_time_training_set_with_only_null_features_is_built(
    sqlite_fs: RunningService, store: ObjectStore
) -> None:
    name = new_name("unknown-yet")
    http = sqlite_fs.http
    http.post("/feature-groups", json=group_body(name)).raise_for_status()
    record = {"customer_id": "n1", "event_time": "2026-05-01T00:00:00+00:00", "spend_30d": 3.0}
    http.put(f"/feature-groups/{name}/records", json={"record": record}).raise_for_status()
    # Entity time before the record was written: as of known time, no value is known.
    entity = pa.table(
        {
            "customer_id": ["n1"],
            "at": pa.array([datetime(2026, 5, 2, tzinfo=UTC)], pa.timestamp("us", "UTC")),
        }
    )
    uri = write_dataset_version(store, new_name("null-entities"), entity)[0].uri

    answer = http.post(
        "/training-sets",
        json={
            "training_set_name": new_name("nulls"),
            "entity_dataset_uri": uri,
            "entity_id_column": "customer_id",
            "entity_time_column": "at",
            "features": [f"{name}:spend_30d", f"{name}:orders"],
            "as_of_known_time": True,
        },
    )

    assert answer.status_code == 201, answer.text
    table = read_dataset(store, answer.json()["dataset_uri"])
    assert table.column(f"{name}__spend_30d").to_pylist() == [None]


async def test_a_training_set_request_that_cannot_be_built_is_answered_on_the_bus(
    sqlite_fs: RunningService, kafka_bootstrap: str
) -> None:
    training_set = new_name("doomed")
    request = records_put("x", [{}]) | {"type": "TrainingSetRequested"}
    request["data"] = {
        "training_set_name": training_set,
        "entity_dataset_uri": "dataset://no-such-entities@1",
        "entity_id_column": "customer_id",
        "entity_time_column": "at",
        "features": ["no-such-group:orders"],
        "as_of_known_time": True,
    }
    topic = spec_for("TrainingSetRequested").topic
    await produce_raw(kafka_bootstrap, topic, training_set, signed_by(sqlite_fs.token, request))

    failed, _ = await first_message(
        kafka_bootstrap,
        spec_for("TrainingSetFailed").topic,
        lambda value, _: value["data"]["training_set_name"] == training_set,
    )

    assert failed["causation_id"] == request["event_id"]
    assert failed["data"]["code"] == "not_found"
