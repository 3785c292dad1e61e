"""The platform side of the tuner benchmark: tuner + trainer services on a real Tansu broker."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import importlib
import io
import os
import time

import pandas as pd
from cairn.settings import CairnSettings
from cairn.store import InMemoryObjectStore
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from bench.autoscaler_reaction import start_tansu
from bench.tuner.run import ROUNDS, datasets, request_for
from services.trainer.app import create_service as create_trainer
from services.trainer.config import TrainerSettings
from services.tuner.app import create_service as create_tuner
from services.tuner.config import TunerSettings


def _csv(x: object, y: object) -> bytes:
    frame = pd.DataFrame(x).add_prefix("f")
    frame["label"] = y
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return buffer.getvalue().encode()


async def platform_per_trial(trials: int, parallel: int) -> float:
    """Seconds per trial of a Random search run by the tuner on `parallel` trainer workers."""
    catalogue = importlib.import_module("cairn.contracts.catalogue")
    spec = catalogue._CATALOGUE["TrainingJobRequested"]
    if "tuner" not in spec.senders:  # until the lead adds the tuner as a sender
        catalogue._CATALOGUE["TrainingJobRequested"] = dataclasses.replace(
            spec, senders=(*spec.senders, "tuner")
        )
    tansu, bootstrap = start_tansu()
    try:
        settings = CairnSettings(
            kafka_bootstrap_servers=bootstrap,
            platform_key=base64.b64encode(os.urandom(32)).decode(),
            otel_exporter="none",
            store_url="memory://bench-tuner",
            bus_session_timeout_ms=1000,
            bus_heartbeat_interval_ms=100,
        )
        store = InMemoryObjectStore()
        x, y = load_breast_cancer(return_X_y=True)
        xt, xv, yt, yv = train_test_split(x, y, test_size=0.3, random_state=0)
        store.put_bytes("data/bench/train.csv", _csv(xt, yt))
        store.put_bytes("data/bench/validation.csv", _csv(xv, yv))
        services = [
            create_trainer(settings, store, TrainerSettings(worker_id=f"w{i}", heartbeat_s=0.5))
            for i in range(parallel)
        ]
        tuner = create_tuner(settings, store, TunerSettings(sweep_interval_s=1.0))
        async with contextlib.AsyncExitStack() as stack:
            for service in [*services, tuner]:
                await stack.enter_async_context(service.api.router.lifespan_context(service.api))
            return await _run(tuner.api.state.tuner, trials, parallel)
    finally:
        tansu.kill()


async def _run(handlers: object, trials: int, parallel: int) -> float:
    data = datasets()[0]
    request = request_for(data, "Random", 1, trials)
    definition = request.training_job_definition.model_dump() | {
        "input_channels": [
            {"name": "train", "uri": "data/bench/train.csv", "label_column": "label"},
            {"name": "validation", "uri": "data/bench/validation.csv", "label_column": "label"},
        ],
        "static_hyperparameters": {"num_round": ROUNDS, "progress_every": 10},
    }
    request = type(request).model_validate(
        request.model_dump()
        | {
            "tuning_job_name": f"bench-p{parallel}",
            "training_job_definition": definition,
            "resource_limits": request.resource_limits.model_dump()
            | {"max_parallel_training_jobs": parallel},
        }
    )
    started = time.monotonic()
    created = await handlers.create(request)  # type: ignore[attr-defined]
    name = created.job.tuning_job_name
    while True:
        job = await handlers.describe(name)  # type: ignore[attr-defined]
        if job.status in ("Completed", "Failed", "Stopped"):
            break
        await asyncio.sleep(0.1)
    return (time.monotonic() - started) / trials
