"""The polling loop, the pools API, the Docker backend (with a fake Docker client), declared pools
and KEDA."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from cairn.contracts.events import WorkerPoolScaled
from cairn.contracts.state import WorkerPoolDeclaration, write_state
from cairn.errors import ConfigError, Unavailable
from cairn.service import Service
from cairn.store import InMemoryObjectStore

from services.autoscaler.app import create_service
from services.autoscaler.backends import DockerBackend, WorkerBackend
from services.autoscaler.backends.docker import POOL_LABEL
from services.autoscaler.config import AutoscalerSettings
from services.autoscaler.handlers import Autoscaler
from services.autoscaler.keda import keda_scaled_object
from services.autoscaler.pools import WorkerPool, select_pools
from tests.support.auth import PLATFORM_KEY, auth_settings, scoped_headers


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


async def quiet_lag(pool: WorkerPool) -> int:
    return 35


async def quiet_publish(event: WorkerPoolScaled) -> None:
    return None


@pytest.fixture
async def api() -> AsyncIterator[tuple[Service, InMemoryObjectStore, httpx.AsyncClient]]:
    store = InMemoryObjectStore()
    service = create_service(
        auth_settings(store_url="memory://autoscaler-unit"),
        store,
        pools=[make_pool(max_replicas=20)],
        backend=CountingBackend(),
    )
    transport = httpx.ASGITransport(app=service.api)
    async with httpx.AsyncClient(transport=transport, base_url="http://autoscaler") as client:
        yield service, store, client


async def test_get_pools_shows_current_desired_lag_and_the_last_decision(
    api: tuple[Service, InMemoryObjectStore, httpx.AsyncClient],
) -> None:
    service, store, client = api
    scaler: Autoscaler = service.api.state.autoscaler
    scaler.lag_reader, scaler.publish = quiet_lag, quiet_publish
    await scaler.poll("trainer-cpu")
    reader = scoped_headers(store, service.settings, ["read"])
    listed = (await client.get("/pools", headers=reader)).json()["pools"]
    missing = await client.get("/pools/nope", headers=reader)
    assert missing.status_code == 404
    [view] = listed
    assert view["max_replicas"] == 8  # 20 clamped to TrainingJobRequested's 8 partitions
    assert (view["current"], view["desired"], view["lag"]) == (4, 4, 35)
    assert view["last_change"]["target"] == 4
    assert view["topics"] == ["cairn.trainer.training-job-requested"]


async def test_the_pools_api_needs_a_credential(
    api: tuple[Service, InMemoryObjectStore, httpx.AsyncClient],
) -> None:
    service, store, client = api
    paths = ["/pools", "/pools/trainer-cpu", "/keda/scaled-objects?bootstrap_servers=k:9092"]
    for path in paths:
        assert (await client.get(path)).status_code == 401, path
    reader = scoped_headers(store, service.settings, ["read"])
    for path in paths:
        assert (await client.get(path, headers=reader)).status_code == 200, path


async def test_the_api_renders_keda_scaled_objects_of_the_managed_pools(
    api: tuple[Service, InMemoryObjectStore, httpx.AsyncClient],
) -> None:
    service, store, client = api
    reader = scoped_headers(store, service.settings, ["read"])
    rendered = await client.get(
        "/keda/scaled-objects",
        params={"bootstrap_servers": "k:9092", "namespace": "ml"},
        headers=reader,
    )
    [manifest] = rendered.json()["scaled_objects"]
    assert manifest["metadata"] == {
        "name": "trainer-cpu",
        "namespace": "ml",
        "labels": {"app.kubernetes.io/part-of": "cairn", "cairn.pool": "trainer-cpu"},
    }
    assert manifest["spec"]["triggers"][0]["metadata"]["bootstrapServers"] == "k:9092"
    unknown = await client.get(
        "/keda/scaled-objects",
        params={"bootstrap_servers": "k:9092", "pool": "nope"},
        headers=reader,
    )
    assert unknown.status_code == 404


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
    settings = auth_settings(kafka_bootstrap_servers="kafka:9092", store_url="s3://cairn")
    backend = DockerBackend(
        client, settings, image="cairn:1", network="cairn_default", drain_timeout_s=45
    )
    gpu_pool = make_pool(name="trainer-gpu", gpu=True, env={"CAIRN_TRAINER_DEVICE": "gpu"})
    assert await backend.scale(gpu_pool, 2) == 2
    call = client.containers.run_calls[0]
    assert call["image"] == "cairn:1"
    assert call["command"] == ["python", "-m", "services.trainer"]
    assert call["network"] == "cairn_default"
    assert call["labels"][POOL_LABEL] == "trainer-gpu"
    assert call["environment"]["CAIRN_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert call["environment"]["CAIRN_TRAINER_DEVICE"] == "gpu"
    # The worker signs its events with the credentials the same platform key derives.
    assert call["environment"]["CAIRN_PLATFORM_KEY"] == PLATFORM_KEY
    [request] = call["device_requests"]
    assert request["Capabilities"] == [["gpu"]] and request["Count"] == -1

    cpu_pool = make_pool()
    await backend.scale(cpu_pool, 1)
    assert "device_requests" not in client.containers.run_calls[-1]
    assert await backend.current(gpu_pool) == 2


async def test_docker_backend_drains_the_newest_containers_with_the_drain_timeout() -> None:
    client = FakeDockerClient()
    backend = DockerBackend(
        client, auth_settings(kafka_bootstrap_servers="k:9092"), image="cairn:1", drain_timeout_s=45
    )
    pool = make_pool()
    await backend.scale(pool, 3)
    oldest, middle, newest = client.containers.created
    assert await backend.scale(pool, 1) == 1
    await _wait_stopped([middle, newest])
    assert (newest.stopped_with, middle.stopped_with, oldest.stopped_with) == (45, 45, None)
    assert await backend.current(pool) == 1


# Declarations and KEDA --------------------------------------------------------------------------


def declaration(**overrides: Any) -> WorkerPoolDeclaration:
    fields: dict[str, Any] = {
        "name": "labeler",
        "service": "labeling",
        "module": "services.labeling",
        "group_id": "cairn.labeling",
        "event_types": ["TrainingJobRequested"],
        "max_replicas": 30,
    }
    return WorkerPoolDeclaration(**(fields | overrides))


async def test_pools_a_service_declares_are_found_and_sized_within_their_partitions() -> None:
    store = InMemoryObjectStore()
    service = create_service(
        auth_settings(store_url="memory://declared"),
        store,
        AutoscalerSettings(pool_overrides={"labeler": {"lag_threshold": 3}}),
        backend=CountingBackend(),
    )
    scaler: Autoscaler = service.api.state.autoscaler
    await scaler.refresh()
    assert scaler.status == {}  # nothing declared yet
    write_state(store, declaration(), "labeler")
    write_state(store, declaration(name="broken", event_types=["NoSuchThing"]), "broken")
    write_state(store, declaration(name="upside-down", min_replicas=3, max_replicas=2), "x")
    store.put_bytes("platform/pools/garbage.json", b"{")
    await scaler.refresh()
    assert set(scaler.status) == {"labeler"}  # the bad declarations are left out, logged
    labeler = scaler.status["labeler"].pool
    assert (labeler.max_replicas, labeler.lag_threshold, labeler.service) == (8, 3, "labeling")

    scaler.lag_reader, scaler.publish = quiet_lag, quiet_publish
    await scaler.poll("labeler")
    write_state(store, declaration(max_replicas=2), "labeler")  # the owner changes its mind
    await scaler.refresh()
    assert scaler.status["labeler"].pool.max_replicas == 2
    assert scaler.status["labeler"].last_decision is not None  # its history is kept


async def test_the_autoscaler_manages_only_the_pools_it_is_told_to() -> None:
    store = InMemoryObjectStore()
    service = create_service(
        auth_settings(store_url="memory://chosen"),
        store,
        AutoscalerSettings(pools=["labeler"]),
        backend=CountingBackend(),
    )
    write_state(store, declaration(), "labeler")
    write_state(store, declaration(name="other"), "other")
    scaler: Autoscaler = service.api.state.autoscaler
    await scaler.refresh()
    assert set(scaler.status) == {"labeler"}


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


def test_the_trainers_declared_pools_fit_their_own_partitions_without_clamping() -> None:
    from services.trainer.pools import TRAINER_POOLS

    pools = {pool.name: pool for pool in select_pools(list(TRAINER_POOLS))}
    assert {name: pool.max_replicas for name, pool in pools.items()} == {
        "trainer-cpu": 6,
        "trainer-gpu": 2,
    }
    # GPU work has its own topic and group, so each pool is sized on its own lag.
    assert pools["trainer-cpu"].group_id == "cairn.trainer"
    assert pools["trainer-gpu"].group_id == "cairn.trainer.gpu"
    assert all(pool.max_replicas <= pool.partition_count() for pool in pools.values())
    assert pools["trainer-gpu"].gpu and pools["trainer-gpu"].env == {"CAIRN_TRAINER_DEVICE": "gpu"}
