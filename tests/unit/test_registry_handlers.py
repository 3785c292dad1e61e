"""Registry handlers and HTTP API on an in-memory store, with the published events recorded."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cairn.artifacts import DatasetLineage, Lineage, ModelManifest, Signature
from cairn.audit import AuditRecord, Outcome, list_audit_records
from cairn.auth import Principal
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
from cairn.contracts.state import ModelVersionView, read_state
from cairn.settings import CairnSettings
from cairn.store.base import ObjectStore
from cairn.store.memory import InMemoryObjectStore
from pydantic import BaseModel

from services.registry.app import create_service
from services.registry.domain import ApprovalDecision, RegisterVersion
from services.registry.handlers import Registry
from services.registry.lineage import EndpointLinker
from tests.support.auth import admin_headers, auth_settings, scoped_headers


class Recorder:
    """Stands in for the service's publish: keeps what would have gone to Kafka."""

    def __init__(self) -> None:
        self.events: list[BaseModel] = []

    async def __call__(self, data: BaseModel, cause: Envelope[Any] | None = None) -> Any:
        self.events.append(data)
        return None


def write_manifest(
    store: ObjectStore, prefix: str, *, training_job: str | None = "job-1", **fields: Any
) -> None:
    """A model package's manifest (the trainer's `cairn.artifacts` contract) under `prefix`."""
    manifest = ModelManifest(
        framework="xgboost",
        framework_version="2.1.0",
        algorithm="xgboost",
        task="binary_classification",
        signature=Signature(),
        metrics={"auc": 0.9},
        lineage=Lineage(
            training_job=training_job,
            algorithm="xgboost",
            datasets=[DatasetLineage(channel="train", uri="data/d/1", sha256="ab")],
        ),
        **fields,
    )
    store.put_bytes(f"{prefix}manifest.json", manifest.model_dump_json().encode())


class RecordingAuthority:
    """The kernel's `principal_of` / `audit` for request events: the signer is the test's."""

    def __init__(self, signer: str) -> None:
        self.signer = signer
        self.records: list[AuditRecord] = []

    async def principal_of(self, envelope: Envelope[Any]) -> Principal:
        return Principal(name=self.signer, key_id="k1", scopes=frozenset({"approve"}))

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
    assert versions[0].lineage.datasets[0].uri == "data/d/1"
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
    linker = EndpointLinker(store)

    def state(version: int) -> VariantState:
        return VariantState(
            variant_name=f"v{version}",
            model_package_group="credit",
            model_version=version,
            artifact_uri=f"models/m{version}/",
            weight=1,
            instance_count=1,
        )

    def update(revision: int, version: int) -> EndpointUpdated:
        return EndpointUpdated(
            endpoint_name="live",
            revision=revision,
            status="InService",
            production_variants=[state(version)],
        )

    linker.apply(update(1, 1))
    linker.apply(update(2, 2))
    linker.apply(update(1, 1))  # a late, older revision must not bring version 1 back
    assert registry.lineage("credit", "1")["endpoints"] == []
    endpoints = registry.lineage("credit", "2")["endpoints"]
    assert [(e["endpoint_name"], e["variant_names"], e["revision"]) for e in endpoints] == [
        ("live", ["v2"], 2)
    ]
    linker.apply(EndpointUpdated(endpoint_name="live", revision=3, status="Deleted"))
    assert registry.get_version("credit", "2").endpoints == {}


async def test_stored_version_is_what_the_model_version_contract_promises_readers(
    registry: Registry, store: InMemoryObjectStore
) -> None:
    """Writer side of `ModelVersionView`: the monitor reads this document through it."""
    write_manifest(store, "models/job-5/", training_job="job-5")
    await registry.on_training_job_completed(completed("job-5"))
    await registry.decide("credit", "1", ApprovalDecision(status="Approved", by="alice"))

    view = read_state(store, ModelVersionView, "credit", "1")
    assert view is not None
    assert (view.artifact_uri, view.approval_status) == ("models/job-5/", "Approved")
    assert view.metrics == {"auc": 0.9, "validation:auc": 0.93}
    assert view.lineage.training_job == "job-5"
    assert view.lineage.datasets[0]["uri"] == "data/d/1"


