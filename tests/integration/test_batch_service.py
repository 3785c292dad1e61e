"""Batch transform on the real broker and S3 server: CSV and Parquet jobs complete with exact row
counts, a bad record lands in errors/ while the job completes, bad requests are refused, a
batch service killed mid-job loses and doubles nothing, and a job scored against a live endpoint
through a real gateway writes what the same job scored in the worker writes."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from cairn.contracts.events import VariantState
from cairn.contracts.state import EndpointStateView, ModelVersionView, read_state, write_state
from cairn.service import Service
from cairn.settings import CairnSettings
from cairn.store import ObjectStore

from services.batch.app import create_service
from services.batch.config import BatchSettings
from services.batch.pools import WORKER_GROUP
from services.gateway.app import create_service as create_gateway
from services.gateway.config import GatewaySettings
from tests.support.auth import scoped_headers
from tests.support.http_server import served_in_thread
from tests.support.tansu import unique_name
from tests.unit.test_batch_transform import csv_text, make_batch_model

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def batch_settings(kafka_settings: CairnSettings, s3_settings: CairnSettings) -> CairnSettings:
    return settings_for(kafka_settings, s3_settings)


def settings_for(kafka_settings: CairnSettings, s3_settings: CairnSettings) -> CairnSettings:
    """The test's broker and home with the class's S3 bucket as the store."""
    return kafka_settings.model_copy(
        update={
            "store_url": s3_settings.store_url,
            "s3_endpoint": s3_settings.s3_endpoint,
            "s3_access_key": s3_settings.s3_access_key,
            "s3_secret_key": s3_settings.s3_secret_key,
        }
    )


def config(**overrides: Any) -> BatchSettings:
    return BatchSettings(worker_id="it-batch", predict_threads=1, **overrides)


@contextlib.asynccontextmanager
async def running(settings: CairnSettings, store: ObjectStore, **kw: Any) -> AsyncIterator[Service]:
    service = create_service(settings, store, config(**kw))
    async with service.api.router.lifespan_context(service.api):
        yield service


@pytest.fixture
async def batch(batch_settings: CairnSettings, s3_store: ObjectStore) -> AsyncIterator[Service]:
    async with running(batch_settings, s3_store) as service:
        yield service


@pytest.fixture(scope="class")
def registered_model(s3_store: ObjectStore) -> tuple[str, int]:
    return register_model(s3_store)


def register_model(s3_store: ObjectStore) -> tuple[str, int]:
    """A model version as the registry declares it: (group, version)."""
    group = unique_name("batchmodel")
    uri = make_batch_model(s3_store, f"models/{group}/1/")
    view = ModelVersionView(
        model_package_group=group, version=1, artifact_uri=uri, approval_status="Approved"
    )
    write_state(s3_store, view, group, "1")
    return group, 1


def http(service: Service, *, endpoints: list[str] | None = None) -> httpx.AsyncClient:
    """A client of the batch API; with `endpoints`, its key may also invoke those."""
    scopes: list[Any] = ["deploy", "read"] + (["invoke"] if endpoints else [])
    headers = scoped_headers(service.store, service.settings, scopes, endpoints=endpoints)
    transport = httpx.ASGITransport(app=service.api)
    return httpx.AsyncClient(transport=transport, base_url="http://batch", headers=headers)


def body(name: str, model: tuple[str, int], source: str, output: str, **kw: Any) -> dict[str, Any]:
    return {
        "job_name": name,
        "model_package_group": model[0],
        "model_version": model[1],
        "transform_input": {"data_source": source, "content_type": "text/csv"},
        "transform_output": {"output_path": output},
        "data_processing": {"input_filter": "$[1:]", "join_source": "Input"},
        **kw,
    }


async def finished(client: httpx.AsyncClient, name: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = (await client.get(f"/transform-jobs/{name}")).json()
        if job.get("status") in ("Completed", "Failed", "Stopped"):
            return dict(job)
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {name} did not finish: {job}")


def ids_of(text: bytes) -> list[str]:
    return [line.split(b",", 1)[0].decode() for line in text.splitlines() if line]


class TestBatchService:
    async def test_a_csv_job_completes_and_a_bad_record_lands_in_errors(
        self, batch: Service, s3_store: ObjectStore, registered_model: tuple[str, int]
    ) -> None:
        prefix = f"data/{unique_name('bcsv')}"
        first, second = csv_text(300, 0), csv_text(200, 300)
        cut = first.index(b"\n", 200) + 1
        s3_store.put_bytes(f"{prefix}/a.csv", first[:cut] + b"id-bad,1.0,nope,2.0\n" + first[cut:])
        s3_store.put_bytes(f"{prefix}/sub/b.csv", second)
        name, output = unique_name("bjob"), f"outputs/{unique_name('bout')}"
        async with http(batch) as client:
            created = await client.post(
                "/transform-jobs",
                json=body(
                    name,
                    registered_model,
                    prefix,
                    output,
                    max_failed_records=1,
                    shard_size_mb=0.002,
                ),
            )
            assert created.status_code == 202, created.text
            job = await finished(client, name)
        assert job["status"] == "Completed", (job["failure_reason"], job["records_failed"])
        assert (job["records_in"], job["records_out"], job["records_failed"]) == (501, 500, 1)
        assert job["shards_total"] > 4  # one file shared by several shards
        out_a = s3_store.get_bytes(f"{output}/a.csv.out")
        assert ids_of(out_a) == [f"id-{i}" for i in range(300)]
        assert ids_of(s3_store.get_bytes(f"{output}/sub/b.csv.out")) == [
            f"id-{i}" for i in range(300, 500)
        ]
        errors = [s3_store.get_bytes(info.key) for info in s3_store.list(f"{output}/errors/")]
        assert (
            len(errors) == 1 and b"id-bad" in errors[0] and b"'nope' is not a number" in errors[0]
        )
        assert b'"byte_offset"' in errors[0]
        assert s3_store.exists(f"{output}/manifest.json")

    async def test_a_parquet_job_completes_with_exact_row_counts(
        self, batch: Service, s3_store: ObjectStore, registered_model: tuple[str, int]
    ) -> None:
        prefix = f"data/{unique_name('bpq')}"
        rng = np.random.default_rng(1)
        table = pa.table(
            {"id": list(range(1000)), **{f: rng.normal(size=1000) for f in ("f0", "f1", "f2")}}
        )
        sink = io.BytesIO()
        pq.write_table(table, sink, row_group_size=100)
        s3_store.put_bytes(f"{prefix}/rows.parquet", sink.getvalue())
        name, output = unique_name("bjob"), f"outputs/{unique_name('bout')}"
        request = body(
            name, registered_model, f"{prefix}/rows.parquet", output, shard_size_mb=0.002
        ) | {
            "transform_input": {
                "data_source": f"{prefix}/rows.parquet",
                "content_type": "application/x-parquet",
            },
            "data_processing": {"join_source": "Input", "output_filter": "$['id','probability']"},
        }
        async with http(batch) as client:
            assert (await client.post("/transform-jobs", json=request)).status_code == 202
            job = await finished(client, name)
        assert job["status"] == "Completed" and job["records_out"] == 1000, job
        out = pq.read_table(io.BytesIO(s3_store.get_bytes(f"{output}/rows.parquet.out")))
        assert out.column_names == ["id", "probability"]
        assert out.column("id").to_pylist() == list(range(1000))

    async def test_bad_requests_get_a_clear_answer_before_anything_runs(
        self, batch: Service, s3_store: ObjectStore, registered_model: tuple[str, int]
    ) -> None:
        empty = f"data/{unique_name('empty')}"
        output = f"outputs/{unique_name('bout')}"
        async with http(batch) as client:
            unknown = body("x1", (registered_model[0], 99), empty, output)
            answer = await client.post("/transform-jobs", json=unknown)
            assert answer.status_code == 404 and "is not registered" in answer.json()["error"]
            answer = await client.post(
                "/transform-jobs", json=body("x2", registered_model, empty, output)
            )
            assert (
                answer.status_code == 400
                and "transform_input.data_source" in answer.json()["error"]
            )
            escape = body("x3", registered_model, "data/../batch/jobs", output)
            answer = await client.post("/transform-jobs", json=escape)
            assert (
                answer.status_code == 400
                and "transform_input.data_source" in answer.json()["error"]
            )
            assert (await client.get("/transform-jobs/x2")).status_code == 404

    async def test_a_worker_killed_mid_job_loses_and_doubles_nothing(
        self,
        batch: Service,
        batch_settings: CairnSettings,
        s3_store: ObjectStore,
        registered_model: tuple[str, int],
    ) -> None:
        prefix = f"data/{unique_name('bkill')}"
        rows = 3000
        s3_store.put_bytes(f"{prefix}/big.csv", csv_text(rows))
        name, output = unique_name("bjob"), f"outputs/{unique_name('bout')}"
        request = body(
            name,
            registered_model,
            prefix,
            output,
            shard_size_mb=0.005,
            batch_strategy="SingleRecord",
        )
        worker = spawn_worker(batch_settings)
        try:
            await joined_group(batch_settings)
            async with http(batch) as client:
                assert (await client.post("/transform-jobs", json=request)).status_code == 202
                deadline = time.monotonic() + 60
                while not any(
                    b'"doomed"' in s3_store.get_bytes(i.key)
                    for i in s3_store.list(f"batch/jobs/{name}/shards/")
                ):
                    assert time.monotonic() < deadline, "the worker process took no shard"
                    assert worker.poll() is None, worker.stdout.read() if worker.stdout else ""
                    await asyncio.sleep(0.05)
                os.kill(worker.pid, signal.SIGKILL)  # mid-job, probably mid-shard
                job = await finished(client, name, timeout_s=120)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
            worker.wait()
        assert job["status"] == "Completed", job
        ids = ids_of(s3_store.get_bytes(f"{output}/big.csv.out"))
        expected = [f"id-{i}" for i in range(rows)]
        assert len(ids) == rows and ids == expected  # in input order, each exactly once
        assert job["records_in"] == rows == job["records_out"]

    async def test_a_job_against_a_live_endpoint_writes_what_the_job_in_the_worker_writes(
        self,
        batch_settings: CairnSettings,
        s3_store: ObjectStore,
        registered_model: tuple[str, int],
    ) -> None:
        endpoint = unique_name("live")
        deploy(s3_store, endpoint, registered_model)
        prefix = f"data/{unique_name('bep')}"
        rows = csv_text(400)
        cut = rows.index(b"\n", 3000) + 1
        s3_store.put_bytes(f"{prefix}/in.csv", rows[:cut] + b"id-bad,1.0,nope,2.0\n" + rows[cut:])
        gateway = create_gateway(batch_settings, s3_store, GatewaySettings(capture_sample_rate=0))
        with served_in_thread(gateway.asgi, "the gateway") as gateway_url:
            async with running(batch_settings, s3_store, gateway_url=gateway_url) as batch:
                outputs = {}
                for mode in ("worker", "endpoint"):
                    name, output = unique_name(f"b{mode}"), f"outputs/{unique_name('bout')}"
                    request = body(
                        name, registered_model, prefix, output,
                        max_failed_records=1, shard_size_mb=0.004, max_concurrent_transforms=2,
                    )  # fmt: skip
                    if mode == "endpoint":
                        del request["model_package_group"], request["model_version"]
                        request["endpoint_name"] = endpoint
                    async with http(batch, endpoints=[endpoint]) as client:
                        created = await client.post("/transform-jobs", json=request)
                        assert created.status_code == 202, created.text
                        job = await finished(client, name)
                    assert job["status"] == "Completed", job
                    assert (job["records_out"], job["records_failed"]) == (400, 1)
                    errors = [s3_store.get_bytes(i.key) for i in s3_store.list(f"{output}/errors/")]
                    assert len(errors) == 1 and b"nope" in errors[0]
                    outputs[mode] = s3_store.get_bytes(f"{output}/in.csv.out")
            async with httpx.AsyncClient() as plain:
                metrics = (await plain.get(f"{gateway_url}/metrics")).text
        answered = {
            outcome: invocations(metrics, endpoint, outcome) for outcome in ("ok", "client_error")
        }
        assert answered["ok"] >= 2 and answered["client_error"] >= 2  # the batch, then the record
        assert job["endpoint_name"] == endpoint and job["model_uri"] is None
        assert ids_of(outputs["endpoint"]) == [f"id-{i}" for i in range(400)]
        assert outputs["endpoint"] == outputs["worker"]  # the same bytes, record for record


def invocations(metrics: str, endpoint: str, outcome: str) -> float:
    """The gateway's count of invocations of `endpoint` with `outcome`, from /metrics."""
    labels = f'endpoint="{endpoint}",outcome="{outcome}",variant="blue"'
    for line in metrics.splitlines():
        if line.startswith("cairn_gateway_invocations_total{") and _labels(line) == labels:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _labels(line: str) -> str:
    return ",".join(sorted(line[line.index("{") + 1 : line.index("}")].split(",")))


