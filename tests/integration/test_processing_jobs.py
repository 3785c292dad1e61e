"""Processing jobs on the trainer's workers, with the real broker, S3 server and HTTP servers:
a user script end to end (inputs, arguments, environment, outputs, an output registered as a
dataset by the ingest service, logs through the CLI), and bad requests refused naming the field."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from cairn.bus import EventProducer
from cairn.bus.publish import Signer
from cairn.contracts.envelope import utc_now
from cairn.contracts.processing_events import ProcessingJobRequested
from cairn.settings import CairnSettings
from cairn.store import ObjectStore, open_store
from cairn_cli import app
from typer.testing import CliRunner

from services.ingest.app import create_service as create_ingest
from services.ingest.config import IngestSettings
from services.trainer.app import create_service as create_trainer
from services.trainer.config import TrainerSettings
from services.trainer.processing_domain import ProcessingJob, request_fingerprint
from tests.support.auth import auth_settings, scoped_headers, token_for
from tests.support.http_server import served_in_thread

pytestmark = pytest.mark.integration

WAIT_S = 60.0
SCRIPT = b"""
import argparse, csv, json, os, sys
parser = argparse.ArgumentParser()
parser.add_argument("--input")
parser.add_argument("--output")
parser.add_argument("--factor", type=float)
args = parser.parse_args()
rows = list(csv.DictReader(open(os.path.join(args.input, "raw.csv"))))
with open(os.path.join(args.output, "doubled.csv"), "w", newline="") as out:
    writer = csv.writer(out)
    writer.writerow(["id", "amount"])
    for row in rows:
        writer.writerow([row["id"], float(row["amount"]) * args.factor])
lookup = os.listdir(os.environ["SM_PROCESSING_INPUT_LOOKUP"])
print("processed", len(rows), "rows; lookup", lookup, "; mode", os.environ["MODE"])
print("a warning on stderr", file=sys.stderr)
root = os.environ["CAIRN_PROCESSING_ROOT"]
json.dump({"rows": len(rows)}, open(os.path.join(root, "metrics.json"), "w"))
"""


def new_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def settings(
    kafka_bootstrap: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> CairnSettings:
    return auth_settings(
        home=tmp_path_factory.mktemp("processing-home"),
        kafka_bootstrap_servers=kafka_bootstrap,
        store_url=f"s3://processing-{uuid.uuid4().hex[:12]}",
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
def urls(
    settings: CairnSettings, store: ObjectStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    trainer = create_trainer(
        settings, store, TrainerSettings(worker_id="processing-worker", heartbeat_s=0.2)
    )
    ingest = create_ingest(
        settings, store, IngestSettings(work_dir=tmp_path_factory.mktemp("ingest-work"))
    )
    with (
        served_in_thread(trainer.api, "the trainer", timeout_s=WAIT_S) as trainer_url,
        served_in_thread(ingest.api, "the ingest service", timeout_s=WAIT_S) as ingest_url,
    ):
        yield {"trainer": trainer_url, "ingest": ingest_url}


def client(url: str, store: ObjectStore, settings: CairnSettings) -> httpx.Client:
    headers = scoped_headers(store, settings, ["train", "read"], name="data-scientist")
    return httpx.Client(base_url=url, headers=headers, timeout=30)


def wait_for(check: Any, what: str) -> Any:
    """Poll `check()` until it returns something truthy (a generous hang guard, not a timing)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what} within {WAIT_S}s")


