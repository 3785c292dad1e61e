"""Registry handlers and HTTP API on an in-memory store, with the published events recorded."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cairn.contracts.envelope import Envelope
from cairn.contracts.events import (
    EndpointUpdated,
    ModelApprovalChanged,
    ModelApprovalRequested,
    ModelPackageRegistered,
    RegistrationSpec,
    TrainingJobCompleted,
    VariantState,
)
from cairn.settings import CairnSettings
from cairn.store.memory import InMemoryObjectStore
from pydantic import BaseModel

from services.registry.app import create_service
from services.registry.handlers import ApprovalDecision, RegisterVersion, Registry


class Recorder:
    """Stands in for the service's publish: keeps what would have gone to Kafka."""

    def __init__(self) -> None:
        self.events: list[BaseModel] = []

    async def __call__(self, data: BaseModel, cause: Envelope[Any] | None = None) -> Any:
        self.events.append(data)
        return None


def write_manifest(store: InMemoryObjectStore, prefix: str, **fields: Any) -> None:
    manifest = {
        "framework": "xgboost",
        "metrics": {"auc": 0.9},
        "lineage": {"training_job": "job-1", "datasets": [{"channel": "train", "uri": "d/1"}]},
        **fields,
    }
    store.put_bytes(f"{prefix}manifest.json", json.dumps(manifest).encode())


def completed(job: str, approval: str = "PendingManualApproval") -> Envelope[TrainingJobCompleted]:
    data = TrainingJobCompleted(
        job_name=job,
        algorithm="xgboost",
        artifact_uri=f"models/{job}/",
        metrics={"validation:auc": 0.93},
        device="cpu",
        training_time_s=1.0,
        total_time_s=2.0,
        registration=RegistrationSpec(model_package_group="credit", approval_status=approval),  # type: ignore[arg-type]
    )
    return Envelope[TrainingJobCompleted](
        type="TrainingJobCompleted", source="t", correlation_id="c", data=data
    )


@pytest.fixture
def store() -> InMemoryObjectStore:
    return InMemoryObjectStore("registry-unit")


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def registry(store: InMemoryObjectStore, recorder: Recorder) -> Registry:
    return Registry(store, recorder)


async def test_completed_job_registers_one_version_with_lineage(
    registry: Registry, store: InMemoryObjectStore, recorder: Recorder
) -> None:
    write_manifest(store, "models/job-1/")
    await registry.on_training_job_completed(completed("job-1"))
    await registry.on_training_job_completed(completed("job-1"))  # redelivered

    versions = registry.list_versions("credit")
    assert [v.version for v in versions] == [1]
    assert versions[0].metrics == {"auc": 0.9, "validation:auc": 0.93}
    assert versions[0].lineage.training_job == "job-1"
    assert versions[0].lineage.datasets[0].uri == "d/1"
    assert json.loads(store.get_bytes("registry/by-job/job-1.json"))["version"] == 1
    registered = [e for e in recorder.events if isinstance(e, ModelPackageRegistered)]
    assert {(e.version, e.training_job) for e in registered} == {(1, "job-1")}
    assert not [e for e in recorder.events if isinstance(e, ModelApprovalChanged)]


async def test_job_without_registration_registers_nothing(
    registry: Registry, recorder: Recorder
) -> None:
    envelope = completed("job-x")
    envelope.data.registration = None
    await registry.on_training_job_completed(envelope)
    assert registry.list_groups() == []
    assert recorder.events == []


async def test_registration_that_starts_approved_announces_the_approval(
    registry: Registry, recorder: Recorder
) -> None:
    await registry.on_training_job_completed(completed("job-2", approval="Approved"))
    changes = [e for e in recorder.events if isinstance(e, ModelApprovalChanged)]
    assert [(c.version, c.approval_status, c.previous_status) for c in changes] == [
        (1, "Approved", None)
    ]


async def test_approve_then_reject_emits_each_change_once(
    registry: Registry, recorder: Recorder
) -> None:
    await registry.on_training_job_completed(completed("job-3"))
    decision = ApprovalDecision(status="Approved", by="alice", reason="good")
    await registry.decide("credit", "1", decision)
    await registry.decide("credit", "1", decision)  # same decision twice: one event
    await registry.decide("credit", "1", ApprovalDecision(status="Rejected", by="bob"))

    changes = [
        (e.approval_status, e.previous_status, e.changed_by)
        for e in recorder.events
        if isinstance(e, ModelApprovalChanged)
    ]
    assert changes == [
        ("Approved", "PendingManualApproval", "alice"),
        ("Rejected", "Approved", "bob"),
    ]
    assert registry.get_version("credit", "1").approval_status == "Rejected"


def test_threads_racing_to_register_get_distinct_numbers_without_gaps(
    registry: Registry, store: InMemoryObjectStore
) -> None:
    for index in range(24):
        write_manifest(store, f"models/m{index}/")
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def register(offset: int) -> None:
        try:
            barrier.wait()
            for index in range(offset, 24, 8):
                registry.register("credit", RegisterVersion(artifact_uri=f"models/m{index}/"))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    versions = registry.list_versions("credit")
    assert [v.version for v in versions] == list(range(1, 25))
    assert len({v.artifact_uri for v in versions}) == 24


