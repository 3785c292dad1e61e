"""The experiments service on the real broker, S3 server and HTTP, fed by a real trainer: two
training runs record their metric curves, a processing job is a run too, the CLI queries runs by
metric and compares two of them into a side-by-side table and a PNG of their curves."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cairn.settings import CairnSettings
from cairn.store import ObjectStore, open_store
from cairn_cli import app
from typer.testing import CliRunner

from services.experiments.app import create_service as create_experiments
from services.trainer.app import create_service as create_trainer
from services.trainer.config import TrainerSettings
from tests.support.auth import auth_settings, scoped_headers, token_for
from tests.support.http_server import served_in_thread
from tests.support.trainer_data import credit_frame, to_csv_bytes

pytestmark = pytest.mark.integration

WAIT_S = 90.0


@pytest.fixture(scope="module")
def settings(
    kafka_bootstrap: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> CairnSettings:
    return auth_settings(
        home=tmp_path_factory.mktemp("experiments-home"),
        kafka_bootstrap_servers=kafka_bootstrap,
        store_url=f"s3://experiments-{uuid.uuid4().hex[:12]}",
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
def urls(settings: CairnSettings, store: ObjectStore) -> Iterator[dict[str, str]]:
    trainer = create_trainer(
        settings, store, TrainerSettings(worker_id="experiments-worker", heartbeat_s=0.2)
    )
    experiments = create_experiments(settings, store)
    with (
        served_in_thread(trainer.api, "the trainer", timeout_s=WAIT_S) as trainer_url,
        served_in_thread(experiments.api, "the experiments service", timeout_s=WAIT_S) as url,
    ):
        yield {"trainer": trainer_url, "experiments": url}


def wait_for(check: Any, what: str) -> Any:
    """Poll `check()` until it returns something truthy (a generous hang guard, not a timing)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what} within {WAIT_S}s")


def test_training_runs_record_metric_curves_and_compare_into_a_table_and_a_png(
    urls: dict[str, str], store: ObjectStore, settings: CairnSettings, tmp_path: Path
) -> None:
    experiment = f"credit-{uuid.uuid4().hex[:6]}"
    prefix = f"data/{experiment}"
    store.put_bytes(f"{prefix}/train.csv", to_csv_bytes(credit_frame(400)))
    store.put_bytes(f"{prefix}/validation.csv", to_csv_bytes(credit_frame(200, seed=1)))
    headers = scoped_headers(store, settings, ["train", "read"], name="scientist")
    names = [f"{experiment}-d2", f"{experiment}-d5"]
    with httpx.Client(headers=headers, timeout=30) as http:
        for name, depth in zip(names, (2, 5), strict=True):
            body = {
                "job_name": name,
                "algorithm": "xgboost",
                "hyperparameters": {"num_round": 12, "max_depth": depth, "progress_every": 2},
                "input_channels": [
                    {"name": "train", "uri": f"{prefix}/train.csv", "label_column": "default"},
                    {
                        "name": "validation",
                        "uri": f"{prefix}/validation.csv",
                        "label_column": "default",
                    },
                ],
                "experiment": experiment,
            }
            created = http.post(f"{urls['trainer']}/training-jobs", json=body)
            assert created.status_code == 202, created.text
        quality = {
            "job_name": f"{experiment}-dq",
            "builtin": "data-quality",
            "inputs": [{"input_name": "raw", "source": f"{prefix}/train.csv"}],
            "outputs": [{"output_name": "report"}],
            "experiment": experiment,
        }
        assert http.post(f"{urls['trainer']}/processing-jobs", json=quality).status_code == 202

        def ended(run: str, points: int = 0) -> Any:
            """The run once it ended, its request was seen and `points` curve points arrived."""

            def check() -> dict[str, Any] | None:
                answer = http.get(f"{urls['experiments']}/runs/{run}")
                if answer.status_code != 200 or answer.json()["status"] == "InProgress":
                    return None
                found: dict[str, Any] = answer.json()
                # Its request and its outcome come on different topics, in either order.
                seen_request = found["experiment_source"] == "request"
                curve = found["history"].get("validation:logloss", [])
                done = found["status"] != "Pending" and seen_request and len(curve) >= points
                return found if done else None

            return wait_for(check, f"run {run} did not end")

        runs = [ended(f"training.{name}", points=6) for name in names]
        for run in runs:
            assert run["status"] == "Completed", run
            assert run["experiment"] == experiment
            assert run["parameters"]["max_depth"] in (2, 5)
            curve = run["history"]["validation:logloss"]
            assert [p["step"] for p in curve] == [2, 4, 6, 8, 10, 12], run["metrics"]
            assert curve[-1]["value"] < curve[0]["value"], "the loss goes down as it trains"
            assert "validation:auc" in run["metrics"], run["metrics"]
            assert run["artifacts"]["model"].endswith(f"/{run['name']}/")
            assert run["lineage"]["inputs"] == [f"{prefix}/train.csv", f"{prefix}/validation.csv"]
        processing = ended(f"processing.{experiment}-dq")
        assert processing["status"] == "Completed"
        assert processing["artifacts"]["report"].endswith(f"{experiment}-dq/report/")
        assert store.exists(processing["artifacts"]["report"] + "data_quality.json")

    env = {
        "CAIRN_EXPERIMENTS_URL": urls["experiments"],
        "CAIRN_API_KEY": token_for(store, settings, ["read"], name="cli-reader"),
    }
    cli = CliRunner()
    plot = tmp_path / "curves.png"
    compared = cli.invoke(
        app,
        ["experiments", "compare", *(f"training.{n}" for n in names), "--plot", str(plot)],
        env=env,
    )
    assert compared.exit_code == 0, compared.output
    assert "param max_depth" in compared.output and "metric validation:auc" in compared.output
    assert "validation:logloss" in compared.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    deeper = cli.invoke(
        app,
        [
            "experiments",
            "list",
            "-e",
            experiment,
            "--where",
            "max_depth > 3 and auc > 0",
            "--sort=-auc",
            "--json",
        ],
        env=env,
    )
    assert deeper.exit_code == 0, deeper.output
    assert f"training.{names[1]}" in deeper.output and f"training.{names[0]}" not in deeper.output

    listed = cli.invoke(app, ["experiments", "list"], env=env)
    assert listed.exit_code == 0 and experiment in listed.output

    bad = cli.invoke(app, ["experiments", "list", "--where", "auc >> 1"], env=env)
    assert bad.exit_code == 1 and "where" in bad.output


def test_the_experiments_api_needs_a_credential_and_refuses_a_bad_query(
    urls: dict[str, str], store: ObjectStore, settings: CairnSettings
) -> None:
    assert httpx.get(f"{urls['experiments']}/runs").status_code == 401
    headers = scoped_headers(store, settings, ["read"], name="reader")
    answer = httpx.get(
        f"{urls['experiments']}/runs", params={"where": "auc > > 2"}, headers=headers
    )
    assert answer.status_code == 400 and "where" in answer.json()["error"]
    missing = httpx.get(f"{urls['experiments']}/runs/training.nope", headers=headers)
    assert missing.status_code == 404