def test_a_script_job_copies_inputs_runs_uploads_and_registers_its_output(
    urls: dict[str, str], store: ObjectStore, settings: CairnSettings
) -> None:
    raw, dataset = new_name("raw"), new_name("doubled")
    store.put_bytes(f"data/{raw}/raw.csv", b"id,amount\n1,2.5\n2,4\n3,10\n")
    store.put_bytes(f"data/{raw}-lookup/a.txt", b"a")
    store.put_bytes(f"code/{raw}/prepare.py", SCRIPT)
    name = new_name("prep")
    body = {
        "job_name": name,
        "entry_point": f"code/{raw}/prepare.py",
        "inputs": [
            {"input_name": "raw", "source": f"data/{raw}/"},
            {"input_name": "lookup", "source": f"data/{raw}-lookup"},
        ],
        "outputs": [
            {"output_name": "doubled", "dataset": {"dataset_name": dataset, "format": "csv"}}
        ],
        "arguments": [
            "--input",
            "/opt/ml/processing/input/raw",
            "--output=/opt/ml/processing/output/doubled",
            "--factor",
            "2",
        ],
        "environment": {"MODE": "test"},
        "experiment": "prep-experiments",
    }
    with client(urls["trainer"], store, settings) as trainer:
        created = trainer.post("/processing-jobs", json=body)
        assert created.status_code == 202, created.text
        assert created.json()["status"] == "Pending"

        def ended() -> dict[str, Any] | None:
            job = trainer.get(f"/processing-jobs/{name}").json()
            return job if job["status"] in ("Completed", "Failed") else None

        job = wait_for(ended, "the processing job did not end")
        assert job["status"] == "Completed", job["failure_reason"]
        assert job["metrics"] == {"rows": 3.0}
        [output] = job["outputs"]
        assert output["uri"] == f"outputs/processing/{name}/doubled/"
        assert store.get_bytes(output["uri"] + "doubled.csv").decode().splitlines() == [
            "id,amount",
            "1,5.0",
            "2,8.0",
            "3,20.0",
        ]
        again = trainer.post("/processing-jobs", json=body)
        assert again.status_code == 409, "a finished job is not run twice"
        listed = trainer.get("/processing-jobs").json()["processing_jobs"]
        assert any(j["job_name"] == name and j["status"] == "Completed" for j in listed)

    with client(urls["ingest"], store, settings) as ingest:

        def registered() -> dict[str, Any] | None:
            answer = ingest.get(f"/datasets/{dataset}")
            return answer.json() if answer.status_code == 200 else None

        versions = wait_for(registered, "the output was not registered as a dataset")
        assert "1" in str(versions)

    token = token_for(store, settings, ["read"], name="cli-reader")
    env = {"CAIRN_TRAINER_URL": urls["trainer"], "CAIRN_API_KEY": token}
    logs = CliRunner().invoke(app, ["processing", "logs", name], env=env)
    assert logs.exit_code == 0, logs.output
    assert "processed 3 rows; lookup ['a.txt'] ; mode test" in logs.output
    assert "a warning on stderr" in logs.output
    described = CliRunner().invoke(app, ["processing", "describe", name, "--json"], env=env)
    assert described.exit_code == 0 and '"Completed"' in described.output


def test_the_cli_runs_a_builtin_split_and_waits_for_it(
    urls: dict[str, str], store: ObjectStore, settings: CairnSettings
) -> None:
    raw = new_name("rows")
    store.put_bytes(
        f"data/{raw}/rows.csv", b"x,y\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(10))
    )
    token = token_for(store, settings, ["train", "read"], name="cli-user")
    env = {"CAIRN_TRAINER_URL": urls["trainer"], "CAIRN_API_KEY": token}
    name = new_name("split")
    args = ["processing", "run", name, "--builtin", "train-validation-split"]
    args += ["--input", f"rows=data/{raw}/", "--output", "train", "--output", "validation"]
    args += ["--wait", "--json", "--", "--validation-fraction", "0.3", "--seed", "7"]
    ran = CliRunner().invoke(app, args, env=env)
    assert ran.exit_code == 0, ran.output
    assert '"Completed"' in ran.output
    train = store.get_bytes(f"outputs/processing/{name}/train/train.csv").decode().splitlines()
    validation = store.get_bytes(f"outputs/processing/{name}/validation/validation.csv")
    assert len(train) == 1 + 7 and len(validation.decode().splitlines()) == 1 + 3
    listed = CliRunner().invoke(app, ["processing", "list"], env=env)
    assert listed.exit_code == 0 and name in listed.output


