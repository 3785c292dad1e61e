"""Training beyond one process, on the real broker and S3 server: two Dask workers, Pipe mode,
a trainer killed mid-job that resumes from its checkpoint, script mode's multi-host environment,
GPU jobs routed to the GPU pool, and the 400s for what cannot run."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from aiokafka import AIOKafkaConsumer
from cairn.artifacts import load_model
from cairn.bus import EventProducer
from cairn.bus.lag import existing_partitions
from cairn.bus.publish import Signer
from cairn.contracts import spec_for
from cairn.contracts.events import TrainingJobRequested
from cairn.service import Service
from cairn.settings import CairnSettings
from cairn.store import ObjectStore

from services.trainer.app import create_service
from services.trainer.config import TrainerSettings
from tests.integration.test_trainer_service import events_for, http, producer
from tests.support.auth import token_for
from tests.support.tansu import unique_name
from tests.support.trainer_data import credit_frame, to_csv_bytes

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
FINISHED = {"TrainingJobCompleted", "TrainingJobFailed"}


def store_settings(kafka: CairnSettings, s3: CairnSettings) -> CairnSettings:
    return kafka.model_copy(
        update={
            "store_url": s3.store_url,
            "s3_endpoint": s3.s3_endpoint,
            "s3_access_key": s3.s3_access_key,
            "s3_secret_key": s3.s3_secret_key,
        }
    )


@contextlib.asynccontextmanager
async def running(
    settings: CairnSettings, store: ObjectStore, **config: Any
) -> AsyncIterator[Service]:
    options = {"worker_id": "it-scale", "heartbeat_s": 0.2, "max_instance_count": 2} | config
    service = create_service(settings, store, TrainerSettings(**options))
    async with service.api.router.lifespan_context(service.api):
        yield service


@pytest.fixture
async def trainer(
    kafka_settings: CairnSettings, s3_settings: CairnSettings, s3_store: ObjectStore
) -> AsyncIterator[Service]:
    async with running(store_settings(kafka_settings, s3_settings), s3_store) as service:
        yield service


def numeric_parquet(rows: int, features: int = 8, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype("float32")
    label = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.5, size=rows) > 0).astype("int64")
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(features)])
    frame.insert(0, "label", label)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, row_group_size=max(1, rows // 4))
    return buffer.getvalue()


def request(name: str, uri: str, **overrides: Any) -> TrainingJobRequested:
    fields: dict[str, Any] = {
        "job_name": name,
        "algorithm": "xgboost",
        "hyperparameters": {"num_round": 10, "max_depth": 3},
        "input_channels": [{"name": "train", "uri": uri, "content_type": "application/x-parquet"}],
    }
    return TrainingJobRequested.model_validate(fields | overrides)


def user_producer(settings: CairnSettings, store: ObjectStore) -> EventProducer:
    key_id, secret = token_for(store, settings, ["train"]).split(":", 1)
    return EventProducer(settings, source="test", signer=Signer(key_id, secret))


async def handed_on(settings: CairnSettings, job_name: str, timeout_s: float = 60) -> None:
    """Wait for the job's `GpuTrainingJobRequested` (a CPU worker passed it to the GPU pool)."""
    topic = spec_for("GpuTrainingJobRequested").topic
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            partitions = await existing_partitions(consumer, [topic])
            if partitions and set(partitions) != consumer.assignment():
                consumer.assign(partitions)
                await consumer.seek_to_beginning(*partitions)
            batch = await consumer.getmany(timeout_ms=200) if consumer.assignment() else {}
            for records in batch.values():
                if any(json.loads(r.value)["data"]["job_name"] == job_name for r in records):
                    return
            await asyncio.sleep(0.05)
    finally:
        await consumer.stop()
    raise AssertionError(f"{job_name} was never handed to the GPU pool")


async def completed(settings: CairnSettings, name: str, timeout_s: float = 90) -> dict[str, Any]:
    events = await events_for(settings, name, FINISHED, timeout_s=timeout_s)
    done = next(e for e in events if e["type"] in FINISHED)
    assert done["type"] == "TrainingJobCompleted", done
    return dict(done["data"])