def test_endpoint_updates_link_and_unlink_versions(
    registry: Registry, store: InMemoryObjectStore
) -> None:
    for index in (1, 2):
        write_manifest(store, f"models/m{index}/")
        registry.register("credit", RegisterVersion(artifact_uri=f"models/m{index}/"))

    def state(version: int) -> VariantState:
        return VariantState(
            variant_name=f"v{version}",
            model_package_group="credit",
            model_version=version,
            artifact_uri=f"models/m{version}/",
            weight=1,
            instance_count=1,
        )

    registry.apply_endpoint_update(
        EndpointUpdated(
            endpoint_name="live", revision=1, status="InService", production_variants=[state(1)]
        )
    )
    registry.apply_endpoint_update(
        EndpointUpdated(
            endpoint_name="live", revision=2, status="InService", production_variants=[state(2)]
        )
    )
    # A late, older revision must not bring version 1 back.
    registry.apply_endpoint_update(
        EndpointUpdated(
            endpoint_name="live", revision=1, status="InService", production_variants=[state(1)]
        )
    )
    assert registry.lineage("credit", "1")["endpoints"] == []
    endpoints = registry.lineage("credit", "2")["endpoints"]
    assert [(e["endpoint_name"], e["variant_names"], e["revision"]) for e in endpoints] == [
        ("live", ["v2"], 2)
    ]
    registry.apply_endpoint_update(
        EndpointUpdated(endpoint_name="live", revision=3, status="Deleted")
    )
    assert registry.get_version("credit", "2").endpoints == {}


@pytest.fixture
async def api(store: InMemoryObjectStore, recorder: Recorder) -> AsyncIterator[httpx.AsyncClient]:
    service = create_service(
        settings=CairnSettings(kafka_bootstrap_servers="127.0.0.1:1", otel_exporter="none"),
        store=store,
    )
    service.api.state.registry.publish = recorder
    transport = httpx.ASGITransport(app=service.api)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
        yield client


async def test_http_register_approve_alias_and_lineage(
    api: httpx.AsyncClient, store: InMemoryObjectStore, recorder: Recorder
) -> None:
    write_manifest(store, "models/hand/")
    created = await api.post(
        "/model-package-groups/credit/versions",
        json={"artifact_uri": "models/hand/", "tags": {"team": "risk"}, "training_job": "job-9"},
    )
    assert created.status_code == 201, created.text
    assert created.json()["version"] == 1 and created.json()["tags"] == {"team": "risk"}

    again = await api.post(
        "/model-package-groups/credit/versions",
        json={"artifact_uri": "models/hand/", "training_job": "job-9"},
    )
    assert again.status_code == 409
    assert again.json()["code"] == "training_job_already_registered"

    approved = await api.post(
        "/model-package-groups/credit/versions/1/approval",
        json={"status": "Approved", "by": "alice", "reason": "passes review"},
    )
    assert approved.status_code == 200
    assert approved.json()["approval_status"] == "Approved"
    assert isinstance(recorder.events[-1], ModelApprovalChanged)

    alias = await api.put("/model-package-groups/credit/aliases/champion", json={"version": 1})
    assert alias.json()["aliases"] == {"champion": 1}
    champion = await api.get("/model-package-groups/credit/versions/champion")
    assert champion.json()["version"] == 1
    lineage = await api.get("/model-package-groups/credit/versions/champion/lineage")
    assert lineage.json()["model_version"]["artifact_uri"] == "models/hand/"
    listed = await api.get("/model-package-groups/credit/versions", params={"status": "Approved"})
    assert [v["version"] for v in listed.json()] == [1]


async def test_http_errors_are_json_with_reasons(api: httpx.AsyncClient) -> None:
    missing_group = await api.get("/model-package-groups/nope")
    assert missing_group.status_code == 404
    assert missing_group.json()["code"] == "model_package_group_not_found"

    no_package = await api.post(
        "/model-package-groups/credit/versions", json={"artifact_uri": "models/absent/"}
    )
    assert no_package.status_code == 400
    assert "manifest.json" in no_package.json()["error"]

    bad_status = await api.post(
        "/model-package-groups/credit/versions/1/approval", json={"status": "Maybe", "by": "x"}
    )
    assert bad_status.status_code == 422

    bad_group = await api.post(
        "/model-package-groups/bad_name!/versions", json={"artifact_uri": "models/x/"}
    )
    assert bad_group.status_code == 400


def approval_request(version: int, by: str = "cairn-monitor") -> Envelope[Any]:
    data = ModelApprovalRequested(
        model_package_group="credit",
        version=version,
        approval_status="Approved",
        requested_by=by,
        reason="challenger auc=0.81 vs champion 0.74",
    )
    return Envelope[Any](
        type="ModelApprovalRequested", source="monitor", correlation_id="drift-1", data=data
    )


async def test_approval_request_event_approves_like_the_api_chained_to_its_request(
    store: InMemoryObjectStore,
) -> None:
    sent: list[tuple[BaseModel, Envelope[Any] | None]] = []

    async def publish(data: BaseModel, cause: Envelope[Any] | None = None) -> Any:
        sent.append((data, cause))

    registry = Registry(store, publish)
    await registry.on_training_job_completed(completed("job-4"))
    request = approval_request(1)
    await registry.on_approval_requested(request)
    await registry.on_approval_requested(request)  # redelivered: announced again, not re-applied
    await registry.on_approval_requested(approval_request(7))  # no such version: dropped

    version = registry.get_version("credit", "1")
    assert version.approval_status == "Approved"
    assert [(r.status, r.changed_by) for r in version.approval_history] == [
        ("PendingManualApproval", "training-job:job-4"),
        ("Approved", "cairn-monitor"),
    ]
    changes = [(d, c) for d, c in sent if isinstance(d, ModelApprovalChanged)]
    assert len(changes) == 2
    for change, cause in changes:
        assert (change.approval_status, change.previous_status) == (
            "Approved",
            "PendingManualApproval",
        )
        assert cause is not None and cause.correlation_id == "drift-1"
