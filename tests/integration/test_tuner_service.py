"""The tuner and the trainer on the real broker and S3 server: a tuning job's trials are real
training jobs; early stopping stops real trials; a restarted tuner duplicates no trial."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cairn.contracts.state import TrainingJobView, read_state
from cairn.service import Service
from cairn.settings import CairnSettings
from cairn.store import ObjectStore

from services.trainer.app import create_service as create_trainer
from services.trainer.config import TrainerSettings
from services.tuner.app import create_service as create_tuner
from services.tuner.config import TunerSettings
from tests.support.auth import scoped_headers
from tests.support.tansu import unique_name
from tests.support.trainer_data import credit_frame, to_csv_bytes

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(kafka_settings: CairnSettings, s3_settings: CairnSettings) -> CairnSettings:
    return kafka_settings.model_copy(
        update={
            "store_url": s3_settings.store_url,
            "s3_endpoint": s3_settings.s3_endpoint,
            "s3_access_key": s3_settings.s3_access_key,
            "s3_secret_key": s3_settings.s3_secret_key,
        }
    )


@pytest.fixture
async def trainer(settings: CairnSettings, s3_store: ObjectStore) -> AsyncIterator[Service]:
    config = TrainerSettings(worker_id="it-trainer", heartbeat_s=0.2, stop_poll_s=0.1)
    service = create_trainer(settings, s3_store, config)
    async with service.api.router.lifespan_context(service.api):
        yield service


def tuner_service(settings: CairnSettings, store: ObjectStore) -> Service:
    return create_tuner(settings, store, TunerSettings(sweep_interval_s=0.5))


@pytest.fixture
async def tuner(
    settings: CairnSettings, s3_store: ObjectStore, trainer: Service
) -> AsyncIterator[Service]:
    service = tuner_service(settings, s3_store)
    async with service.api.router.lifespan_context(service.api):
        yield service


def http(service: Service) -> httpx.AsyncClient:
    headers = scoped_headers(service.store, service.settings, ["train", "read"])
    transport = httpx.ASGITransport(app=service.api)
    return httpx.AsyncClient(transport=transport, base_url="http://tuner", headers=headers)


def put_data(store: ObjectStore) -> str:
    prefix = f"data/{unique_name('tune')}"
    frame = credit_frame(800, seed=3)
    store.put_bytes(f"{prefix}/train.csv", to_csv_bytes(frame[:600]))
    store.put_bytes(f"{prefix}/validation.csv", to_csv_bytes(frame[600:]))
    return prefix


def tuning_body(name: str, prefix: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tuning_job_name": name,
        "strategy": "Random",
        "objective": {"metric_name": "validation:auc", "type": "Maximize"},
        "parameter_ranges": {
            "continuous": [
                {"name": "eta", "min_value": 0.05, "max_value": 0.5, "scaling_type": "Logarithmic"}
            ],
            "integer": [{"name": "max_depth", "min_value": 2, "max_value": 6}],
        },
        "training_job_definition": {
            "algorithm": "xgboost",
            "input_channels": [
                {"name": "train", "uri": f"{prefix}/train.csv", "label_column": "default"},
                {
                    "name": "validation",
                    "uri": f"{prefix}/validation.csv",
                    "label_column": "default",
                },
            ],
            "static_hyperparameters": {"num_round": 20},
        },
        "resource_limits": {"max_number_of_training_jobs": 4, "max_parallel_training_jobs": 2},
        "random_seed": 5,
    }
    return body | overrides


async def wait_for_status(
    client: httpx.AsyncClient, name: str, statuses: set[str], timeout_s: float = 150
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        described = (await client.get(f"/tuning-jobs/{name}")).json()
        if described.get("status") in statuses:
            return dict(described)
        assert time.monotonic() < deadline, f"{name} is still {described}"
        await asyncio.sleep(0.2)


async def test_a_random_and_a_bayesian_job_complete_with_the_best_trial(
    tuner: Service, s3_store: ObjectStore
) -> None:
    prefix = put_data(s3_store)
    names = {"Random": unique_name("rnd")[:20], "Bayesian": unique_name("bay")[:20]}
    async with http(tuner) as client:
        for strategy, name in names.items():
            created = await client.post(
                "/tuning-jobs", json=tuning_body(name, prefix, strategy=strategy)
            )
            assert created.status_code == 202, created.text
        for name in names.values():
            done = await wait_for_status(client, name, {"Completed", "Failed", "Stopped"})
            assert done["status"] == "Completed", done
            trials = done["trials"]
            assert [t["training_job_name"] for t in trials] == [f"{name}-{n}" for n in range(4)]
            best = max(trials, key=lambda t: t["objective_value"])
            assert done["best_training_job"]["training_job_name"] == best["training_job_name"]
            view = read_state(s3_store, TrainingJobView, best["training_job_name"])
            assert view is not None and view.status == "Completed"
            assert view.metrics["validation:auc"] == best["objective_value"]
        bad = tuning_body("bad-1", prefix, objective={"metric_name": "validation:f1"})
        refused = await client.post("/tuning-jobs", json=bad)
        assert refused.status_code == 400 and "objective.metric_name" in refused.json()["error"]


@pytest.mark.slow
async def test_early_stopping_stops_a_real_trial(tuner: Service, s3_store: ObjectStore) -> None:
    prefix = put_data(s3_store)
    name = unique_name("es")[:20]
    body = tuning_body(
        name,
        prefix,
        early_stopping_type="Auto",
        objective={"metric_name": "validation:logloss", "type": "Minimize"},
        parameter_ranges={
            "continuous": [
                {
                    "name": "eta",
                    "min_value": 0.0005,
                    "max_value": 0.3,
                    "scaling_type": "Logarithmic",
                }
            ]
        },
        resource_limits={"max_number_of_training_jobs": 4, "max_parallel_training_jobs": 1},
        random_seed=3,  # etas 0.16, 0.25 (the baseline), then 0.0007 and 0.005 (pruned)
    )
    body["training_job_definition"]["static_hyperparameters"] = {
        "num_round": 600,
        "max_depth": 4,
        "progress_every": 25,
    }
    async with http(tuner) as client:
        assert (await client.post("/tuning-jobs", json=body)).status_code == 202
        done = await wait_for_status(client, name, {"Completed", "Failed", "Stopped"}, 240)
    assert done["status"] == "Completed", done
    stopped = [t for t in done["trials"] if t["status"] == "Stopped"]
    assert stopped, [(t["status"], t["parameters"]) for t in done["trials"]]
    for trial in stopped:
        assert trial["early_stopped"] and trial["rounds_used"] < 600
        view = read_state(s3_store, TrainingJobView, trial["training_job_name"])
        assert view is not None and view.status == "Stopped"


@pytest.mark.slow
async def test_a_restarted_tuner_finishes_the_job_without_duplicate_trials(
    settings: CairnSettings, s3_store: ObjectStore, trainer: Service
) -> None:
    prefix = put_data(s3_store)
    name = unique_name("rs")[:20]
    body = tuning_body(
        name,
        prefix,
        resource_limits={"max_number_of_training_jobs": 6, "max_parallel_training_jobs": 2},
    )
    body["training_job_definition"]["static_hyperparameters"] = {"num_round": 150}
    first = tuner_service(settings, s3_store)
    async with first.api.router.lifespan_context(first.api), http(first) as client:
        assert (await client.post("/tuning-jobs", json=body)).status_code == 202
        deadline = time.monotonic() + 60
        while len((await client.get(f"/tuning-jobs/{name}")).json()["trials"]) < 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    second = tuner_service(settings, s3_store)
    async with second.api.router.lifespan_context(second.api), http(second) as client:
        done = await wait_for_status(client, name, {"Completed", "Failed", "Stopped"})
    assert done["status"] == "Completed", done
    expected = [f"{name}-{n}" for n in range(6)]
    assert [t["training_job_name"] for t in done["trials"]] == expected
    trained = sorted(
        info.key for info in s3_store.list("trainer/jobs/", recursive=False) if name in info.key
    )
    assert trained == sorted(f"trainer/jobs/{job}.json" for job in expected)
    assert not list(s3_store.list(f"trainer/rejections/{name}", recursive=True))