async def test_two_dask_workers_train_a_servable_package(
    trainer: Service, kafka_settings: CairnSettings, s3_store: ObjectStore
) -> None:
    uri = f"data/{unique_name('dask')}/train.parquet"
    s3_store.put_bytes(uri, numeric_parquet(3000))
    name = unique_name("dask")
    body = request(name, uri, resources={"instance_count": 2})
    async with http(trainer) as client:
        created = await client.post("/training-jobs", json=body.model_dump(mode="json"))
        assert created.status_code == 202, created.text
    done = await completed(kafka_settings, name, timeout_s=150)
    model = load_model(s3_store, done["artifact_uri"])
    assert model.manifest.details["instance_count"] == 2
    assert model.predict(model.encode_rows([[0.5] * 8])).shape == (1,)
    assert done["metrics"]["train:auc"] > 0.8
    job = json.loads(s3_store.get_bytes(f"trainer/jobs/{name}.json"))
    assert job["attempts"][0]["instance_count"] == 2


async def test_pipe_mode_streams_the_channel_and_scores_like_file_mode(
    trainer: Service, kafka_settings: CairnSettings, s3_store: ObjectStore
) -> None:
    uri = f"data/{unique_name('pipe')}/train.parquet"
    s3_store.put_bytes(uri, numeric_parquet(2000))
    pipe, whole = unique_name("pipe"), unique_name("file")
    async with producer(trainer) as user:
        await user.publish(request(pipe, uri, input_mode="Pipe"))
        await user.publish(request(whole, uri))
    streamed = await completed(kafka_settings, pipe)
    read_whole = await completed(kafka_settings, whole)
    model = load_model(s3_store, streamed["artifact_uri"])
    assert model.manifest.details["input_mode"] == "Pipe"
    assert model.predict(model.encode_rows([[0.5] * 8])).shape == (1,)
    assert streamed["metrics"] == pytest.approx(read_whole["metrics"], rel=1e-6)


async def test_bad_scale_out_requests_are_400s_naming_the_field(
    trainer: Service, s3_store: ObjectStore
) -> None:
    uri = f"data/{unique_name('bad')}/train.parquet"
    s3_store.put_bytes(uri, numeric_parquet(100))
    owned = f"outputs/{unique_name('ckpt')}"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"resources": {"instance_count": 3}}, "resources.instance_count"),
        ({"algorithm": "kmeans", "input_mode": "Pipe"}, "input_mode"),
        ({"algorithm": "kmeans", "resources": {"instance_count": 2}}, "resources.instance_count"),
        ({"checkpoint_config": {"uri": "trainer/jobs"}}, "checkpoint_config.uri"),
        (
            {"stopping_condition": {"max_runtime_s": 60, "max_wait_time_s": 30}},
            "stopping_condition.max_wait_time_s",
        ),
    ]
    async with http(trainer) as client:
        for overrides, field in cases:
            name = unique_name("bad")
            body = request(name, uri, **overrides).model_dump(mode="json")
            answer = await client.post("/training-jobs", json=body)
            assert answer.status_code == 400, (overrides, answer.text)
            assert field in answer.json()["error"], answer.json()
            assert (await client.get(f"/training-jobs/{name}")).status_code == 404
        first = request(unique_name("own"), uri, checkpoint_config={"uri": owned})
        taken = request(unique_name("thief"), uri, checkpoint_config={"uri": owned})
        assert (
            await client.post("/training-jobs", json=first.model_dump(mode="json"))
        ).status_code == 202
        answer = await client.post("/training-jobs", json=taken.model_dump(mode="json"))
        assert answer.status_code == 400 and first.job_name in answer.json()["error"]
        assert "checkpoint_config.uri" in answer.json()["error"]
        zero = request(unique_name("zero"), uri).model_dump(mode="json")
        zero["resources"] = {"instance_count": 0}
        answer = await client.post("/training-jobs", json=zero)
        assert answer.status_code == 400 and "instance_count" in answer.json()["error"]