def test_an_unreadable_document_is_skipped_when_listing(
    registry: Registry, store: InMemoryObjectStore
) -> None:
    write_manifest(store, "models/ok/")
    registry.register("credit", RegisterVersion(artifact_uri="models/ok/"))
    store.put_bytes("registry/groups/credit/versions/7.json", b"{not json")
    store.put_bytes("registry/groups/broken.json", b'{"name": 3}')

    assert [v.version for v in registry.list_versions("credit")] == [1]
    assert [g.name for g in registry.list_groups()] == ["credit"]


@pytest.fixture
def settings(tmp_path: Path) -> CairnSettings:
    return auth_settings(home=tmp_path)


@pytest.fixture
async def api(
    store: InMemoryObjectStore, recorder: Recorder, settings: CairnSettings
) -> AsyncIterator[httpx.AsyncClient]:
    """The registry's HTTP API, called with an admin key unless a test passes other headers."""
    service = create_service(settings=settings, store=store)
    service.api.state.registry.publish = recorder
    transport = httpx.ASGITransport(app=service.api)
    headers = admin_headers(store, settings, name="root")
    async with httpx.AsyncClient(
        transport=transport, base_url="http://registry", headers=headers
    ) as client:
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
    assert created.json()["approval_history"][0]["changed_by"] == "root"

    again = await api.post(
        "/model-package-groups/credit/versions",
        json={"artifact_uri": "models/hand/", "training_job": "job-9"},
    )
    assert again.status_code == 409
    assert again.json()["code"] == "training_job_already_registered"

    approved = await api.post(
        "/model-package-groups/credit/versions/1/approval",
        json={"status": "Approved", "reason": "passes review"},
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


async def test_http_errors_are_json_with_reasons(
    api: httpx.AsyncClient, store: InMemoryObjectStore
) -> None:
    missing_group = await api.get("/model-package-groups/nope")
    assert missing_group.status_code == 404
    assert missing_group.json()["code"] == "model_package_group_not_found"

    no_package = await api.post(
        "/model-package-groups/credit/versions", json={"artifact_uri": "models/absent/"}
    )
    assert no_package.status_code == 400
    assert "manifest.json" in no_package.json()["error"]

    store.put_bytes("models/odd/manifest.json", b'{"framework": "xgboost"}')
    not_a_manifest = await api.post(
        "/model-package-groups/credit/versions", json={"artifact_uri": "models/odd/"}
    )
    assert not_a_manifest.status_code == 400
    assert "not a valid model manifest" in not_a_manifest.json()["error"]

    bad_status = await api.post(
        "/model-package-groups/credit/versions/1/approval", json={"status": "Maybe"}
    )
    assert bad_status.status_code == 422

    bad_group = await api.post(
        "/model-package-groups/bad_name!/versions", json={"artifact_uri": "models/x/"}
    )
    assert bad_group.status_code == 400


async def test_approval_needs_the_approve_scope_and_names_the_key_not_the_body(
    api: httpx.AsyncClient, store: InMemoryObjectStore, settings: CairnSettings
) -> None:
    write_manifest(store, "models/hand/")
    assert (
        await api.post(
            "/model-package-groups/credit/versions", json={"artifact_uri": "models/hand/"}
        )
    ).status_code == 201
    path = "/model-package-groups/credit/versions/1/approval"
    body = {"status": "Approved", "by": "somebody-else", "reason": "fine"}
    reader = scoped_headers(store, settings, ["read"], name="viewer")
    approver = scoped_headers(store, settings, ["approve"], name="carol")

    anonymous = await api.post(path, json=body, headers={"Authorization": ""})
    assert anonymous.status_code == 401
    forbidden = await api.post(path, json=body, headers=reader)
    assert forbidden.status_code == 403
    assert (await api.get("/model-package-groups/credit/versions/1", headers=reader)).json()[
        "approval_status"
    ] == "PendingManualApproval"

    approved = await api.post(path, json=body, headers=approver)
    assert approved.status_code == 200, approved.text
    version = approved.json()
    assert version["approved_by"] == "carol"
    assert version["approval_history"][-1]["changed_by"] == "carol"

    trail = list_audit_records(store, action="model.approve")
    assert [(r.principal, r.outcome, r.resource) for r in trail] == [
        ("carol", "success", path),
        ("viewer", "denied", path),
    ]


async def test_registering_an_approved_version_needs_the_approve_scope(
    api: httpx.AsyncClient, store: InMemoryObjectStore, settings: CairnSettings
) -> None:
    write_manifest(store, "models/hand/")
    trainer = scoped_headers(store, settings, ["train"], name="ci-bot")
    body = {"artifact_uri": "models/hand/", "approval_status": "Approved"}

    refused = await api.post("/model-package-groups/credit/versions", json=body, headers=trainer)
    assert refused.status_code == 403
    assert "approve" in refused.json()["error"]
    pending = await api.post(
        "/model-package-groups/credit/versions",
        json={"artifact_uri": "models/hand/", "registered_by": "mallory"},
        headers=trainer,
    )
    assert pending.status_code == 201, pending.text
    assert pending.json()["approval_history"][0]["changed_by"] == "ci-bot"
    trail = list_audit_records(store, action="model.register")
    assert [(r.principal, r.outcome) for r in trail] == [
        ("ci-bot", "success"),
        ("ci-bot", "denied"),
    ]


def approval_request(version: int, by: str = "whoever-the-body-says") -> Envelope[Any]:
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


async def test_approval_request_event_approves_in_the_signers_name_chained_to_its_request(
    store: InMemoryObjectStore,
) -> None:
    sent: list[tuple[BaseModel, Envelope[Any] | None]] = []

    async def publish(data: BaseModel, cause: Envelope[Any] | None = None) -> Any:
        sent.append((data, cause))

    authority = RecordingAuthority("service:monitor")
    registry = Registry(store, publish, authority=authority)
    await registry.on_training_job_completed(completed("job-4"))
    request = approval_request(1)
    await registry.on_approval_requested(request)
    await registry.on_approval_requested(request)  # redelivered: announced again, not re-applied
    await registry.on_approval_requested(approval_request(7))  # no such version: dropped

    version = registry.get_version("credit", "1")
    assert (version.approval_status, version.approved_by) == ("Approved", "service:monitor")
    assert [(r.status, r.changed_by) for r in version.approval_history] == [
        ("PendingManualApproval", "training-job:job-4"),
        ("Approved", "service:monitor"),
    ]
    changes = [(d, c) for d, c in sent if isinstance(d, ModelApprovalChanged)]
    assert len(changes) == 2
    for change, cause in changes:
        assert (change.approval_status, change.previous_status, change.changed_by) == (
            "Approved",
            "PendingManualApproval",
            "service:monitor",
        )
        assert cause is not None and cause.correlation_id == "drift-1"
    assert [(r.principal, r.action, r.resource, r.outcome) for r in authority.records] == [
        ("service:monitor", "model.approve", "model-package-groups/credit/versions/1", "success"),
        ("service:monitor", "model.approve", "model-package-groups/credit/versions/1", "success"),
        ("service:monitor", "model.approve", "model-package-groups/credit/versions/7", "failed"),
    ]
    assert {r.correlation_id for r in authority.records} == {"drift-1"}


async def test_a_tuning_jobs_best_model_is_registered_once(
    registry: Registry, store: InMemoryObjectStore, recorder: Recorder
) -> None:
    from cairn.contracts.events import RegistrationSpec
    from cairn.contracts.tuner_events import BestTrainingJob, HyperParameterTuningJobCompleted

    write_manifest(store, "models/tune-3/")
    best = BestTrainingJob(
        training_job_name="tune-3",
        tuning_job_name="tune",
        objective_value=0.12,
        parameters={"eta": 0.1},
        artifact_uri="models/tune-3/",
    )
    done = HyperParameterTuningJobCompleted(
        tuning_job_name="tune",
        best_training_job=best,
        algorithm="xgboost",
        registration=RegistrationSpec(model_package_group="credit"),
    )
    envelope = Envelope[HyperParameterTuningJobCompleted](
        type="HyperParameterTuningJobCompleted", source="tuner", correlation_id="c", data=done
    )
    await registry.on_tuning_job_completed(envelope)
    await registry.on_tuning_job_completed(envelope)  # redelivered
    [version] = registry.list_versions("credit")
    assert version.lineage.training_job == "tune-3" and version.metrics["objective"] == 0.12
    without = done.model_copy(update={"registration": None, "tuning_job_name": "other"})
    await registry.on_tuning_job_completed(envelope.model_copy(update={"data": without}))
    assert len(registry.list_versions("credit")) == 1
