"""Deployer handlers and HTTP API on an in-memory store with a fake clock and recorded events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cairn.audit import AuditRecord, Outcome, list_audit_records
from cairn.auth import Principal
from cairn.contracts.envelope import Envelope
from cairn.contracts.events import (
    DeploymentFailed,
    DeploymentRequested,
    DeploymentRolledBack,
    EndpointUpdated,
    ModelApprovalChanged,
    ModelPackageRegistered,
    RolloutPolicy,
    VariantSpec,
)
from cairn.contracts.state import (
    EndpointStateView,
    ModelVersionView,
    list_states,
    read_state,
    state_spec,
)
from cairn.settings import CairnSettings
from cairn.store.memory import InMemoryObjectStore
from pydantic import BaseModel

from services.deployer.app import create_service
from services.deployer.config import DeployerSettings
from services.deployer.documents import AutoDeployPolicy
from services.deployer.domain import ModelVersionNotApproved, ModelVersionRejected
from services.deployer.handlers import Deployer
from tests.support.auth import admin_headers, auth_settings, scoped_headers


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
    deployer.policies.put(
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


async def test_a_restarted_deployer_announces_a_lost_revision_at_once(
    store: InMemoryObjectStore,
) -> None:
    """The final revision stored, the deployer killed before EndpointUpdated: the restart's
    first pass announces it without waiting for `republish_after_s` (the clock stands still)."""

    async def killed(data: BaseModel, cause: Envelope[Any] | None = None) -> Any:
        raise ConnectionError("killed before the publish")

    clock = Clock()
    crashing = Deployer(store, killed, DeployerSettings(republish_after_s=3600), clock)
    await known(crashing, 1)
    request = DeploymentRequested(
        endpoint_name="live",
        production_variants=[
            VariantSpec(variant_name="a", model_package_group="credit", model_version=1)
        ],
    )
    with pytest.raises(ConnectionError):
        await crashing.deploy(request)

    recorder, announced = Recorder(), asyncio.Event()

    async def publish(data: BaseModel, cause: Envelope[Any] | None = None) -> Any:
        await recorder(data, cause)
        announced.set()

    restarted = Deployer(store, publish, DeployerSettings(republish_after_s=3600), clock)
    driver = asyncio.create_task(restarted.run_rollouts())

    async def marked() -> int:  # the announcement is recorded right after the publish returns
        await announced.wait()
        for _ in range(3000):  # a hang guard, not a timing assertion
            if (published := restarted.get_endpoint("live").published_revision) == 1:
                return published
            await asyncio.sleep(0.01)
        return restarted.get_endpoint("live").published_revision

    try:
        published = await asyncio.wait_for(marked(), 60)
    finally:
        driver.cancel()
        await asyncio.gather(driver, return_exceptions=True)
    assert [u.revision for u in recorder.updates("live")] == [1]
    assert published == 1


class RecordingAuthority:
    """The kernel's `principal_of` / `audit` for request events: the signer is the test's."""

    def __init__(self, signer: str) -> None:
        self.signer = signer
        self.records: list[AuditRecord] = []

    async def principal_of(self, envelope: Envelope[Any]) -> Principal:
        return Principal(name=self.signer, key_id="k1", scopes=frozenset({"deploy"}))

    async def audit(
        self,
        *,
        action: str,
        resource: str,
        principal: Principal,
        outcome: Outcome = "success",
        correlation_id: str | None = None,
    ) -> AuditRecord:
        record = AuditRecord(
            principal=principal.name,
            action=action,
            resource=resource,
            outcome=outcome,
            correlation_id=correlation_id,
        )
        self.records.append(record)
        return record


@pytest.fixture
def settings(tmp_path: Path) -> CairnSettings:
    return auth_settings(home=tmp_path)


@pytest.fixture
async def api(
    store: InMemoryObjectStore, settings: CairnSettings
) -> AsyncIterator[tuple[httpx.AsyncClient, Deployer]]:
    """The deployer's HTTP API, called with an admin key unless a test passes other headers."""
    service = create_service(settings=settings, store=store)
    deployer: Deployer = service.api.state.deployer
    deployer.publish = Recorder()
    transport = httpx.ASGITransport(app=service.api)
    headers = admin_headers(store, settings, name="root")
    async with httpx.AsyncClient(
        transport=transport, base_url="http://deployer", headers=headers
    ) as client:
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