def test_a_failing_script_fails_the_job_with_its_last_lines_and_uploads_nothing(
    urls: dict[str, str], store: ObjectStore, settings: CairnSettings
) -> None:
    code = f"code/{new_name('fail')}/fail.py"
    store.put_bytes(
        code,
        b"import os, sys\n"
        b"open(os.path.join(sys.argv[1], 'partial.csv'), 'w').write('x')\n"
        b"print('checking rows')\n"
        b"sys.exit('row 7 has no id')\n",
    )
    name = new_name("failing")
    body = {
        "job_name": name,
        "entry_point": code,
        "outputs": [{"output_name": "out"}],
        "arguments": ["/opt/ml/processing/output/out"],
    }
    with client(urls["trainer"], store, settings) as trainer:
        assert trainer.post("/processing-jobs", json=body).status_code == 202

        def ended() -> dict[str, Any] | None:
            job = trainer.get(f"/processing-jobs/{name}").json()
            return job if job["status"] in ("Completed", "Failed") else None

        job = wait_for(ended, "the failing job did not end")
        logs = trainer.get(f"/processing-jobs/{name}/logs").text
    assert job["status"] == "Failed" and job["failure_code"] == "script_error"
    assert "exited with code 1" in job["failure_reason"]
    assert "row 7 has no id" in job["failure_reason"] and "checking rows" in logs
    assert not list(store.list(f"outputs/processing/{name}/"))


async def test_a_job_left_by_a_killed_worker_is_taken_over_when_its_request_comes_again(
    urls: dict[str, str], store: ObjectStore, settings: CairnSettings
) -> None:
    raw = new_name("rows")
    store.put_bytes(f"data/{raw}/rows.csv", b"x\n1\n2\n")
    request = ProcessingJobRequested(
        job_name=new_name("orphan"),
        builtin="data-quality",
        inputs=[{"input_name": "rows", "source": f"data/{raw}/"}],
        outputs=[{"output_name": "report"}],
    )
    # What a worker killed mid-job leaves: InProgress, attempt 1, a heartbeat long stopped.
    orphan = ProcessingJob(
        job_name=request.job_name,
        request=request,
        request_sha256=request_fingerprint(request),
        status="InProgress",
        attempt=1,
        worker_id="killed-worker",
        heartbeat_at=utc_now() - timedelta(minutes=5),
    )
    store.put_bytes(
        f"trainer/processing/{request.job_name}.json", orphan.model_dump_json().encode()
    )
    key_id, _, secret = token_for(store, settings, ["train"], name="bus-user").partition(":")
    async with EventProducer(settings, source="test", signer=Signer(key_id, secret)) as user:
        await user.publish(request)  # the redelivery Kafka makes after the kill
    headers = scoped_headers(store, settings, ["read"], name="watcher")
    path = f"{urls['trainer']}/processing-jobs/{request.job_name}"
    async with httpx.AsyncClient(headers=headers) as http:
        deadline = time.monotonic() + WAIT_S
        while (job := (await http.get(path)).json())["status"] == "InProgress":
            assert time.monotonic() < deadline, "the orphaned job was not taken over"
            await asyncio.sleep(0.1)
    assert job["status"] == "Completed" and job["attempt"] == 2
    assert job["worker_id"] == "processing-worker"
    assert store.exists(job["outputs"][0]["uri"] + "data_quality.json")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"entry_point": "trainer/jobs/x.py"}, "entry_point"),
        ({"builtin": "data-quality"}, "entry_point"),
        ({"inputs": [{"input_name": "raw", "source": "platform/keys/"}]}, "inputs[0].source"),
        (
            {"inputs": [{"input_name": "raw", "source": "data/x", "destination": "/etc/x"}]},
            "destination",
        ),
        ({"outputs": [{"output_name": "o", "destination": "models/x"}]}, "destination"),
        ({"job_name": "bad name"}, "job_name"),
    ],
)
def test_a_bad_request_is_refused_with_400_naming_the_field(
    urls: dict[str, str], store: ObjectStore, settings: CairnSettings, change: Any, field: str
) -> None:
    body = {"job_name": new_name("bad"), "entry_point": "code/x.py"} | change
    with client(urls["trainer"], store, settings) as trainer:
        answer = trainer.post("/processing-jobs", json=body)
    assert answer.status_code in (400, 422), answer.text  # 422: the kernel's schema errors
    assert field in answer.text
    name = body["job_name"]
    assert not store.exists(f"trainer/processing/{name}.json")


def test_the_processing_api_needs_the_train_scope(
    urls: dict[str, str], store: ObjectStore, settings: CairnSettings
) -> None:
    headers = scoped_headers(store, settings, ["read"], name="reader")
    body = {"job_name": new_name("ro"), "builtin": "data-quality"}
    answer = httpx.post(f"{urls['trainer']}/processing-jobs", json=body, headers=headers)
    assert answer.status_code == 403
    assert httpx.get(f"{urls['trainer']}/processing-jobs").status_code == 401
