"""Deployer handlers and HTTP API on an in-memory store with a fake clock and recorded events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cairn.contracts.envelope import Envelope
from cairn.contracts.events import (
    DeploymentRequested,
    EndpointUpdated,
    ModelApprovalChanged,
    ModelPackageRegistered,
    RolloutPolicy,
    VariantSpec,
)
from cairn.settings import CairnSettings
from cairn.store.memory import InMemoryObjectStore
from pydantic import BaseModel

from services.deployer.app import create_service
from services.deployer.config import DeployerSettings
from services.deployer.domain import AutoDeployPolicy
from services.deployer.handlers import Deployer


class Recorder:
    """Stands in for the service's publish: keeps what would have gone to Kafka."""

    def __init__(self) -> None:
        self.events: list[BaseModel] = []

    async def __call__(self, data: BaseModel, cause: Envelope[Any] | None = None) -> Any:
        self.events.append(data)
        return None

    def updates(self, endpoint: str) -> list[EndpointUpdated]:
        return [
            e for e in self.events if isinstance(e, EndpointUpdated) and e.endpoint_name == endpoint
        ]


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def envelope(data: BaseModel) -> Envelope[Any]:
    return Envelope[type(data)](
        type=type(data).__name__, source="test", correlation_id="c", data=data
    )  # type: ignore[misc]


async def known(deployer: Deployer, *versions: int, status: str = "Approved") -> None:
    for version in versions:
        await deployer.on_model_registered(
            envelope(
                ModelPackageRegistered(
                    model_package_group="credit",
                    version=version,
                    artifact_uri=f"models/job-{version}/",
                    approval_status=status,  # type: ignore[arg-type]
                )
            )
        )


@pytest.fixture
def store() -> InMemoryObjectStore:
    return InMemoryObjectStore("deployer-unit")


async def test_approval_auto_deploys_then_canaries_and_a_restarted_driver_finishes(
    store: InMemoryObjectStore,
) -> None:
    recorder, clock = Recorder(), Clock()
    deployer = Deployer(store, recorder, DeployerSettings(), clock)
    await known(deployer, 1, 2, status="PendingManualApproval")
    deployer.put_policy(
        "credit",
        AutoDeployPolicy(
            endpoint_name="live",
            rollout=RolloutPolicy(mode="canary", canary_percent=25, bake_time_s=60),
        ),
    )

    for version in (1, 2):
        await deployer.on_approval_changed(
            envelope(
                ModelApprovalChanged(
                    model_package_group="credit",
                    version=version,
                    approval_status="Approved",
                    changed_by="a",
                )
            )
        )
    revisions = [
        (u.revision, u.status, {v.variant_name: v.weight for v in u.production_variants})
        for u in recorder.updates("live")
    ]
    assert revisions == [
        (1, "InService", {"AllTraffic": 1.0}),
        (2, "Updating", {"AllTraffic": 0.25, "AllTraffic-previous": 0.75}),
    ]

    # The process restarts mid-bake: a new Deployer on the same store resumes the rollout.
    restarted = Deployer(store, recorder, DeployerSettings(), clock)
    await restarted.tick()
    assert len(recorder.updates("live")) == 2
    clock.now += timedelta(seconds=61)
    await restarted.tick()
    final = recorder.updates("live")[-1]
    assert (final.revision, final.status) == (3, "InService")
    assert [(v.model_version, v.weight) for v in final.production_variants] == [(2, 1.0)]
    assert restarted.get_endpoint("live").published_revision == 3


async def test_lost_announcement_is_republished_by_the_driver(store: InMemoryObjectStore) -> None:
    recorder, clock = Recorder(), Clock()

    async def crash(data: BaseModel, cause: Envelope[Any] | None = None) -> Any:
        raise ConnectionError("broker went away")

    crashing = Deployer(store, crash, DeployerSettings(republish_after_s=5), clock)
    await known(crashing, 1)
    request = DeploymentRequested(
        endpoint_name="live",
        production_variants=[
            VariantSpec(variant_name="a", model_package_group="credit", model_version=1)
        ],
    )
    with pytest.raises(ConnectionError):
        await crashing.deploy(request)

    survivor = Deployer(store, recorder, DeployerSettings(republish_after_s=5), clock)
    await survivor.tick()
    assert recorder.updates("live") == []  # too fresh: the writer may still announce it
    clock.now += timedelta(seconds=6)
    await survivor.tick()
    assert [u.revision for u in recorder.updates("live")] == [1]


@pytest.fixture
async def api(store: InMemoryObjectStore) -> AsyncIterator[tuple[httpx.AsyncClient, Deployer]]:
    service = create_service(
        settings=CairnSettings(kafka_bootstrap_servers="127.0.0.1:1", otel_exporter="none"),
        store=store,
    )
    deployer: Deployer = service.api.state.deployer
    deployer.publish = Recorder()
    transport = httpx.ASGITransport(app=service.api)
    async with httpx.AsyncClient(transport=transport, base_url="http://deployer") as client:
        yield client, deployer


def variant(version: int, name: str = "main") -> dict[str, Any]:
    return {"variant_name": name, "model_package_group": "credit", "model_version": version}


async def test_http_endpoint_lifecycle_and_errors(
    api: tuple[httpx.AsyncClient, Deployer],
) -> None:
    client, deployer = api
    await known(deployer, 1, 2)
    await known(deployer, 3, status="Rejected")

    created = await client.post(
        "/endpoints",
        json={"endpoint_name": "live", "production_variants": [variant(1, "a"), variant(2, "b")]},
    )
    assert created.status_code == 201, created.text
    duplicate = await client.post(
        "/endpoints", json={"endpoint_name": "live", "production_variants": [variant(2)]}
    )
    assert duplicate.status_code == 409 and duplicate.json()["code"] == "endpoint_already_exists"

    rejected = await client.put("/endpoints/live", json={"production_variants": [variant(3)]})
    assert rejected.status_code == 409 and "Rejected" in rejected.json()["error"]
    unknown = await client.put("/endpoints/live", json={"production_variants": [variant(9)]})
    assert unknown.status_code == 400 and unknown.json()["code"] == "model_version_unknown"
    missing = await client.put("/endpoints/nope", json={"production_variants": [variant(1)]})
    assert missing.status_code == 404

    weights = await client.post(
        "/endpoints/live/weights", json={"variants": [{"variant_name": "b", "weight": 4}]}
    )
    assert weights.status_code == 200
    served = {
        v["variant_name"]: (v["weight"], v["artifact_uri"])
        for v in weights.json()["production_variants"]
    }
    assert served == {"a": (1.0, "models/job-1/"), "b": (4.0, "models/job-2/")}
    bad_weights = await client.post(
        "/endpoints/live/weights", json={"variants": [{"variant_name": "zz", "weight": 1}]}
    )
    assert bad_weights.status_code == 400

    listed = await client.get("/endpoints")
    assert [e["endpoint_name"] for e in listed.json()] == ["live"]
    deleted = await client.delete("/endpoints/live")
    assert deleted.json()["status"] == "Deleted"
    assert (await client.get("/endpoints/live")).status_code == 404
    assert (await client.get("/endpoints")).json() == []

    assert (await client.get("/auto-deploy/credit")).status_code == 404
    put = await client.put("/auto-deploy/credit", json={"endpoint_name": "live"})
    assert put.json()["model_package_group"] == "credit"
    assert (await client.delete("/auto-deploy/credit")).status_code == 204
