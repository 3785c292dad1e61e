"""Feature store service benchmark: `python bench/featurestore_http.py [--gets N] [--events N]`.

Starts Tansu, redis-server and, per online adapter (SQLite, Redis), the real service as its own
process (`python -m services.featurestore`, uvicorn, file store). Then:

1. GetRecord over HTTP: 100k records of 10 features loaded straight into the online store, then
   N sequential GETs of random ids on one keep-alive connection (stdlib http.client, whose own
   cost is ~0.1 ms; httpx adds ~0.4 ms more per call); p50/p99/max in ms. The same
   read through the service's handler in this process is timed too.
2. Streaming ingestion: FeatureRecordsPut events of 500 records sent by a plain aiokafka producer;
   records/s from the first send until every record is in the online store and every event has its
   FeatureIngestionCompleted (so the offline Parquet is written too).

Goal (issue 6): GetRecord p99 under 2 ms over HTTP and under 1 ms in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support and services

from cairn.auth.bootstrap import ensure_admin_credential
from cairn.contracts.catalogue import spec_for
from cairn.runtime.broker import EmbeddedBroker, free_port
from cairn.settings import CairnSettings
from cairn.store import open_store

from services.featurestore import operations
from services.featurestore.offline import OfflineStore
from services.featurestore.online import OnlineRecord, open_online_store
from services.featurestore.operations import FeatureStore
from tests.support.redis_server import running_redis_server

T0 = datetime(2026, 11, 1, tzinfo=UTC)
RECORDS = 100_000
GROUP = "customers"
FEATURES = [
    ("age", "Integral"),
    ("balance", "Fractional"),
    ("segment", "String"),
    ("active", "Boolean"),
    ("orders_30d", "Integral"),
    ("avg_basket", "Fractional"),
    ("country", "String"),
    ("churn_score", "Fractional"),
]


def group_body(name: str) -> dict[str, Any]:
    definitions = [{"name": "customer_id", "type": "String"}, {"name": "ts", "type": "Timestamp"}]
    definitions += [{"name": feature, "type": kind} for feature, kind in FEATURES]
    return {
        "feature_group_name": name,
        "record_identifier_feature_name": "customer_id",
        "event_time_feature_name": "ts",
        "feature_definitions": definitions,
    }


def record(index: int, rng: random.Random, when: datetime) -> dict[str, Any]:
    return {
        "customer_id": f"c-{index}",
        "ts": when.isoformat(),
        "age": rng.randint(18, 90),
        "balance": rng.random() * 10_000,
        "segment": rng.choice(["gold", "silver", "bronze"]),
        "active": rng.random() < 0.8,
        "orders_30d": rng.randint(0, 40),
        "avg_basket": rng.random() * 200,
        "country": rng.choice(["CH", "DE", "FR", "IT"]),
        "churn_score": rng.random(),
    }


def percentiles(latencies_ms: list[float]) -> dict[str, float]:
    ordered = sorted(latencies_ms)
    return {
        "p50": statistics.median(ordered),
        "p99": ordered[int(len(ordered) * 0.99) - 1],
        "max": ordered[-1],
    }


@contextmanager
def service_process(
    home: Path, store_url: str, bootstrap: str, online_url: str
) -> Iterator[tuple[str, dict[str, str]]]:
    """The feature store as its own process; yields its base URL and an admin's headers."""
    token = ensure_admin_credential(CairnSettings(home=home), open_store(store_url))
    headers = {"Authorization": f"Bearer {token}"}
    port = free_port()
    env = os.environ | {
        "CAIRN_HOME": str(home),
        "CAIRN_HTTP_PORT": str(port),
        "CAIRN_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "CAIRN_STORE_URL": store_url,
        "CAIRN_FEATURESTORE_ONLINE_URL": online_url,
        "CAIRN_FEATURESTORE_CONSUMER_GROUP": f"bench-{uuid.uuid4().hex[:8]}",
        "CAIRN_OTEL_EXPORTER": "none",
        "CAIRN_LOG_LEVEL": "WARNING",
    }
    log = (home / "service.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "services.featurestore"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[1],
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"service did not start; see {home / 'service.log'}")
            time.sleep(0.1)
        yield url, headers
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def bench_gets(
    url: str, headers: dict[str, str], online_url: str, store_url: str, home: Path, gets: int
) -> list[Any]:
    """GetRecord latency over HTTP (credential checked) and through the operation in-process."""
    name = f"{GROUP}-{uuid.uuid4().hex[:6]}"
    httpx.post(f"{url}/feature-groups", json=group_body(name), headers=headers).raise_for_status()
    rng = random.Random(7)
    with open_online_store(online_url) as online:
        online.put_many(
            name,
            (OnlineRecord(f"c-{i}", T0, record(i, rng, T0)) for i in range(RECORDS)),
        )
    ids = [f"c-{rng.randrange(RECORDS)}" for _ in range(gets)]
    rows = []
    parts = urlsplit(url)
    client = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port)
    latencies = []
    for number, record_id in enumerate([*ids[:500], *ids]):
        before = time.perf_counter()
        client.request("GET", f"/feature-groups/{name}/records/{record_id}", headers=headers)
        answer = client.getresponse()
        answer.read()
        if number >= 500:  # the first 500 warm the connection and the group cache
            latencies.append((time.perf_counter() - before) * 1000)
        assert answer.status == 200
    client.close()
    rows.append(("HTTP", percentiles(latencies)))
    store = open_store(store_url)
    with open_online_store(online_url) as online:
        fs = FeatureStore(store, online, OfflineStore(store, cache_dir=home / "cache"))
        operations.get_record(fs, name, ids[0], None)
        latencies = []
        for record_id in ids:
            before = time.perf_counter()
            operations.get_record(fs, name, record_id, None)
            latencies.append((time.perf_counter() - before) * 1000)
        rows.append(("in-process", percentiles(latencies)))
    return rows