def deploy(store: ObjectStore, endpoint: str, model: tuple[str, int]) -> None:
    """The deployer's declared state of an endpoint serving the model (what a gateway loads)."""
    version = read_state(store, ModelVersionView, model[0], str(model[1]))
    assert version is not None
    variant = VariantState(
        variant_name="blue",
        model_package_group=model[0],
        model_version=model[1],
        artifact_uri=version.artifact_uri,
        weight=1.0,
        instance_count=1,
    )
    state = EndpointStateView(
        endpoint_name=endpoint, revision=1, status="InService", production_variants=[variant]
    )
    write_state(store, state, endpoint)


def spawn_worker(settings: CairnSettings) -> subprocess.Popen[bytes]:
    """`python -m services.batch` as a pool worker, as the autoscaler starts one."""
    env = dict(os.environ) | {
        "PYTHONPATH": str(REPO),
        "CAIRN_BATCH_ROLE": "worker",
        "CAIRN_BATCH_WORKER_ID": "doomed",
        "CAIRN_BATCH_PREDICT_THREADS": "1",
        "CAIRN_HTTP_PORT": "0",
        "CAIRN_HOME": str(settings.home),
        "CAIRN_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "CAIRN_STORE_URL": settings.store_url or "",
        "CAIRN_S3_ENDPOINT": settings.s3_endpoint or "",
        "CAIRN_S3_ACCESS_KEY": settings.s3_access_key or "",
        "CAIRN_S3_SECRET_KEY": settings.s3_secret_key.get_secret_value()
        if settings.s3_secret_key
        else "",
        "CAIRN_BUS_SESSION_TIMEOUT_MS": "1000",
        "CAIRN_BUS_HEARTBEAT_INTERVAL_MS": "100",
        "CAIRN_OTEL_EXPORTER": "none",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services.batch"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def joined_group(settings: CairnSettings, members: int = 2, timeout_s: float = 60) -> None:
    """Wait until the worker group has `members` members (the process joined)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            described = await admin.describe_consumer_groups([WORKER_GROUP])
            groups = described[0].groups if described else []
            if groups and len(groups[0][5]) >= members:  # (error, id, state, ..., members)
                return
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    raise AssertionError(f"{WORKER_GROUP} never had {members} members")
