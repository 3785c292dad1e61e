"""The training-job handler on an in-memory store: outcomes, idempotency, takeover, BYO scripts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from cairn.artifacts import load_model, read_manifest
from cairn.contracts.envelope import Envelope, utc_now
from cairn.contracts.events import (
    InputChannel,
    TrainingJobCompleted,
    TrainingJobFailed,
    TrainingJobProgressed,
    TrainingJobRequested,
    TrainingJobStarted,
)
from cairn.errors import Conflict
from cairn.store import InMemoryObjectStore
from pydantic import BaseModel

from services.trainer.config import TrainerSettings
from services.trainer.domain import TrainingJob, job_key
from services.trainer.handlers import TrainerHandlers
from tests.support.trainer_data import credit_frame, to_csv_bytes, to_jsonl_bytes, to_parquet_bytes


class Harness:
    def __init__(self, store: InMemoryObjectStore, worker_id: str = "w1") -> None:
        self.events: list[BaseModel] = []
        settings = TrainerSettings(worker_id=worker_id, heartbeat_s=0.05, lease_s=0.5)
        self.handlers = TrainerHandlers(store, settings, self.publish)

    async def publish(self, data: BaseModel, cause: Envelope[Any]) -> None:
        self.events.append(data)

    def of(self, kind: type[BaseModel]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture
def store() -> InMemoryObjectStore:
    store = InMemoryObjectStore()
    frame = credit_frame(800, seed=5)
    store.put_bytes("data/credit/train/part-0.csv", to_csv_bytes(frame[:300]))
    store.put_bytes("data/credit/train/part-1.parquet", to_parquet_bytes(frame[300:600]))
    store.put_bytes("data/credit/train/part-1.csv", to_csv_bytes(frame[300:600]))
    store.put_bytes("data/credit/validation.jsonl", to_jsonl_bytes(frame[600:]))
    return store


def request(name: str = "job-1", **overrides: Any) -> TrainingJobRequested:
    fields: dict[str, Any] = {
        "job_name": name,
        "algorithm": "xgboost",
        "hyperparameters": {"num_round": 20, "max_depth": 3, "progress_every": 5},
        "input_channels": [
            InputChannel(name="train", uri="data/credit/train/", label_column="default"),
            InputChannel(
                name="validation",
                uri="data/credit/validation.jsonl",
                content_type="application/jsonlines",
                label_column="default",
            ),
        ],
    }
    return TrainingJobRequested(**(fields | overrides))


def envelope(data: TrainingJobRequested) -> Envelope[TrainingJobRequested]:
    return Envelope[TrainingJobRequested](
        type="TrainingJobRequested", source="test", correlation_id="c", data=data
    )


async def test_a_job_trains_packages_and_reports_once(store: InMemoryObjectStore) -> None:
    harness = Harness(store)
    await harness.handlers.on_requested(envelope(request(resources={"device": "gpu"})))
    started, completed = harness.of(TrainingJobStarted), harness.of(TrainingJobCompleted)
    assert len(started) == 1 and len(completed) == 1 and not harness.of(TrainingJobFailed)
    assert [p.iteration for p in harness.of(TrainingJobProgressed)] == [5, 10, 15, 20]
    done = completed[0]
    assert done.artifact_uri == "models/job-1/"
    assert done.device == "cpu"  # asked for a GPU, none here: the device actually used
    assert done.metrics["validation:auc"] > 0.65
    manifest = read_manifest(store, done.artifact_uri)
    train_lineage = manifest.lineage.datasets[0]
    assert sorted(train_lineage.files) == [
        "data/credit/train/part-0.csv",
        "data/credit/train/part-1.csv",
    ]
    model = load_model(store, done.artifact_uri)
    assert model.predict(model.encode_rows([[30, 20000.0, 0.9, 4, 2, "business", "rent"]]))[0] > 0.5
    job = harness.handlers.jobs.get(job_key("job-1")).doc
    assert (job.status, job.attempt, job.device) == ("Completed", 1, "cpu")
    assert job.correlation_id == "c"  # what `cairn trace` needs, from the request's envelope
    logs = store.get_bytes("trainer/jobs/job-1/logs.txt").decode()
    assert "requested gpu, using cpu" in logs and "Completed" in logs


async def test_a_redelivered_request_is_a_no_op_and_a_lost_outcome_is_republished(
    store: InMemoryObjectStore,
) -> None:
    harness = Harness(store)
    first = envelope(request())
    await harness.handlers.on_requested(first)
    etag = store.stat("trainer/jobs/job-1.json").etag
    await harness.handlers.on_requested(envelope(request()))  # same content, new event id
    await harness.handlers.on_requested(first)  # the very same message again
    assert len(harness.of(TrainingJobStarted)) == 1
    assert (
        len(harness.of(TrainingJobCompleted)) == 2
    )  # republished for the redelivered message only
    assert store.stat("trainer/jobs/job-1.json").etag == etag


async def test_a_different_request_with_a_taken_name_is_rejected_without_touching_the_job(
    store: InMemoryObjectStore,
) -> None:
    harness = Harness(store)
    await harness.handlers.on_requested(envelope(request()))
    before = store.get_bytes("trainer/jobs/job-1.json")
    other = envelope(request(hyperparameters={"num_round": 5}))
    await harness.handlers.on_requested(other)
    assert store.get_bytes("trainer/jobs/job-1.json") == before
    assert len(harness.of(TrainingJobStarted)) == 1
    assert store.exists(f"trainer/rejections/job-1/{other.event_id}.json")
    with pytest.raises(Conflict):
        harness.handlers.create_pending(request())


async def test_a_job_left_in_progress_by_a_dead_worker_is_redone_once(
    store: InMemoryObjectStore,
) -> None:
    dead = TrainingJob(
        job_name="job-1",
        request=request(),
        request_sha256=__import__("services.trainer.domain", fromlist=["x"]).request_fingerprint(
            request()
        ),
        status="InProgress",
        attempt=1,
        worker_id="dead-worker",
        heartbeat_at=utc_now() - timedelta(seconds=5),
    )
    harness = Harness(store, worker_id="w2")
    harness.handlers.jobs.create(job_key("job-1"), dead)
    await harness.handlers.on_requested(envelope(request()))
    job = harness.handlers.jobs.get(job_key("job-1")).doc
    assert (job.status, job.attempt, job.worker_id) == ("Completed", 2, "w2")
    assert [e.attempt for e in harness.of(TrainingJobStarted)] == [2]


async def test_bad_hyperparameters_fail_the_job_fast_with_the_reason(
    store: InMemoryObjectStore,
) -> None:
    harness = Harness(store)
    await harness.handlers.on_requested(envelope(request(hyperparameters={"num_round": -3})))
    (failed,) = harness.of(TrainingJobFailed)
    assert failed.failure_code == "invalid_hyperparameters"
    assert "num_round" in failed.reason
    assert harness.handlers.jobs.get(job_key("job-1")).doc.status == "Failed"
    assert not store.exists("models/job-1/manifest.json")


async def test_a_job_over_its_runtime_limit_fails_as_runtime_exceeded(
    store: InMemoryObjectStore,
) -> None:
    harness = Harness(store)
    slow = request(
        hyperparameters={"num_round": 5000, "max_depth": 8}, stopping_condition={"max_runtime_s": 1}
    )
    await harness.handlers.on_requested(envelope(slow))
    (failed,) = harness.of(TrainingJobFailed)
    assert failed.failure_code == "runtime_exceeded"
    assert not store.exists("models/job-1/manifest.json")


TRAIN_SCRIPT = b"""
import argparse, json, os, sys
parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int)
parser.add_argument("--fail", default="no")
args = parser.parse_args()
if args.fail == "yes":
    open(os.path.join(os.environ["SM_OUTPUT_DIR"], "failure"), "w").write("bad data, sorry")
    sys.exit(3)
