"""The training-job handler on an in-memory store: outcomes, idempotency, takeover, BYO scripts,
locations confined to the user namespaces, the audit of bus-created jobs, the job view contract."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cairn.artifacts import load_model, read_manifest
from cairn.audit import AuditRecord
from cairn.auth import Principal
from cairn.contracts.envelope import Envelope, utc_now
from cairn.contracts.events import (
    InputChannel,
    TrainingJobCompleted,
    TrainingJobFailed,
    TrainingJobProgressed,
    TrainingJobRequested,
    TrainingJobStarted,
)
from cairn.contracts.state import TrainingJobView, read_state
from cairn.errors import Conflict, InvalidInput
from cairn.store import InMemoryObjectStore
from pydantic import BaseModel

from services.trainer.config import TrainerSettings
from services.trainer.domain import TrainingJob, job_key
from services.trainer.handlers import TrainerHandlers
from tests.support.trainer_data import credit_frame, to_csv_bytes, to_jsonl_bytes, to_parquet_bytes


@dataclass
class DeadLettered:
    envelope: Envelope[Any]
    reason: str


class Harness:
    """The kernel's side of the trainer (`Service`): what it published, dead-lettered, audited."""

    def __init__(
        self, store: InMemoryObjectStore, worker_id: str = "w1", **settings_fields: Any
    ) -> None:
        self.events: list[BaseModel] = []
        self.dead_letters: list[DeadLettered] = []
        self.audits: list[dict[str, Any]] = []
        settings = TrainerSettings(
            worker_id=worker_id, heartbeat_s=0.05, lease_s=0.5, **settings_fields
        )
        self.handlers = TrainerHandlers(store, settings, self)

    async def publish(
        self,
        data: BaseModel,
        cause: Envelope[Any] | None = None,
        correlation_id: str | None = None,
    ) -> Envelope[Any]:
        self.events.append(data)
        return Envelope[Any](type=type(data).__name__, source="test", correlation_id="c", data=data)

    async def dead_letter(
        self, envelope: Envelope[Any], reason: str, *, error: str = "", group: str = ""
    ) -> None:
        self.dead_letters.append(DeadLettered(envelope, reason))

    async def principal_of(self, envelope: Envelope[Any]) -> Principal:
        return Principal(name="data-scientist", key_id="ck_ds", scopes=frozenset({"train"}))

    async def audit(self, **fields: Any) -> AuditRecord:
        self.audits.append(fields)
        return AuditRecord(
            action=fields["action"], resource=fields["resource"], principal="x", outcome="success"
        )

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
    gpu_or_cpu = {"device": "gpu", "allow_cpu_fallback": True}
    await harness.handlers.on_requested(envelope(request(resources=gpu_or_cpu)))
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
    logs = store.get_bytes("trainer/jobs/job-1/attempts/1/logs.txt").decode()
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
        await harness.handlers.create(request())


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
    assert (
        "trained on 600 rows" in store.get_bytes("trainer/jobs/job-1/attempts/1/logs.txt").decode()
    )

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
    store: InMemoryObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-docker.sock'}")  # whatever runs
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
    """CAIRN_TRAINER_DEVICE=cpu keeps a worker off the GPU even when one is visible: a GPU job
    goes to the GPU pool, and one that allows CPU fallback trains here on CPU."""
    from cairn.contracts.training_events import GpuTrainingJobRequested

    import services.trainer.runner as trainer_runner

    monkeypatch.setattr(trainer_runner, "gpu_status", lambda: (True, "GPU 0: fake"))
    harness = Harness(store, device="cpu")
    await harness.handlers.on_requested(envelope(request(resources={"device": "gpu"})))
    [handed_on] = harness.of(GpuTrainingJobRequested)
    assert handed_on.request.job_name == "job-1" and not harness.of(TrainingJobStarted)
    gpu_or_cpu = {"device": "gpu", "allow_cpu_fallback": True}
    await harness.handlers.on_requested(envelope(request(resources=gpu_or_cpu)))
    [started] = harness.of(TrainingJobStarted)
    assert started.device == "cpu"
    [completed] = harness.of(TrainingJobCompleted)
    assert completed.device == "cpu"


# Locations a request may name ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"output_uri": "gateway/keys"}, "output_uri"),
        ({"output_uri": "data/models"}, "output_uri"),  # user outputs go under outputs/ only
        ({"algorithm": "script", "entry_point": "platform/keys/x.json"}, "entry_point"),
        ({"algorithm": "script", "entry_point": "uploads/x.py"}, "entry_point"),
        ({"algorithm": "script", "entry_point": "code/src.tar.gz#../../x.py"}, "entry_point"),
        (
            {"input_channels": [InputChannel(name="train", uri="platform/audit/")]},
            "input_channels[0].uri",
        ),
        (
            {"input_channels": [InputChannel(name="train", uri="data/../gateway/keys/")]},
            "input_channels[0].uri",
        ),
    ],
)
async def test_a_bus_request_naming_a_private_location_fails_and_is_dead_lettered(
    store: InMemoryObjectStore, overrides: dict[str, Any], field: str
) -> None:
    harness = Harness(store)
    bad = envelope(request(**overrides))
    await harness.handlers.on_requested(bad)
    [failed] = harness.of(TrainingJobFailed)
    assert failed.failure_code == "invalid_input" and field in failed.reason
    [dead] = harness.dead_letters
    assert dead.envelope.event_id == bad.event_id and field in dead.reason
    assert not harness.of(TrainingJobStarted)
    assert not store.exists("trainer/jobs/job-1.json")
    assert [info.key for info in store.list("", recursive=True)] == sorted(
        info.key for info in store.list("data/", recursive=True)
    )  # nothing written anywhere