SCRIPT_PEERS = b"""
import json, os, socket, sys, time
hosts = json.loads(os.environ["SM_HOSTS"])
me = os.environ["SM_CURRENT_HOST"]
config = json.load(open(os.path.join(os.environ["SM_INPUT_CONFIG_DIR"], "resourceconfig.json")))
assert config["current_host"] == me and config["hosts"] == hosts, config
ckpt = os.environ["SM_CHECKPOINT_DIR"]
if me == hosts[0]:
    server = socket.create_server((me, 29511))
    server.settimeout(60)
    peers = []
    for _ in hosts[1:]:
        conn, _ = server.accept()
        peers.append(conn.recv(100).decode())
    open(os.path.join(ckpt, "state.json"), "w").write(json.dumps({"peers": peers}))
    result = {"hosts": hosts, "peers": peers, "gpus": os.environ["SM_NUM_GPUS"]}
    open(os.path.join(os.environ["SM_MODEL_DIR"], "peers.json"), "w").write(json.dumps(result))
else:
    deadline = time.time() + 60
    while True:
        try:
            conn = socket.create_connection((hosts[0], 29511), timeout=5)
            break
        except OSError:
            assert time.time() < deadline
            time.sleep(0.1)
    conn.sendall(me.encode())
"""

SCRIPT_PIPE = b"""
import os
fifo = os.environ["SM_CHANNEL_TRAIN"] + "_0"
size = 0
with open(fifo, "rb") as stream:
    while block := stream.read(65536):
        size += len(block)
open(os.path.join(os.environ["SM_MODEL_DIR"], "size.txt"), "w").write(str(size))
"""


async def test_script_hosts_find_their_peers_and_pipe_channels_stream(
    trainer: Service, kafka_settings: CairnSettings, s3_store: ObjectStore
) -> None:
    prefix = f"data/{unique_name('sm')}"
    data = to_csv_bytes(credit_frame(200))
    s3_store.put_bytes(f"{prefix}/train.csv", data)
    peers_code, pipe_code = f"code/{unique_name('peers')}.py", f"code/{unique_name('pipe')}.py"
    s3_store.put_bytes(peers_code, SCRIPT_PEERS)
    s3_store.put_bytes(pipe_code, SCRIPT_PIPE)
    ckpt = f"outputs/{unique_name('smckpt')}"
    channel = [{"name": "train", "uri": f"{prefix}/train.csv"}]
    hosts, piped = unique_name("hosts"), unique_name("piped")
    async with producer(trainer) as user:
        common = {"algorithm": "script", "input_channels": channel}
        await user.publish(
            TrainingJobRequested.model_validate(
                common
                | {
                    "job_name": hosts,
                    "entry_point": peers_code,
                    "resources": {"instance_count": 2},
                    "checkpoint_config": {"uri": ckpt},
                }
            )
        )
        await user.publish(
            TrainingJobRequested.model_validate(
                common | {"job_name": piped, "entry_point": pipe_code, "input_mode": "Pipe"}
            )
        )
    done = await completed(kafka_settings, hosts)
    found = json.loads(s3_store.get_bytes(done["artifact_uri"] + "peers.json"))
    assert found == {"hosts": ["127.0.0.1", "127.0.0.2"], "peers": ["127.0.0.2"], "gpus": "0"}
    assert json.loads(s3_store.get_bytes(f"{ckpt}/state.json")) == {"peers": ["127.0.0.2"]}
    streamed = await completed(kafka_settings, piped)
    assert s3_store.get_bytes(streamed["artifact_uri"] + "size.txt") == str(len(data)).encode()


async def test_a_gpu_job_goes_to_the_gpu_pool_and_never_to_a_cpu_worker(
    kafka_settings: CairnSettings, s3_settings: CairnSettings, s3_store: ObjectStore
) -> None:
    settings = store_settings(kafka_settings, s3_settings)
    uri = f"data/{unique_name('gpu')}/train.parquet"
    s3_store.put_bytes(uri, numeric_parquet(300))
    gpu_job, fallback = unique_name("gpu"), unique_name("fallback")
    async with running(settings, s3_store, worker_id="cpu-worker", device="cpu") as cpu:
        async with producer(cpu) as user:
            await user.publish(request(gpu_job, uri, resources={"device": "gpu"}))
            await user.publish(
                request(fallback, uri, resources={"device": "gpu", "allow_cpu_fallback": True})
            )
        await completed(kafka_settings, fallback)
        await handed_on(kafka_settings, gpu_job)
        # Handed on, not trained: no worker has claimed it while only the CPU worker runs.
        assert not s3_store.exists(f"trainer/jobs/{gpu_job}.json")
        async with running(settings, s3_store, worker_id="gpu-worker", device="gpu"):
            await completed(kafka_settings, gpu_job)
    jobs = {
        name: json.loads(s3_store.get_bytes(f"trainer/jobs/{name}.json"))
        for name in (gpu_job, fallback)
    }
    assert jobs[gpu_job]["worker_id"] == "gpu-worker"
    assert jobs[fallback]["worker_id"] == "cpu-worker"