async def test_unapproved_versions_are_refused_unless_the_endpoint_allows_them(
    api: tuple[httpx.AsyncClient, Deployer],
) -> None:
    client, deployer = api
    await known(deployer, 1)
    await known(deployer, 2, status="PendingManualApproval")

    refused = await client.post(
        "/endpoints", json={"endpoint_name": "live", "production_variants": [variant(2)]}
    )
    assert refused.status_code == 409
    assert refused.json()["code"] == "model_version_not_approved"
    assert "PendingManualApproval, not Approved" in refused.json()["error"]
    assert (await client.get("/endpoints/live")).status_code == 404

    created = await client.post(
        "/endpoints", json={"endpoint_name": "live", "production_variants": [variant(1)]}
    )
    assert created.status_code == 201, created.text
    update = await client.put("/endpoints/live", json={"production_variants": [variant(2)]})
    assert update.status_code == 409 and update.json()["code"] == "model_version_not_approved"

    allowed = await client.put(
        "/endpoints/live", json={"production_variants": [variant(2)], "allow_unapproved": True}
    )
    assert allowed.status_code == 200, allowed.text
    assert [v["model_version"] for v in allowed.json()["production_variants"]] == [2]
    assert allowed.json()["config"]["allow_unapproved"] is True


async def test_changes_need_the_deploy_scope_and_leave_an_audit_record(
    api: tuple[httpx.AsyncClient, Deployer],
    store: InMemoryObjectStore,
    settings: CairnSettings,
) -> None:
    client, deployer = api
    await known(deployer, 1)
    viewer = scoped_headers(store, settings, ["read"], name="viewer")
    operator = scoped_headers(store, settings, ["deploy"], name="operator")
    body = {"endpoint_name": "live", "production_variants": [variant(1)]}

    assert (await client.get("/endpoints", headers={"Authorization": ""})).status_code == 401
    assert (await client.post("/endpoints", json=body, headers=viewer)).status_code == 403
    created = await client.post("/endpoints", json=body, headers=operator)
    assert created.status_code == 201, created.text
    assert (await client.get("/endpoints/live", headers=viewer)).status_code == 200
    deleted = await client.delete("/endpoints/live", headers=operator)
    assert deleted.status_code == 200

    trail = {(r.principal, r.action, r.resource, r.outcome) for r in list_audit_records(store)}
    assert trail == {
        ("viewer", "endpoint.create", "/endpoints", "denied"),
        ("operator", "endpoint.create", "/endpoints", "success"),
        ("operator", "endpoint.delete", "/endpoints/live", "success"),
    }