async def bench_streaming(
    url: str, headers: dict[str, str], bootstrap: str, events: int, per_event: int
) -> float:
    """Records/s from FeatureRecordsPut events into the online and offline stores."""
    name = f"stream-{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(headers=headers) as client:
        (await client.post(f"{url}/feature-groups", json=group_body(name))).raise_for_status()
    rng = random.Random(11)
    payloads = []
    for number in range(events):
        when = T0 + timedelta(minutes=number)
        batch = [record(number * per_event + i, rng, when) for i in range(per_event)]
        envelope = {
            "event_id": str(uuid.uuid4()),
            "type": "FeatureRecordsPut",
            "occurred_at": datetime.now(UTC).isoformat(),
            "source": "bench",
            "correlation_id": name,
            "data": {"feature_group_name": name, "records": batch},
        }
        payloads.append(json.dumps(envelope).encode())
    completed_topic = spec_for("FeatureIngestionCompleted").topic
    consumer = AIOKafkaConsumer(
        completed_topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="latest"
    )
    await consumer.start()
    await consumer.seek_to_end()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=16 * 1024 * 1024)
    await producer.start()
    topic = spec_for("FeatureRecordsPut").topic
    started = time.perf_counter()
    for index, payload in enumerate(payloads):
        # Keyed by event, so the events spread over the topic's partitions.
        await producer.send(topic, payload, key=f"{name}-{index}".encode())
    await producer.flush()
    seen = 0
    async with asyncio.timeout(600):
        async for message in consumer:
            data = json.loads(message.value or b"{}").get("data", {})
            if data.get("feature_group_name") == name:
                seen += 1
                if seen == events:
                    break
    elapsed = time.perf_counter() - started
    await producer.stop()
    await consumer.stop()
    return events * per_event / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gets", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--per-event", type=int, default=500)
    args = parser.parse_args()
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cairn-fs-bench-")))
        redis_url = stack.enter_context(running_redis_server())
        results = []
        for adapter, online_url in (
            ("sqlite", f"sqlite:///{scratch / 'online.db'}"),
            ("redis", redis_url),
        ):
            home = scratch / adapter
            home.mkdir()
            # A broker per run, so no consumer group meets the other run's events.
            broker = EmbeddedBroker(log_path=home / "tansu.log")
            broker.start()
            stack.callback(broker.stop)
            store_url = (home / "store").as_uri()
            bootstrap = broker.bootstrap_servers
            with service_process(home, store_url, bootstrap, online_url) as (url, headers):
                for mode, stats in bench_gets(url, headers, online_url, store_url, home, args.gets):
                    results.append((adapter, f"GetRecord {mode}", stats))
                rate = asyncio.run(
                    bench_streaming(url, headers, bootstrap, args.events, args.per_event)
                )
                results.append((adapter, "streaming ingest", {"records/s": rate}))
    print(f"{'adapter':8} {'measure':22} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'rec/s':>10}")
    for adapter, measure, stats in results:
        if "records/s" in stats:
            print(f"{adapter:8} {measure:22} {'':>8} {'':>8} {'':>8} {stats['records/s']:>10,.0f}")
        else:
            print(
                f"{adapter:8} {measure:22} {stats['p50']:>8.3f} {stats['p99']:>8.3f} "
                f"{stats['max']:>8.3f} {'':>10}"
            )


if __name__ == "__main__":
    main()
