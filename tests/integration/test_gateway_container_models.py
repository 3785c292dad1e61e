"""Packages served by their own image (SageMaker's hosting contract) on a real Docker engine.

The gateway is served in-process over ASGI with its store on the real S3 server; the engine is
the `docker_engine` fixture's and the image the test image of tests/support/docker_engine.py
(`serve`: /ping and /invocations reading /opt/ml/model/factor.txt; `train`: the /opt/ml training
contract). A container that answers 500, hangs or exits fails that request with a ModelError,
the next request is served; nothing is left on the engine once the gateway stops. Without an
engine the request gets 503 and the gateway stays healthy.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cairn.artifacts import Lineage, ModelManifest, Signature, read_manifest, write_model_package
from cairn.contracts.events import (
    InputChannel,
    MetricDefinition,
    TrainingJobRequested,
)
from cairn.store import InMemoryObjectStore, ObjectStore

from services.gateway.app import create_service
from services.gateway.config import GatewaySettings
from services.gateway.container_models import LABEL_GATEWAY, LABEL_MODEL, ContainerModel
from services.gateway.gateway import Gateway
from services.gateway.handlers import GatewayHandlers
from services.trainer.algorithms import TrainingContext
from services.trainer.domain import JobFailure
from services.trainer.execution import run_job
from tests.support.auth import auth_settings, scoped_headers
from tests.support.docker_engine import DockerEngine
from tests.support.endpoints import store_endpoint

pytestmark = pytest.mark.integration

ENDPOINT = "boxed"
INVOKE = f"/endpoints/{ENDPOINT}/invocations"


def container_package(store: ObjectStore, image: str, factor: str = "2", **environment: str) -> str:
    manifest = ModelManifest(
        framework="script",
        framework_version="python3",
        algorithm="script",
        task="custom",
        signature=Signature(),
        lineage=Lineage(algorithm="script"),
        details={"image": image, "environment": {"MODEL_GREETING": "hello", **environment}},
    )
    prefix = f"models/boxed-{uuid.uuid4().hex[:8]}/"
    return write_model_package(store, prefix, manifest, {"factor.txt": factor.encode()})


def deploy(store: ObjectStore, uri: str) -> None:
    store_endpoint(store, ENDPOINT, uri, variant="boxed")


@asynccontextmanager
async def gateway(
    store: ObjectStore, home: Path, **settings: Any
) -> AsyncIterator[tuple[Gateway, httpx.AsyncClient]]:
    config = GatewaySettings(capture_sample_rate=0, script_invocation_timeout_s=2.0, **settings)
    service = create_service(auth_settings(home=home), store, config)
    gateway: Gateway = service.api.state.gateway
    handlers = GatewayHandlers(gateway, store, service.publish)
    await handlers.load_stored_endpoints()
    headers = scoped_headers(service.store, service.settings, ["invoke"])
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=service.asgi),
            base_url="http://gateway.test",
            headers=headers,
            timeout=60,
        ) as client:
            yield gateway, client
    finally:
        await handlers.close(gateway)


def served_model(gateway: Gateway) -> ContainerModel:
    model = gateway.table.get(ENDPOINT).variants["boxed"].serving.model
    assert isinstance(model, ContainerModel)
    return model


def labelled(engine: DockerEngine, instance: str) -> list[Any]:
    return list(
        engine.client.containers.list(all=True, filters={"label": f"{LABEL_GATEWAY}={instance}"})
    )


async def call(client: httpx.AsyncClient, body: object, **headers: str) -> httpx.Response:
    return await client.post(
        INVOKE, content=json.dumps(body), headers={"Content-Type": "application/json", **headers}
    )


class TestContainerModels:
    async def test_the_image_serves_invocations_and_its_failures_are_model_errors(
        self, docker_engine: DockerEngine, model_image: str, s3_store: ObjectStore, tmp_path: Path
    ) -> None:
        instance = f"test-{uuid.uuid4().hex[:8]}"
        stale = docker_engine.client.containers.create(
            model_image, ["serve"], labels={LABEL_GATEWAY: instance}
        )  # what a crashed run of this gateway left
        uri = container_package(s3_store, model_image)
        deploy(s3_store, uri)
        engine = {"container_engine_url": docker_engine.url, "container_instance": instance}
        async with gateway(s3_store, tmp_path, **engine) as (served, client):
            assert [c.id for c in labelled(docker_engine, instance)] == []
            model = served_model(served)
            assert model.container is None  # started by the first request, not at load

            answer = await call(client, [1, 2.5], Accept="application/json")
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"predictions": [3.0, 6.0], "accept": "application/json"}
            assert answer.headers["x-amzn-invoked-production-variant"] == "boxed"
            [running] = labelled(docker_engine, instance)
            assert running.labels[LABEL_MODEL] == uri
            names = (await call(client, "env")).json()
            assert "MODEL_GREETING" in names  # the package's environment, none of the gateway's
            assert not [n for n in names if n.startswith(("CAIRN_", "AWS_"))]
            assert stale.id not in [c.id for c in docker_engine.client.containers.list(all=True)]

            failed = await call(client, "raise")
            assert failed.status_code == 424 and failed.headers["x-amzn-errortype"] == "ModelError"
            assert failed.json()["OriginalStatusCode"] == 500
            assert "ValueError: the model refuses" in failed.json()["OriginalMessage"]
            refused = await call(client, "refuse")
            assert refused.status_code == 424 and refused.json()["OriginalStatusCode"] == 400
            csv = await client.post(INVOKE, content=b"1,2", headers={"Content-Type": "text/csv"})
            assert csv.status_code == 424 and csv.json()["OriginalStatusCode"] == 415
            assert model.starts == 1  # answering an error does not cost the container

            hung = await call(client, "hang")  # the 2 s invocation timeout answers it
            assert hung.status_code == 424 and "did not answer within 2 s" in hung.json()["message"]
            assert (await call(client, [10])).json()["predictions"] == [21.0]
            assert model.starts == 2
            [restarted] = labelled(docker_engine, instance)  # the hung one removed
            assert restarted.id != running.id

            died = await call(client, "exit")
            assert died.status_code == 424
            assert "died while answering (exit code 3)" in died.json()["message"]
            assert (await call(client, [-1])).json()["predictions"] == [-1.0]
            assert model.starts == 3
            assert (await client.get("/ping")).json() == {"status": "Healthy"}
            assert len(labelled(docker_engine, instance)) == 1
        assert labelled(docker_engine, instance) == []  # removed when the gateway stops
        assert not model.root.exists()

    async def test_on_a_network_the_files_are_copied_in_and_eviction_removes_the_container(
        self, docker_engine: DockerEngine, model_image: str, s3_store: ObjectStore, tmp_path: Path
    ) -> None:
        """A gateway in a container (compose) shares no files with the engine: copied in."""
        from docker.types import IPAMConfig, IPAMPool

        network = docker_engine.client.networks.create(
            f"cairn-test-{uuid.uuid4().hex[:8]}",
            ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=f"198.19.{os.getpid() % 250}.0/24")]),
        )
        instance = f"test-{uuid.uuid4().hex[:8]}"
        deploy(s3_store, container_package(s3_store, model_image, factor="5"))
        settings = {
            "container_engine_url": docker_engine.url,
            "container_instance": instance,
            "container_network": network.name,
        }
        try:
            async with gateway(s3_store, tmp_path, **settings) as (served, client):
                answer = await call(client, [1])
                assert answer.status_code == 200, answer.text
                assert answer.json()["predictions"] == [6.0]
                [running] = labelled(docker_engine, instance)
                address = running.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
                assert served_model(served).base_url == f"http://{address}:8080"
                served.scripts.evicted(served_model(served))  # the multi-model cache drops it
                deadline = time.monotonic() + 60
                while labelled(docker_engine, instance):  # removed off the event loop
                    assert time.monotonic() < deadline, "the evicted model's container stayed"
                    await asyncio.sleep(0.05)
        finally:
            network.remove()
        assert labelled(docker_engine, instance) == []

    async def test_an_image_training_job_runs_on_the_engine_and_its_package_is_served(
        self,
        docker_engine: DockerEngine,
        model_image: str,
        s3_store: ObjectStore,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The trainer's container backend (docker.from_env: DOCKER_HOST) end to end."""
        monkeypatch.setenv("DOCKER_HOST", docker_engine.url)
        s3_store.put_bytes("data/boxed/train.csv", b"1,2\n3,4\n5,6\n")
        request = TrainingJobRequested(
            job_name=f"boxed-{uuid.uuid4().hex[:8]}",
            algorithm="script",
            image=model_image,
            hyperparameters={"factor": 3},
            input_channels=[InputChannel(name="train", uri="data/boxed/train.csv")],
            metric_definitions=[MetricDefinition(name="train:loss", regex=r"loss: ([0-9.]+)")],
        )
        logs: list[str] = []
        result = run_job(s3_store, request, "models/trained/", TrainingContext(log=logs.append))
        assert any("training with" in line for line in logs), logs
        manifest = read_manifest(s3_store, result.artifact_uri)
        assert manifest.framework == "script" and manifest.details["image"] == model_image
        assert manifest.metrics == {"train:loss": 0.25}  # read from its log lines
        assert s3_store.get_bytes(result.artifact_uri.rstrip("/") + "/rows.txt") == b"3"

        failing = request.model_copy(update={"hyperparameters": {"fail": "yes"}})
        with pytest.raises(JobFailure, match="the image was told to fail"):
            run_job(s3_store, failing, "models/failed/", TrainingContext())

        deploy(s3_store, result.artifact_uri)
        instance = f"test-{uuid.uuid4().hex[:8]}"
        engine = {"container_engine_url": docker_engine.url, "container_instance": instance}
        async with gateway(s3_store, tmp_path, **engine) as (_, client):
            assert (await call(client, [2])).json()["predictions"] == [7.0]

    async def test_an_image_that_cannot_run_fails_the_job_and_the_request(
        self,
        docker_engine: DockerEngine,
        model_image: str,
        s3_store: ObjectStore,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        absent = "registry.invalid/cairn/absent:1"  # .invalid never resolves: fails at once
        monkeypatch.setenv("DOCKER_HOST", docker_engine.url)
        s3_store.put_bytes("data/absent/train.csv", b"1,2\n")
        request = TrainingJobRequested(
            job_name=f"absent-{uuid.uuid4().hex[:8]}",
            algorithm="script",
            image=absent,
            input_channels=[InputChannel(name="train", uri="data/absent/train.csv")],
        )
        with pytest.raises(JobFailure, match="could not be pulled") as failure:
            run_job(s3_store, request, "models/absent/", TrainingContext())
        assert failure.value.code == "invalid_input"

        deploy(s3_store, container_package(s3_store, absent))
        engine = {"container_engine_url": docker_engine.url, "container_instance": "absent"}
        async with gateway(s3_store, tmp_path, **engine) as (_, client):
            answer = await call(client, [1])
            assert answer.status_code == 424, answer.text
            assert f"the engine could not start {absent}" in answer.json()["OriginalMessage"]
            assert (await client.get("/ping")).json() == {"status": "Healthy"}

        deploy(s3_store, container_package(s3_store, model_image, SERVE_EXIT="now"))
        async with gateway(s3_store, tmp_path, **engine) as (_, client):
            answer = await call(client, [1])
            assert answer.status_code == 424, answer.text
            message = answer.json()["OriginalMessage"]
            assert "exited with code 1 before answering /ping" in message
            assert "told to exit before serving (now)" in message  # its last output


async def test_without_an_engine_the_request_gets_503_and_the_gateway_stays_healthy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = InMemoryObjectStore()
    deploy(store, container_package(store, "cairn-nowhere:1"))
    nowhere = f"unix://{tmp_path / 'no-docker.sock'}"
    async with gateway(store, tmp_path, container_engine_url=nowhere) as (_, client):
        answer = await call(client, [1])
        assert answer.status_code == 503, answer.text
        assert answer.headers["x-amzn-errortype"] == "ServiceUnavailable"
        assert "no container engine is reachable at unix://" in answer.json()["message"]
        assert (await client.get("/ping")).json() == {"status": "Healthy"}

    monkeypatch.setitem(sys.modules, "docker", None)  # the `docker` extra not installed
    async with gateway(store, tmp_path) as (_, client):
        answer = await call(client, [1])
        assert answer.status_code == 503, answer.text
        assert "`docker` Python package is not installed" in answer.json()["message"]