train_dir = os.environ["SM_CHANNEL_TRAIN"]
rows = sum(len(open(os.path.join(train_dir, f)).readlines()) - 1 for f in os.listdir(train_dir))
hps = json.load(open("/".join([os.environ["SM_INPUT_CONFIG_DIR"], "hyperparameters.json"])))
with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as f:
    json.dump({"rows": rows, "epochs": args.epochs, "hps": hps, "sm_hp": os.environ["SM_HP_EPOCHS"],
               "channels": json.loads(os.environ["SM_CHANNELS"])}, f)
print("trained on", rows, "rows")
"""


async def test_a_byo_script_runs_with_the_sagemaker_contract(store: InMemoryObjectStore) -> None:
    import json

    store.put_bytes("code/train.py", TRAIN_SCRIPT)
    harness = Harness(store)
    job = request(
        algorithm="script",
        entry_point="code/train.py",
        hyperparameters={"epochs": 3},
        input_channels=[InputChannel(name="train", uri="data/credit/train/")],
    )
    await harness.handlers.on_requested(envelope(job))
    (done,) = harness.of(TrainingJobCompleted)
    manifest = read_manifest(store, done.artifact_uri)
    assert manifest.framework == "script" and list(manifest.files) == ["model.json"]
    written = json.loads(store.get_bytes(done.artifact_uri + "model.json"))
    assert written == {
        "rows": 600,
        "epochs": 3,
        "hps": {"epochs": "3"},
        "sm_hp": "3",
        "channels": ["train"],
    }
    assert "trained on 600 rows" in store.get_bytes("trainer/jobs/job-1/logs.txt").decode()

    failing = request(
        job_name="job-2",
        algorithm="script",
        entry_point="code/train.py",
        hyperparameters={"fail": "yes"},
        input_channels=[InputChannel(name="train", uri="data/credit/train/")],
    )
    await harness.handlers.on_requested(envelope(failing))
    (failed,) = harness.of(TrainingJobFailed)
    assert (failed.failure_code, failed.reason) == ("algorithm_error", "bad data, sorry")


async def test_an_image_job_without_docker_fails_with_a_clear_reason(
    store: InMemoryObjectStore,
) -> None:
    harness = Harness(store)
    job = request(
        algorithm="script",
        image="example/trainer:1",
        input_channels=[InputChannel(name="train", uri="data/credit/train/")],
    )
    await harness.handlers.on_requested(envelope(job))
    (failed,) = harness.of(TrainingJobFailed)
    assert "no Docker engine reachable" in failed.reason


async def test_a_cpu_pool_worker_never_uses_a_gpu(
    store: InMemoryObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CAIRN_TRAINER_DEVICE=cpu keeps a worker off the GPU even when one is visible."""
    import services.trainer.handlers as trainer_handlers

    monkeypatch.setattr(trainer_handlers, "gpu_status", lambda: (True, "GPU 0: fake"))
    harness = Harness(store)
    harness.handlers.settings = TrainerSettings(worker_id="w1", device="cpu")
    await harness.handlers.on_requested(envelope(request(resources={"device": "gpu"})))
    [started] = harness.of(TrainingJobStarted)
    assert started.device == "cpu"
    [completed] = harness.of(TrainingJobCompleted)
    assert completed.device == "cpu"
