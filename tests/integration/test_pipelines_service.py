"""The pipelines service on the real broker: it only orchestrates. The owning services are stood in
for by a plain Kafka client that answers each request with the completion event the real service
would publish, so these tests see exactly what the pipeline asked for: a retry per policy, the
cache serving a second identical run, and a trigger that starts once per event."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from cairn.bus import EventProducer, tail_events
from cairn.bus.broker import kafka_client_options
from cairn.bus.publish import envelope_for, outgoing_message
from cairn.contracts.envelope import Envelope
from cairn.contracts.events import (
    DatasetIngested,
    ModelPackageRegistered,
    TrainingJobCompleted,
    TrainingJobFailed,
)
from cairn.contracts.processing_events import ProcessingJobCompleted, ProcessingOutputResult
from cairn.service import Service
from cairn.settings import CairnSettings

from services.pipelines.app import create_service
from services.pipelines.config import PipelinesSettings
from tests.support.auth import auth_settings, scoped_headers
from tests.support.tansu import unique_name
from tests.unit.test_pipelines_definition import credit_pipeline

pytestmark = pytest.mark.integration
WAIT_S = 60.0
REQUESTS = ["ProcessingJobRequested", "TrainingJobRequested", "ModelRegistrationRequested"]


def settings_for(kafka_bootstrap: str, home: Path) -> CairnSettings:
    return auth_settings(
        home=home,
        kafka_bootstrap_servers=kafka_bootstrap,
        bus_session_timeout_ms=1000,
        bus_heartbeat_interval_ms=100,
        bus_max_retries=1,
        bus_retry_backoff_s=0.05,
    )


class StandIn:
    """Answers step requests as their owning services would; records every request it saw."""

    def __init__(self, settings: CairnSettings, prefix: str, fail_first_training: bool) -> None:
        self.settings = settings
        self.prefix = prefix
        self.fail_first_training = fail_first_training
        self.seen: dict[str, list[str]] = {}  # job name -> event ids of its requests
        self.registered: dict[str, list[str]] = {}  # training job -> registration requests
        self.paused = asyncio.Event()
        self.paused.set()

    async def answer(self, producer: EventProducer, envelope: Envelope[Any]) -> None:
        data = envelope.data
        job = getattr(data, "job_name", None) or data.training_job
        if not job.startswith(self.prefix):
            return
        seen = self.seen if envelope.type != "ModelRegistrationRequested" else self.registered
        first = job not in seen
        seen.setdefault(job, []).append(str(envelope.event_id))
        await self.paused.wait()
        if not first and envelope.type != "ModelRegistrationRequested":
            return  # a repeated request for a job that ran: the owning service runs it once
        # (the registry announces a training job's one version again on every request)
        if envelope.type == "ProcessingJobRequested":
            outputs = [
                ProcessingOutputResult(
                    output_name=o.output_name,
                    uri=f"outputs/{job}/{o.output_name}/",
                    files=1,
                    bytes=1,
                )
                for o in data.outputs
            ]
            await producer.publish(
                ProcessingJobCompleted(
                    job_name=job, outputs=outputs, logs_key="l", processing_time_s=0
                )
            )
        elif envelope.type == "TrainingJobRequested":
            trainings = [name for name in self.seen if "-train-" in name]
            if self.fail_first_training and len(trainings) == 1:
                await producer.publish(
                    TrainingJobFailed(job_name=job, reason="worker lost", failure_code="internal")
                )
                return
            await producer.publish(
                TrainingJobCompleted(
                    job_name=job,
                    algorithm="xgboost",
                    artifact_uri=f"models/{job}/",
                    metrics={"validation-auc": 0.91},
                    device="cpu",
                    training_time_s=0,
                    total_time_s=0,
                )
            )
        else:
            await producer.publish(
                ModelPackageRegistered(
                    model_package_group=data.model_package_group,
                    version=1,
                    artifact_uri=data.artifact_uri,
                    approval_status="PendingManualApproval",
                    training_job=data.training_job,
                )
            )

    async def run(self) -> None:
        async with EventProducer(self.settings, source="stand-in") as producer:
            async for tailed in tail_events(self.settings, REQUESTS, from_beginning=True):
                if isinstance(tailed.event, Envelope):
                    await self.answer(producer, tailed.event)


@contextlib.asynccontextmanager
async def standing_in(
    settings: CairnSettings, prefix: str, fail_first_training: bool = True
) -> AsyncIterator[StandIn]:
    stand_in = StandIn(settings, prefix, fail_first_training)
    task = asyncio.create_task(stand_in.run())
    try:
        yield stand_in
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def service(kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[Service]:
    settings = settings_for(kafka_bootstrap, tmp_path / "home")
    config = PipelinesSettings(sweep_interval_s=0.2, trigger_refresh_s=0.3)
    built = create_service(settings, config=config)
    async with built.api.router.lifespan_context(built.api):
        yield built


def client(service: Service, scopes: list[Any]) -> httpx.AsyncClient:
    headers = scoped_headers(service.store, service.settings, scopes)
    transport = httpx.ASGITransport(app=service.api)
    return httpx.AsyncClient(transport=transport, base_url="http://pipelines", headers=headers)


async def until(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while not (found := await check()):
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.1)
    return found


async def finished(http: httpx.AsyncClient, execution_id: str) -> dict[str, Any]:
    last: list[dict[str, Any]] = [{}]

    async def check() -> dict[str, Any] | None:
        last[0] = body = (await http.get(f"/pipeline-executions/{execution_id}")).json()
        return body if body["status"] in ("Succeeded", "Failed", "Stopped") else None

    try:
        result: dict[str, Any] = await until(check, f"execution {execution_id} ends")
    except AssertionError as error:
        raise AssertionError(f"{error}: {last[0]}") from None
    return result


def steps(execution: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["name"]: step for step in execution["steps"]}


async def test_a_pipeline_retries_per_policy_and_a_second_run_is_served_from_the_cache(
    service: Service,
) -> None:
    name = unique_name("credit")
    document = credit_pipeline().to_dict() | {"name": name}
    async with (
        client(service, ["train", "read"]) as http,
        standing_in(service.settings, name) as stand_in,
    ):
        bad = {
            **document,
            "steps": [*document["steps"], {"name": "x", "type": "Fail", "depends_on": ["x"]}],
        }
        refused = await http.post("/pipelines", json={"name": name, "definition": bad})
        assert refused.status_code == 400 and "cycle" in refused.json()["error"]
        created = await http.post("/pipelines", json={"name": name, "definition": document})
        assert created.status_code == 201, created.text

        first = (await http.post(f"/pipelines/{name}/executions", json={"parameters": {}})).json()
        assert "execution_id" in first, first
        done = await finished(http, first["execution_id"])
        assert done["status"] == "Succeeded", done
        ran = steps(done)
        assert ran["train"]["attempt"] == 2  # the first attempt failed with `internal`: retried
        assert ran["register"]["properties"] == {"model_package_group": "credit", "version": 1}
        assert ran["too-weak"]["status"] == "Skipped"
        trainings = sorted(job for job in stand_in.seen if "-train-" in job)
        assert len(trainings) == 2

        second = (await http.post(f"/pipelines/{name}/executions", json={"parameters": {}})).json()
        again = await finished(http, second["execution_id"])
        assert again["status"] == "Succeeded", again
        cached = steps(again)
        assert cached["process"]["cache_hit"] and cached["train"]["cache_hit"]
        assert cached["process"]["source_execution_id"] == first["execution_id"]
        assert cached["train"]["properties"] == ran["train"]["properties"]
        # No new processing or training job was asked for: each job was requested once.
        assert sorted(job for job in stand_in.seen if "-train-" in job) == trainings
        assert len([job for job in stand_in.seen if "-process-" in job]) == 1


async def test_a_trigger_starts_once_per_event_even_when_the_event_is_redelivered(
    service: Service,
) -> None:
    name = unique_name("trig")
    dataset = unique_name("ds")
    document = credit_pipeline().to_dict() | {"name": name}
    async with (
        client(service, ["train", "read"]) as http,
        standing_in(service.settings, name, False),
    ):
        assert (
            await http.post("/pipelines", json={"name": name, "definition": document})
        ).status_code == 201
        unknown = await http.post(f"/pipelines/{name}/triggers", json={"on": "DatasetIngestd"})
        assert unknown.status_code == 400 and "DatasetIngestd" in unknown.json()["error"]
        unparsable = await http.post(
            f"/pipelines/{name}/triggers",
            json={"on": "DatasetIngested", "where": "data.dataset_name =="},
        )
        assert unparsable.status_code == 400 and "where" in unparsable.json()["error"]
        added = await http.post(
            f"/pipelines/{name}/triggers",
            json={
                "on": "DatasetIngested",
                "where": f'data.dataset_name == "{dataset}"',
                "parameters": {"dataset": "{data.uri}"},
            },
        )
        assert added.status_code == 201, added.text

        def ingested(version: int, dataset_name: str = dataset) -> DatasetIngested:
            return DatasetIngested(
                dataset_name=dataset_name,
                version=version,
                uri=f"dataset://{dataset_name}@{version}",
                location="datasets/x/",
                sha256=f"{version}" * 64,
                row_count=10,
                columns=[],
                created=True,
            )

        # The same envelope twice (a redelivery), an event the filter rejects, then a sentinel.
        envelope = envelope_for(ingested(1), source="any-client")
        message = outgoing_message(envelope, None)
        producer = AIOKafkaProducer(**kafka_client_options(service.settings, client_id="any"))
        await producer.start()
        try:
            for _ in range(2):
                await producer.send_and_wait(message.topic, message.value, key=message.key)
            other = outgoing_message(envelope_for(ingested(1, "other"), source="any-client"), None)
            await producer.send_and_wait(other.topic, other.value, key=other.key)
            sentinel = outgoing_message(envelope_for(ingested(2), source="any-client"), None)
            await producer.send_and_wait(sentinel.topic, sentinel.value, key=sentinel.key)
        finally:
            await producer.stop()

        async def sentinel_started() -> list[dict[str, Any]] | None:
            runs = (await http.get(f"/pipelines/{name}/executions")).json()["executions"]
            datasets = [run["parameters"]["dataset"] for run in runs]
            return runs if f"dataset://{dataset}@2" in datasets else None

        runs = await until(sentinel_started, "the sentinel event starts its execution")
        assert sorted(run["parameters"]["dataset"] for run in runs) == [
            f"dataset://{dataset}@1",
            f"dataset://{dataset}@2",
        ]
        assert all(run["trigger_name"] == added.json()["trigger_name"] for run in runs)


async def test_a_callback_step_waits_for_its_token_and_bad_requests_get_4xx(
    service: Service,
) -> None:
    name = unique_name("human")
    document = {
        "parameters": {"threshold": {"type": "float", "default": 0.5}},
        "steps": [
            {"name": "review", "type": "Callback", "outputs": {"approved": "boolean"}},
            {
                "name": "check",
                "type": "Condition",
                "condition": {
                    "op": "==",
                    "left": {"get": "steps.review.outputs.approved"},
                    "right": True,
                },
                "if_steps": [],
                "else_steps": ["rejected"],
            },
            {"name": "rejected", "type": "Fail", "error_message": "a person said no"},
        ],
    }
    async with client(service, ["train", "read"]) as http:
        assert (
            await http.post("/pipelines", json={"name": name, "definition": document})
        ).status_code == 201
        unknown = await http.post(
            f"/pipelines/{name}/executions", json={"parameters": {"treshold": 1}}
        )
        assert unknown.status_code == 400 and "treshold" in unknown.json()["error"]
        typed = await http.post(
            f"/pipelines/{name}/executions", json={"parameters": {"threshold": "high"}}
        )
        assert typed.status_code == 400 and "threshold" in typed.json()["error"]
        assert (await http.get("/pipeline-executions/nope")).status_code == 404
        assert (await http.put("/pipelines/nope", json={"definition": document})).status_code == 404
        assert (await http.post("/pipeline-executions/callbacks/short", json={})).status_code == 400

        runs = []
        for approved in (True, False):
            run = (await http.post(f"/pipelines/{name}/executions", json={})).json()

            waiting = await until(
                lambda run_id=run["execution_id"]: token_of(http, run_id), "the callback waits"
            )
            sent = await http.post(
                f"/pipeline-executions/callbacks/{waiting}",
                json={"outputs": {"approved": approved}},
            )
            assert sent.status_code == 202, sent.text
            runs.append(await finished(http, run["execution_id"]))
        assert [run["status"] for run in runs] == ["Succeeded", "Failed"]
        assert runs[1]["failure_reason"] == "step rejected: a person said no"

        # A Fail step fails again when retried; a stopped execution resumes where it stopped.
        retried = await http.post(f"/pipeline-executions/{runs[1]['execution_id']}/retry")
        assert retried.status_code == 200 and retried.json()["status"] == "Failed"
        third = (await http.post(f"/pipelines/{name}/executions", json={})).json()["execution_id"]
        waiting = await until(lambda: token_of(http, third), "the third callback waits")
        stopped = await http.post(f"/pipeline-executions/{third}/stop")
        assert stopped.json()["status"] == "Stopped"
        resumed = await http.post(f"/pipeline-executions/{third}/retry")
        assert resumed.json()["status"] == "Executing"
        await http.post(
            f"/pipeline-executions/callbacks/{waiting}", json={"outputs": {"approved": True}}
        )
        assert (await finished(http, third))["status"] == "Succeeded"
        again = await http.post(f"/pipeline-executions/{third}/retry")
        assert again.status_code == 409  # a succeeded execution is not retried


async def token_of(http: httpx.AsyncClient, execution_id: str) -> str | None:
    body = (await http.get(f"/pipeline-executions/{execution_id}")).json()
    found: str | None = steps(body)["review"]["callback_token"]
    return found