async def test_a_rollout_is_rolled_back_by_hand_and_audited(
    api: tuple[httpx.AsyncClient, Deployer],
    store: InMemoryObjectStore,
    settings: CairnSettings,
) -> None:
    client, deployer = api
    deployer.publish = recorder = Recorder()
    await known(deployer, 1, 2)
    operator = scoped_headers(store, settings, ["deploy"], name="operator")
    await client.post(
        "/endpoints", json={"endpoint_name": "live", "production_variants": [variant(1)]}
    )
    no_rollout = await client.post("/endpoints/live/rollback", json={}, headers=operator)
    assert no_rollout.status_code == 409 and no_rollout.json()["code"] == "no_rollout_in_progress"
    canary = {"mode": "canary", "canary_percent": 10, "bake_time_s": 600}
    started = await client.put(
        "/endpoints/live", json={"production_variants": [variant(2)], "rollout": canary}
    )
    assert started.json()["rollout"] is not None

    undone = await client.post(
        "/endpoints/live/rollback", json={"reason": "p99 looks wrong"}, headers=operator
    )
    assert undone.status_code == 200, undone.text
    doc = undone.json()
    assert doc["rollout"] is None and doc["last_rollback"]["reason"] == "p99 looks wrong"
    assert [(v["model_version"], v["weight"]) for v in doc["production_variants"]] == [(1, 1.0)]
    rolled_back = [e for e in recorder.events if isinstance(e, DeploymentRolledBack)]
    assert [e.reason for e in rolled_back] == ["p99 looks wrong"]
    assert recorder.updates("live")[-1].revision == doc["revision"]
    rollbacks = list_audit_records(store, action="endpoint.rollback")
    assert [(r.principal, r.outcome) for r in rollbacks] == [
        ("operator", "success"),
        ("operator", "failed"),
    ]
    assert (await client.post("/endpoints/nope/rollback", json={})).status_code == 404


async def test_deployment_request_event_deploys_and_is_audited_in_the_signers_name(
    store: InMemoryObjectStore,
) -> None:
    recorder, authority = Recorder(), RecordingAuthority("service:monitor")
    dead: list[tuple[str, str]] = []

    async def dead_letter(envelope: Envelope[Any], reason: str, *, error: str = "") -> None:
        dead.append((reason, error))

    deployer = Deployer(
        store, recorder, DeployerSettings(), Clock(), authority=authority, dead_letter=dead_letter
    )
    await known(deployer, 1)
    await known(deployer, 2, status="PendingManualApproval")

    def request(version: int, action: str = "create") -> Envelope[Any]:
        data = DeploymentRequested(
            endpoint_name="live",
            action=action,  # type: ignore[arg-type]
            production_variants=[VariantSpec(**variant(version))],
        )
        return Envelope[Any](
            type="DeploymentRequested", source="monitor", correlation_id="drift-2", data=data
        )

    await deployer.on_deployment_requested(request(1))
    assert [u.revision for u in recorder.updates("live")] == [1]
    # Bad input on the bus: refused at once (no retry can approve it), with a failure event.
    await deployer.on_deployment_requested(request(2, "update"))
    assert deployer.get_endpoint("live").production_variants[0].model_version == 1
    [failed] = [e for e in recorder.events if isinstance(e, DeploymentFailed)]
    assert (failed.endpoint_name, failed.action) == ("live", "update")
    assert failed.failure_code == ModelVersionNotApproved.code and "2" in failed.reason
    assert dead == [("request-refused", failed.reason)]
    await known(deployer, 3)
    await deployer.on_deployment_requested(request(3, "update"))  # the endpoint moves on
    assert [u.revision for u in recorder.updates("live")] == [1, 2]
    assert [
        (r.principal, r.action, r.resource, r.outcome, r.correlation_id) for r in authority.records
    ] == [
        ("service:monitor", "endpoint.create", "endpoints/live", "success", "drift-2"),
        ("service:monitor", "endpoint.update", "endpoints/live", "failed", "drift-2"),
        ("service:monitor", "endpoint.update", "endpoints/live", "success", "drift-2"),
    ]


async def test_a_deployment_request_for_an_unknown_endpoint_fails_it_instead_of_retrying(
    store: InMemoryObjectStore,
) -> None:
    recorder, authority = Recorder(), RecordingAuthority("alice")
    dead: list[str] = []

    async def dead_letter(envelope: Envelope[Any], reason: str, *, error: str = "") -> None:
        dead.append(error)

    deployer = Deployer(
        store, recorder, DeployerSettings(), Clock(), authority=authority, dead_letter=dead_letter
    )
    await known(deployer, 1)
    data = DeploymentRequested(
        endpoint_name="nowhere", action="update", production_variants=[VariantSpec(**variant(1))]
    )
    await deployer.on_deployment_requested(
        Envelope[Any](type="DeploymentRequested", source="cli", correlation_id="c-1", data=data)
    )
    [failed] = [e for e in recorder.events if isinstance(e, DeploymentFailed)]
    assert failed.failure_code == "endpoint_not_found" and "nowhere" in failed.reason
    assert dead == [failed.reason]
    assert not recorder.updates("nowhere")