async def test_a_bad_request_reusing_a_job_name_leaves_that_job_alone(
    store: InMemoryObjectStore,
) -> None:
    harness = Harness(store)
    await harness.handlers.on_requested(envelope(request()))
    before = store.get_bytes("trainer/jobs/job-1.json")
    await harness.handlers.on_requested(envelope(request(output_uri="gateway/keys")))
    assert store.get_bytes("trainer/jobs/job-1.json") == before
    assert not harness.of(TrainingJobFailed)  # listeners hear nothing false about job-1
    assert len(harness.dead_letters) == 1


async def test_user_outputs_land_under_outputs(store: InMemoryObjectStore) -> None:
    harness = Harness(store)
    await harness.handlers.on_requested(envelope(request(output_uri="outputs/credit/")))
    [completed] = harness.of(TrainingJobCompleted)
    assert completed.artifact_uri == "outputs/credit/job-1/"
    assert read_manifest(store, completed.artifact_uri).algorithm == "xgboost"


async def test_the_http_create_refuses_a_private_location_before_writing_anything(
    store: InMemoryObjectStore,
) -> None:
    harness = Harness(store)
    with pytest.raises(InvalidInput, match="output_uri"):
        await harness.handlers.create(request(output_uri="gateway/keys"))
    assert not store.exists("trainer/jobs/job-1.json") and not harness.events


# Audit, stored state ----------------------------------------------------------------------------


async def test_a_job_created_from_the_bus_is_audited_with_its_signer_once(
    store: InMemoryObjectStore,
) -> None:
    harness = Harness(store)
    first = envelope(request())
    await harness.handlers.on_requested(first)
    await harness.handlers.on_requested(first)  # redelivered: not a second create
    [record] = harness.audits
    assert record["action"] == "training_job.create"
    assert record["resource"] == "/training-jobs/job-1"
    assert record["principal"].name == "data-scientist"
    assert record["correlation_id"] == "c"


async def test_a_job_created_over_http_is_not_audited_again_by_the_worker(
    store: InMemoryObjectStore,
) -> None:
    harness = Harness(store)
    created = await harness.handlers.create(request())
    await harness.handlers.on_requested(envelope(created.job.request))
    assert harness.of(TrainingJobCompleted) and not harness.audits  # the route audited it


async def test_the_job_document_is_what_the_training_job_view_promises(
    store: InMemoryObjectStore,
) -> None:
    harness = Harness(store)
    await harness.handlers.on_requested(envelope(request()))
    view = read_state(store, TrainingJobView, "job-1")
    assert view is not None
    assert (view.job_name, view.status) == ("job-1", "Completed")
    assert view.artifact_uri == "models/job-1/" and view.metrics["validation:auc"] > 0.65
    assert view.request["input_channels"][0]["uri"] == "data/credit/train/"
    assert view.correlation_id == "c"


async def test_an_unreadable_job_document_is_skipped_when_listing(
    store: InMemoryObjectStore,
) -> None:
    harness = Harness(store)
    await harness.handlers.create(request())
    store.put_bytes("trainer/jobs/broken.json", b"{not json")
    store.put_bytes("trainer/jobs/old.json", b'{"job_name": "old"}')
    assert [job.job_name for job in await harness.handlers.list_jobs()] == ["job-1"]


EPOCH_SCRIPT = b"""
import os
for epoch in range(1, 4):
    print(f"epoch {epoch}: train-loss={1.0 / epoch:.3f} val-rmse={2.0 / epoch:.3f}", flush=True)
print("noise line val-rmse=not-a-number")
open(os.path.join(os.environ["SM_MODEL_DIR"], "model.txt"), "w").write("m")
"""


async def test_metric_definitions_turn_log_lines_into_progress_and_final_metrics(
    store: InMemoryObjectStore,
) -> None:
    store.put_bytes("code/epochs.py", EPOCH_SCRIPT)
    harness = Harness(store)
    job = request(
        algorithm="script",
        entry_point="code/epochs.py",
        hyperparameters={},
        input_channels=[InputChannel(name="train", uri="data/credit/train/")],
        metric_definitions=[
            {"name": "validation:rmse", "regex": r"val-rmse=([0-9.]+)"},
            {"name": "train:loss", "regex": r"train-loss=([0-9.]+)"},
        ],
    )
    await harness.handlers.on_requested(envelope(job))
    progressed = harness.of(TrainingJobProgressed)
    assert [p.metrics["validation:rmse"] for p in progressed] == [2.0, 1.0, 0.667]
    (done,) = harness.of(TrainingJobCompleted)
    assert read_manifest(store, done.artifact_uri).metrics == {
        "validation:rmse": 0.667,
        "train:loss": 0.333,
    }


def test_a_metric_definition_without_a_capture_group_is_refused() -> None:
    import pydantic

    with pytest.raises(pydantic.ValidationError, match="capture group"):
        request(metric_definitions=[{"name": "m", "regex": "loss=[0-9.]+"}])