def spawn_trainer(settings: CairnSettings, worker_id: str) -> subprocess.Popen[bytes]:
    """`python -m services.trainer` as a pool worker, as the autoscaler starts one."""
    secret = settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else ""
    env = dict(os.environ) | {
        "PYTHONPATH": str(REPO),
        "CAIRN_TRAINER_WORKER_ID": worker_id,
        "CAIRN_TRAINER_HEARTBEAT_S": "0.2",
        "CAIRN_HTTP_PORT": "0",
        "CAIRN_HOME": str(settings.home),
        "CAIRN_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "CAIRN_STORE_URL": settings.store_url or "",
        "CAIRN_S3_ENDPOINT": settings.s3_endpoint or "",
        "CAIRN_S3_ACCESS_KEY": settings.s3_access_key or "",
        "CAIRN_S3_SECRET_KEY": secret,
        "CAIRN_BUS_SESSION_TIMEOUT_MS": "1000",
        "CAIRN_BUS_HEARTBEAT_INTERVAL_MS": "100",
        "CAIRN_OTEL_EXPORTER": "none",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services.trainer"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def until(condition: Callable[[], Any], what: str, timeout_s: float = 90) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (found := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return found


def checkpoint_rounds(store: ObjectStore, prefix: str) -> list[int]:
    keys = [info.key for info in store.list(prefix + "/")]
    return sorted(int(key.rsplit(".", 2)[-2]) for key in keys if "xgboost-checkpoint" in key)


async def test_a_trainer_killed_mid_job_is_resumed_from_its_checkpoint(
    kafka_settings: CairnSettings, s3_settings: CairnSettings, s3_store: ObjectStore
) -> None:
    settings = store_settings(kafka_settings, s3_settings)
    uri = f"data/{unique_name('spot')}/train.parquet"
    s3_store.put_bytes(uri, numeric_parquet(10_000, features=16))
    name, ckpt = unique_name("spot"), f"outputs/{unique_name('spotckpt')}"
    total = 120
    job = request(
        name,
        uri,
        hyperparameters={"num_round": total, "max_depth": 6},
        checkpoint_config={"uri": ckpt, "interval_rounds": 10},
    )
    doomed = spawn_trainer(settings, "doomed")
    try:
        async with user_producer(settings, s3_store) as user:
            await user.publish(job)
        reached = await until(
            lambda: [r for r in checkpoint_rounds(s3_store, ckpt) if r >= 20] or doomed.poll(),
            "the doomed worker's checkpoint of round 20",
        )
        assert isinstance(reached, list), doomed.stdout.read() if doomed.stdout else ""
        os.kill(doomed.pid, signal.SIGKILL)  # a pre-empted spot instance
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait()
    killed_at = max(checkpoint_rounds(s3_store, ckpt))
    assert killed_at < total
    async with running(settings, s3_store, worker_id="rescuer", lease_s=1.0):
        done = await completed(kafka_settings, name, timeout_s=120)
    described = json.loads(s3_store.get_bytes(f"trainer/jobs/{name}.json"))
    first, second = described["attempts"]
    assert (first["worker_id"], second["worker_id"]) == ("doomed", "rescuer")
    assert second["resumed_from_round"] >= killed_at >= 20
    assert described["rounds_saved_by_resume"] == second["resumed_from_round"]
    model = load_model(s3_store, done["artifact_uri"])
    assert model.manifest.details["num_round"] == total
    assert model.manifest.details["resumed_from_round"] == second["resumed_from_round"]


def test_asking_more_workers_than_the_cluster_has_fails_with_that_reason() -> None:
    from distributed import LocalCluster

    from services.trainer.algorithms import TrainingContext
    from services.trainer.dask_training import dask_client
    from services.trainer.domain import JobFailure
    from services.trainer.xgboost_jobs import ScaleOut

    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        scale = ScaleOut(
            instance_count=2, dask_scheduler=cluster.scheduler_address, workers_wait_s=1
        )
        with pytest.raises(JobFailure) as failure, dask_client(scale, TrainingContext()):
            pass
    assert failure.value.code == "insufficient_capacity"
    assert "instance_count=2" in failure.value.reason and "has 1 worker" in failure.value.reason