async def test_stored_endpoint_is_what_the_endpoint_state_contract_promises_readers(
    store: InMemoryObjectStore,
) -> None:
    """Writer side of `EndpointStateView`: the gateway and the monitor read it through it."""
    recorder, clock = Recorder(), Clock()
    deployer = Deployer(store, recorder, DeployerSettings(), clock)
    await known(deployer, 1, 2)
    await deployer.deploy(
        DeploymentRequested(
            endpoint_name="live",
            production_variants=[VariantSpec(**variant(1))],
            shadow_variant=VariantSpec(**variant(2, "shadow")),
        )
    )
    canary = RolloutPolicy(mode="canary", canary_percent=10, bake_time_s=60)
    await deployer.deploy(
        DeploymentRequested(
            endpoint_name="live",
            action="update",
            production_variants=[VariantSpec(**variant(2))],
            rollout=canary,
        )
    )

    view = read_state(store, EndpointStateView, "live")
    assert view is not None
    assert (view.endpoint_name, view.revision, view.status) == ("live", 2, "Updating")
    served = {(v.variant_name, v.model_version, v.weight) for v in view.production_variants}
    assert served == {("main", 2, 0.1), ("main-previous", 1, 0.9)}
    assert view.updated_at == clock.now
    assert [v.endpoint_name for v in list_states(store, EndpointStateView)] == ["live"]


async def test_an_unreadable_endpoint_document_is_skipped_not_fatal(
    store: InMemoryObjectStore,
) -> None:
    recorder, clock = Recorder(), Clock()
    deployer = Deployer(store, recorder, DeployerSettings(republish_after_s=5), clock)
    await known(deployer, 1)
    store.put_bytes("deployer/endpoints/broken.json", b'{"endpoint_name": "broken"')
    await deployer.deploy(
        DeploymentRequested(endpoint_name="live", production_variants=[VariantSpec(**variant(1))])
    )

    assert [e.endpoint_name for e in deployer.list_endpoints()] == ["live"]
    clock.now += timedelta(seconds=6)
    await deployer.tick()  # the rollout driver passes over it too
    assert [u.revision for u in recorder.updates("live")] == [1]


async def test_a_deploy_right_after_an_approval_reads_the_registrys_stored_version(
    store: InMemoryObjectStore,
) -> None:
    """The registry writes the version before it announces the approval: a deploy that comes
    before the deployer saw ModelApprovalChanged still finds the version approved (and a
    version rejected since its approval event is refused)."""
    deployer = Deployer(store, Recorder(), DeployerSettings(), Clock())
    await known(deployer, 1, 2, status="PendingManualApproval")

    def stored(version: int, status: str) -> None:
        view = ModelVersionView(
            model_package_group="credit",
            version=version,
            artifact_uri=f"models/registered-{version}/",
            approval_status=status,
        )
        key = state_spec(ModelVersionView).key("credit", str(version))
        store.put_bytes(key, view.model_dump_json().encode())

    stored(1, "Approved")
    stored(2, "Rejected")
    doc = await deployer.deploy(
        DeploymentRequested(endpoint_name="live", production_variants=[VariantSpec(**variant(1))])
    )
    assert doc.production_variants[0].artifact_uri == "models/registered-1/"
    with pytest.raises(ModelVersionRejected):
        await deployer.deploy(
            DeploymentRequested(
                endpoint_name="live",
                action="update",
                production_variants=[VariantSpec(**variant(2))],
            )
        )
