"""The polling loop, the Docker backend (with a fake Docker client), pool discovery and KEDA."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cairn.contracts.events import WorkerPoolScaled
from cairn.errors import ConfigError, Unavailable
from cairn.pools import BUILTIN_POOLS, WorkerPool, keda_scaled_object, load_pools
from cairn.settings import CairnSettings
from typer.testing import CliRunner

from services.autoscaler.app import create_service
from services.autoscaler.backends import DockerBackend, WorkerBackend
from services.autoscaler.backends.docker import POOL_LABEL
from services.autoscaler.handlers import Autoscaler


def make_pool(**overrides: Any) -> WorkerPool:
    fields: dict[str, Any] = {
        "name": "trainer-cpu",
        "module": "services.trainer",
        "group_id": "cairn.trainer",
        "event_types": ["TrainingJobRequested"],
        "lag_threshold": 10,
        "activation_lag_threshold": 5,
        "max_replicas": 4,
        "scale_down_cooldown_s": 3.0,
    }
    return WorkerPool.model_validate(fields | overrides)


class CountingBackend(WorkerBackend):
    """Remembers replica counts instead of starting anything."""

    def __init__(self) -> None:
        self.replicas: dict[str, int] = {}

    async def current(self, pool: WorkerPool) -> int:
        return self.replicas.get(pool.name, 0)

    async def scale(self, pool: WorkerPool, replicas: int) -> int:
        self.replicas[pool.name] = replicas
        return replicas


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_every_change_is_scaled_and_emitted_and_steady_rounds_are_quiet() -> None:
    lags = {"trainer-cpu": 200}
    emitted: list[WorkerPoolScaled] = []
    clock = FakeClock()
    backend = CountingBackend()

    async def lag_of(pool: WorkerPool) -> int:
        return lags[pool.name]

    async def publish(event: WorkerPoolScaled) -> None:
        emitted.append(event)

    scaler = Autoscaler([make_pool()], backend, lag_of, publish, clock=clock)
    await scaler.poll("trainer-cpu")
    assert backend.replicas["trainer-cpu"] == 4
    lags["trainer-cpu"] = 0
    for now in (1.0, 2.0, 3.0):
        clock.now = now
        await scaler.poll("trainer-cpu")
    assert backend.replicas["trainer-cpu"] == 0
    assert [(e.from_replicas, e.to_replicas, e.lag) for e in emitted] == [(0, 4, 200), (4, 0, 0)]
    assert "cooldown" in emitted[1].reason


async def test_an_unreadable_lag_keeps_the_pool_as_it_is() -> None:
    backend = CountingBackend()
    backend.replicas["trainer-cpu"] = 2

    async def lag_of(pool: WorkerPool) -> int:
        raise Unavailable("broker down")

    async def publish(event: WorkerPoolScaled) -> None:
        raise AssertionError("nothing changed, nothing to say")

    scaler = Autoscaler([make_pool()], backend, lag_of, publish)
    assert await scaler.poll("trainer-cpu") is None
    assert backend.replicas["trainer-cpu"] == 2
    assert "broker down" in (scaler.status["trainer-cpu"].error or "")


async def test_get_pools_shows_current_desired_lag_and_the_last_decision() -> None:
    settings = CairnSettings(
        kafka_bootstrap_servers="127.0.0.1:1", store_url="memory://autoscaler-unit"
    )
    backend = CountingBackend()
    service = create_service(settings, pools=[make_pool(max_replicas=20)], backend=backend)
    scaler: Autoscaler = service.api.state.autoscaler

    async def lag_of(pool: WorkerPool) -> int:
        return 35

    async def publish(event: WorkerPoolScaled) -> None:
        return None

    scaler.lag_reader, scaler.publish = lag_of, publish
    await scaler.poll("trainer-cpu")
    transport = httpx.ASGITransport(app=service.api)
    async with httpx.AsyncClient(transport=transport, base_url="http://autoscaler") as client:
        listed = (await client.get("/pools")).json()["pools"]
        missing = await client.get("/pools/nope")
    assert missing.status_code == 404
    [view] = listed
    assert view["max_replicas"] == 8  # 20 clamped to TrainingJobRequested's 8 partitions
    assert (view["current"], view["desired"], view["lag"]) == (4, 4, 35)
    assert view["last_change"]["target"] == 4
    assert view["topics"] == ["cairn.trainer.training-job-requested"]


# Docker backend ---------------------------------------------------------------------------------


@dataclass
class FakeContainer:
    id: str
    labels: dict[str, str]
    created: str
    status: str = "running"
    stopped_with: int | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    def stop(self, timeout: int) -> None:
        self.stopped_with = timeout
        self.status = "exited"

    def remove(self) -> None:
        self.status = "removed"


class FakeDockerContainers:
    def __init__(self) -> None:
        self.created: list[FakeContainer] = []
        self.run_calls: list[dict[str, Any]] = []

    def list(self, filters: dict[str, list[str]]) -> list[FakeContainer]:
        wanted = dict(label.split("=", 1) for label in filters["label"])
        return [
            c
            for c in self.created
            if c.status == "running" and all(c.labels.get(k) == v for k, v in wanted.items())
        ]

    def run(self, image: str, **options: Any) -> FakeContainer:
        self.run_calls.append({"image": image, **options})
        stamp = f"2026-11-01T00:00:{len(self.created):02d}Z"
        container = FakeContainer(
            id=f"c{len(self.created):011d}",
            labels=options["labels"],
            created=stamp,
            attrs={"Created": stamp},
        )
        self.created.append(container)
        return container


class FakeDockerClient:
    """Stands in for `docker.DockerClient`: no Docker engine runs on these machines."""

    def __init__(self) -> None:
        self.containers = FakeDockerContainers()


async def _wait_stopped(containers: list[FakeContainer]) -> None:
    import asyncio

    for _ in range(100):
        if all(c.status == "removed" for c in containers):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("containers were not stopped")


async def test_docker_backend_runs_labelled_containers_and_asks_gpu_pools_for_gpus() -> None:
    client = FakeDockerClient()
    settings = CairnSettings(kafka_bootstrap_servers="kafka:9092", store_url="s3://cairn")
    backend = DockerBackend(
        client, settings, image="cairn:1", network="cairn_default", drain_timeout_s=45
    )
    gpu_pool = next(p for p in BUILTIN_POOLS if p.name == "trainer-gpu")
    assert await backend.scale(gpu_pool, 2) == 2
    call = client.containers.run_calls[0]
    assert call["image"] == "cairn:1"
    assert call["command"] == ["python", "-m", "services.trainer"]
    assert call["network"] == "cairn_default"
    assert call["labels"][POOL_LABEL] == "trainer-gpu"
    assert call["environment"]["CAIRN_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert call["environment"]["CAIRN_TRAINER_DEVICE"] == "gpu"
    [request] = call["device_requests"]
    assert request["Capabilities"] == [["gpu"]] and request["Count"] == -1

    cpu_pool = next(p for p in BUILTIN_POOLS if p.name == "trainer-cpu")
    await backend.scale(cpu_pool, 1)
    assert "device_requests" not in client.containers.run_calls[-1]
    assert await backend.current(gpu_pool) == 2


async def test_docker_backend_drains_the_newest_containers_with_the_drain_timeout() -> None:
    client = FakeDockerClient()
    backend = DockerBackend(
        client, CairnSettings(kafka_bootstrap_servers="k:9092"), image="cairn:1", drain_timeout_s=45
    )
    pool = make_pool()
    await backend.scale(pool, 3)
    oldest, middle, newest = client.containers.created
    assert await backend.scale(pool, 1) == 1
    await _wait_stopped([middle, newest])
    assert (newest.stopped_with, middle.stopped_with, oldest.stopped_with) == (45, 45, None)
    assert await backend.current(pool) == 1


# Declarations and KEDA --------------------------------------------------------------------------


def test_a_service_declares_its_pool_in_pools_py(tmp_path: Path) -> None:
    service = tmp_path / "extra" / "labeler"
    service.mkdir(parents=True)
    (service / "__main__.py").write_text("")
    (service / "pools.py").write_text(
        "from cairn.pools import WorkerPool\n"
        "POOLS = [WorkerPool(name='labeler', module='labeler', group_id='cairn.labeler',\n"
        "                    event_types=['TrainingJobRequested'], max_replicas=30)]\n"
    )
    import sys

    sys.path.insert(0, str(tmp_path / "extra"))
    try:
        pools = {p.name: p for p in load_pools(CairnSettings(services_paths=[tmp_path / "extra"]))}
    finally:
        sys.path.remove(str(tmp_path / "extra"))
        sys.modules.pop("labeler.pools", None)
        sys.modules.pop("labeler", None)
    assert {"trainer-cpu", "trainer-gpu", "labeler"} <= set(pools)
    assert pools["labeler"].max_replicas == 8


def test_a_pool_on_an_unknown_event_type_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="NoSuchThing"):
        make_pool(event_types=["NoSuchThing"]).topics()


def test_keda_scaled_object_carries_the_same_numbers() -> None:
    pool = make_pool(max_replicas=12, polling_interval_s=0.5, scale_down_cooldown_s=90)
    manifest = keda_scaled_object(pool, bootstrap_servers="kafka:9092", namespace="ml")
    spec = manifest["spec"]
    assert manifest["kind"] == "ScaledObject" and manifest["metadata"]["namespace"] == "ml"
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (0, 8)
    assert spec["pollingInterval"] == 1 and spec["cooldownPeriod"] == 90
    [trigger] = spec["triggers"]
    assert trigger["metadata"]["consumerGroup"] == "cairn.trainer"
    assert trigger["metadata"]["lagThreshold"] == "10"
    assert trigger["metadata"]["activationLagThreshold"] == "5"


def test_cli_renders_keda_yaml_for_every_pool() -> None:
    from cairn.cli import app

    result = CliRunner().invoke(app, ["pools", "render-keda", "--bootstrap-servers", "k:9092"])
    assert result.exit_code == 0, result.output
    documents = list(yaml.safe_load_all(result.output))
    by_name = {d["metadata"]["name"]: d for d in documents}
    assert {"trainer-cpu", "trainer-gpu"} <= set(by_name)
    assert by_name["trainer-cpu"]["spec"]["triggers"][0]["metadata"]["bootstrapServers"] == "k:9092"
